// Buffers shared by several processes: every block of a core (columns, ring counters and sequence numbers, trees,
// priorities, the tree lock) in one POSIX shared-memory object, /dev/shm/<name>.
//
// Contract:
// - The creating process makes the object (it must not exist yet), builds the core in it and marks it ready; any
//   process that knows the name (and the constructor arguments, whose fingerprint the header holds) attaches to it
//   and builds the same core over the same memory without touching its contents. The ring's protocol is
//   lock-free across processes exactly as across threads (64-bit atomics are address-free on every platform we
//   build for); the tree lock is a robust, process-shared pthread mutex.
// - Every block is committed when it is taken (posix_fallocate): a /dev/shm too small for the buffer is an error at
//   construction, never a SIGBUS at the first write of a page.
// - The name is removed (shm_unlink) when the creating process's SharedName goes; the memory stays until the last
//   process unmaps it. A process killed while it holds the tree lock lets the next one in (the trees are rebuilt
//   from their leaves); one killed in the middle of an add leaves that slot half-written and its writer's claim
//   on it, which a later writer of the same slot waits for forever. Shared buffers are for cooperating processes.
// - Linux only; elsewhere construction throws std::runtime_error.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "fastreplay/common.h"
#include "fastreplay/memory.h"

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define FASTREPLAY_SHARED 1
#else
#define FASTREPLAY_SHARED 0
#endif

namespace fastreplay {

#if FASTREPLAY_SHARED

// A robust, process-shared mutex living in shared memory (kBytes at `at`). BasicLockable.
class SharedMutex {
 public:
  static constexpr std::size_t kBytes = sizeof(pthread_mutex_t);
  // Initialise the mutex at `at` (the creating process, once).
  static void create(void* at) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    const int rc = pthread_mutex_init(static_cast<pthread_mutex_t*>(at), &a);
    pthread_mutexattr_destroy(&a);
    if (rc) throw std::runtime_error(std::string("pthread_mutex_init: ") + std::strerror(rc));
  }
  explicit SharedMutex(void* at) : m_(static_cast<pthread_mutex_t*>(at)) {}
  // True if the previous owner died holding it: the caller now owns it and must repair what it guards.
  bool lock_recover() {
    const int rc = pthread_mutex_lock(m_);
    if (rc == EOWNERDEAD) {
      pthread_mutex_consistent(m_);
      return true;
    }
    if (rc) throw std::runtime_error(std::string("pthread_mutex_lock: ") + std::strerror(rc));
    return false;
  }
  void unlock() { pthread_mutex_unlock(m_); }

 private:
  pthread_mutex_t* m_;
};

// The name of a shared-memory object, removed when the process that created it drops it (a forked child holding
// a copy never removes it).
class SharedName {
 public:
  explicit SharedName(std::string name) : name_(std::move(name)), owner_(::getpid()) {}
  ~SharedName() {
    if (::getpid() == owner_) ::shm_unlink(name_.c_str());
  }
  SharedName(const SharedName&) = delete;
  SharedName& operator=(const SharedName&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  pid_t owner_;
};

class SharedRegion : public Blocks {
 public:
  static constexpr std::uint64_t kVersion = 1;
  static constexpr std::size_t kPage = 4096;  // blocks start on pages (mmap offsets); the header takes the first

  // Create the object `name` ("/fastreplay-..."; an existing one is an error) or attach to it. `fingerprint`
  // identifies the layout (capacity, fields, kind): attaching with another one is an error, as is an object that
  // is not a finished fastreplay buffer. Throws std::invalid_argument (bad name, wrong object) or
  // std::runtime_error (the system refused).
  SharedRegion(const std::string& name, bool create, std::uint64_t fingerprint)
      : name_(name), create_(create), fingerprint_(fingerprint) {
    if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos || name.size() > 200)
      throw_invalid("shared storage: bad name '" + name + "' (one '/' then up to 200 characters, no other '/')");
    fd_ = ::shm_open(name.c_str(), create ? O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC : O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      const int e = errno;
      if (!create && e == ENOENT)
        throw_invalid("shared storage '" + name + "' does not exist (any more): the process that created the "
                      "buffer must keep it alive while others attach");
      throw std::runtime_error("shared storage: cannot " + std::string(create ? "create " : "open ") + name + ": " +
                               std::strerror(e));
    }
    try {
      if (create) {
        grow(kPage);
      } else {
        struct stat st;
        if (::fstat(fd_, &st) != 0) throw std::runtime_error("shared storage: fstat " + name + " failed");
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ < kPage) throw_invalid("shared storage '" + name + "' is not a fastreplay buffer (too small)");
      }
      header_mem_ = map(0, kPage);
      Header* h = header();
      if (!create) {
        if (std::memcmp(h->magic, kMagic, sizeof kMagic) != 0 || h->version != kVersion)
          throw_invalid("shared storage '" + name + "' is not a fastreplay buffer of this version");
        if (h->ready.load(std::memory_order_acquire) != 1)
          throw_invalid("shared storage '" + name + "' is not finished (its creator failed or is still building it)");
        if (h->fingerprint != fingerprint)
          throw_invalid("shared storage '" + name + "' holds a buffer of another capacity, fields or kind");
        if (h->bytes != size_) throw_invalid("shared storage '" + name + "' has the wrong size");
      }
      used_ = kPage;
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }
  ~SharedRegion() override {
    if (fd_ >= 0) ::close(fd_);
  }
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  // The next block, page-aligned. Creating: the object grows by it (committed, zero). Attaching: the block at the
  // same offset, which must lie inside the object.
  std::shared_ptr<std::uint8_t> take(std::size_t bytes, bool /*sparse*/) override {
    const std::size_t len = round_up(bytes ? bytes : 1);
    const std::size_t off = used_;
    if (create_) {
      grow(off + len);
    } else if (len > size_ || off > size_ - len) {
      throw_invalid("shared storage '" + name_ + "' is smaller than the buffer it should hold");
    }
    used_ = off + len;
    return map(off, len);
  }
  bool fresh() const override { return create_; }
  bool shared() const override { return true; }

  // After the core is built: creating, record the layout and mark the object ready for others; attaching, check
  // the core used the whole object. `seed` is the creator's generator seed.
  void finish(std::uint64_t seed) {
    Header* h = header();
    if (create_) {
      std::memcpy(h->magic, kMagic, sizeof kMagic);
      h->version = kVersion;
      h->fingerprint = fingerprint_;
      h->seed = seed;
      h->bytes = used_;
      h->ready.store(1, std::memory_order_release);
    } else if (used_ != size_) {
      throw_invalid("shared storage '" + name_ + "' is larger than the buffer it should hold");
    }
    ::close(fd_);
    fd_ = -1;
  }
  // The creator's seed (attaching processes use it, so that every process draws from the same seed's streams).
  std::uint64_t seed() const { return header()->seed; }

 private:
  static constexpr char kMagic[8] = {'F', 'R', 'S', 'H', 'A', 'R', 'E', 'D'};
  struct Header {
    char magic[8];
    std::uint64_t version, fingerprint, seed, bytes;
    std::atomic<std::uint64_t> ready;
  };
  static_assert(sizeof(Header) <= kPage, "the header fits its page");

  static std::size_t round_up(std::size_t n) {
    if (n > SIZE_MAX - kPage) throw std::bad_alloc();
    return (n + kPage - 1) / kPage * kPage;
  }
  Header* header() const { return reinterpret_cast<Header*>(header_mem_.get()); }
  void grow(std::size_t bytes) {
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
      throw std::runtime_error("shared storage: cannot size " + name_ + ": " + std::strerror(errno));
    const int rc = ::posix_fallocate(fd_, static_cast<off_t>(size_), static_cast<off_t>(bytes - size_));
    if (rc != 0)
      throw std::runtime_error("shared storage: cannot reserve " + std::to_string(bytes) + " bytes for " + name_ +
                               " in /dev/shm: " + std::strerror(rc));
    size_ = bytes;
  }
  std::shared_ptr<std::uint8_t> map(std::size_t off, std::size_t len) {
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, static_cast<off_t>(off));
    if (p == MAP_FAILED) throw std::runtime_error("shared storage: cannot map " + name_ + ": " + std::strerror(errno));
    return std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [len](std::uint8_t* q) { ::munmap(q, len); });
  }

  std::string name_;
  bool create_;
  std::uint64_t fingerprint_;
  int fd_ = -1;
  std::size_t size_ = 0;  // bytes of the object
  std::size_t used_ = 0;  // bytes handed out (the header included)
  std::shared_ptr<std::uint8_t> header_mem_;
};

#else  // not Linux

class SharedMutex {
 public:
  static constexpr std::size_t kBytes = 64;
  static void create(void*) { throw std::runtime_error("shared storage needs Linux"); }
  explicit SharedMutex(void*) {}
  bool lock_recover() { throw std::runtime_error("shared storage needs Linux"); }
  void unlock() {}
};
class SharedName {
 public:
  explicit SharedName(std::string) {}
};
class SharedRegion : public Blocks {
 public:
  SharedRegion(const std::string&, bool, std::uint64_t) { throw std::runtime_error("shared storage needs Linux"); }
  std::shared_ptr<std::uint8_t> take(std::size_t, bool) override { return nullptr; }
  bool fresh() const override { return false; }
  bool shared() const override { return true; }
  void finish(std::uint64_t) {}
  std::uint64_t seed() const { return 0; }
};

#endif

}  // namespace fastreplay
