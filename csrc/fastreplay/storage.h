// Columnar storage: one contiguous, zero-initialised array of capacity rows per field, addressed by byte sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fastreplay/common.h"

namespace fastreplay {

struct FieldSpec {
  std::string name;
  std::size_t row_bytes = 0;  // bytes of one row (itemsize * prod(shape)), > 0
};

// One column: capacity rows of row_bytes each, contiguous. Memory is calloc'ed (large blocks come from mmap and
// are zeroed lazily by the kernel, so a big buffer costs nothing until it is written) or handed in by the caller.
class Column {
 public:
  Column(FieldSpec spec, std::size_t capacity) : spec_(std::move(spec)) {
    if (spec_.row_bytes == 0) throw_invalid("field '" + spec_.name + "' has zero bytes per row");
    if (capacity > SIZE_MAX / spec_.row_bytes) throw std::bad_alloc();
    void* p = std::calloc(capacity, spec_.row_bytes);
    if (!p) throw std::bad_alloc();
    data_ = std::shared_ptr<std::uint8_t>(static_cast<std::uint8_t*>(p), [](std::uint8_t* q) { std::free(q); });
  }
  // External memory (a memory-mapped file, a caller's array): owner keeps it alive.
  Column(FieldSpec spec, std::shared_ptr<std::uint8_t> memory) : spec_(std::move(spec)), data_(std::move(memory)) {}

  const std::string& name() const { return spec_.name; }
  std::size_t row_bytes() const { return spec_.row_bytes; }
  std::uint8_t* data() const { return data_.get(); }
  std::uint8_t* row(std::size_t slot) const { return data_.get() + slot * spec_.row_bytes; }

 private:
  FieldSpec spec_;
  std::shared_ptr<std::uint8_t> data_;
};

}  // namespace fastreplay
