// Raw memory for the core: zeroed anonymous allocations, memory-mapped files and the names of the mapped files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include "fastreplay/common.h"

#if defined(__linux__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#endif

namespace fastreplay {

// Zeroed memory, freed when the last owner goes. Blocks of 4 MiB and more come straight from mmap and ask for
// transparent huge pages, which removes most TLB misses from random gathers over large columns (measured: -14%
// gather time at 1e6 rows); they are zeroed lazily by the kernel, so a big buffer costs nothing until written.
// Smaller blocks are calloc'ed. `sparse` blocks (written at scattered rows only, like the episode index's finals)
// ask for small pages instead, even where THP is "always": one write must not commit 2 MiB. Throws std::bad_alloc.
inline std::shared_ptr<std::uint8_t> allocate_zeroed(std::size_t bytes, bool sparse = false) {
#if defined(__linux__)
  constexpr std::size_t kHuge = std::size_t(2) << 20;
  if (bytes >= (std::size_t(4) << 20)) {
    const std::size_t len = (bytes + kHuge - 1) / kHuge * kHuge;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    madvise(p, len, sparse ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);  // advisory: ignored where THP is off
    return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [len](std::uint8_t* q) { munmap(q, len); });
  }
#endif
  void* p = std::calloc(bytes ? bytes : 1, 1);
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [](std::uint8_t* q) { std::free(q); });
}

// Where a core's memory comes from. Without one (null), every block is allocate_zeroed process memory. A
// SharedRegion (shared.h) hands out consecutive blocks of one shared-memory object instead: fresh (zeroed) in the
// process that creates it, or holding the state another process built when it attaches, in which case
// constructors must leave the blocks' contents alone (fresh() is false). Blocks are taken in construction order,
// which is what makes the attaching process find each block where the creator put it.
class Blocks {
 public:
  virtual ~Blocks() = default;
  virtual std::shared_ptr<std::uint8_t> take(std::size_t bytes, bool sparse) = 0;
  virtual bool fresh() const = 0;
  // The blocks are shared with other processes: locks in them must be process-shared.
  virtual bool shared() const = 0;
};

// A zeroed block of `bytes` from `blocks`, or from allocate_zeroed without one.
inline std::shared_ptr<std::uint8_t> take_zeroed(Blocks* blocks, std::size_t bytes, bool sparse = false) {
  return blocks ? blocks->take(bytes, sparse) : allocate_zeroed(bytes, sparse);
}
// Whether blocks taken from `blocks` are new (to be initialised) rather than another process's state.
inline bool fresh_blocks(const Blocks* blocks) { return !blocks || blocks->fresh(); }

// Memory-mapped storage lives in one directory: field-<i>.bin holds column i (capacity rows), seq.bin the ring's
// capacity sequence numbers (8 bytes each).
inline std::string field_file(const std::string& dir, std::size_t i) {
  return dir + "/field-" + std::to_string(i) + ".bin";
}
inline std::string seq_file(const std::string& dir) { return dir + "/seq.bin"; }

#if defined(__linux__) || defined(__APPLE__)
// Map `bytes` of the file at `path` read-write and shared, so that writes go to the file (they survive the
// process; sync_mapping makes them durable). The file is created, or grown, to exactly `bytes` (sparse: untouched
// pages take no disk); an existing file of another size is an error. Throws std::runtime_error.
inline std::shared_ptr<std::uint8_t> map_file(const std::string& path, std::size_t bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || (st.st_size != 0 && static_cast<std::size_t>(st.st_size) != bytes)) {
    ::close(fd);
    throw std::runtime_error(path + " has " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(bytes));
  }
  if (st.st_size == 0 && bytes && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot size " + path + ": " + std::strerror(e));
  }
  const std::size_t len = bytes ? bytes : 1;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file open
  if (p == MAP_FAILED) throw std::runtime_error("cannot map " + path + ": " + std::strerror(errno));
  return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [len](std::uint8_t* q) { ::munmap(q, len); });
}

// Write a mapped range back to its file and wait for the disk. Throws std::runtime_error.
inline void sync_mapping(void* p, std::size_t bytes) {
  if (bytes && ::msync(p, bytes, MS_SYNC) != 0) throw std::runtime_error(std::string("msync: ") + std::strerror(errno));
}
#endif

}  // namespace fastreplay
