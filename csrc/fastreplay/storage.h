// Columnar storage: one contiguous, zero-initialised array of capacity rows per field, addressed by byte sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "fastreplay/common.h"
#include "fastreplay/memory.h"

namespace fastreplay {

struct FieldSpec {
  std::string name;
  std::size_t row_bytes = 0;  // bytes of one row (itemsize * prod(shape)), > 0
};

// One column: capacity rows of row_bytes each, contiguous. Memory comes from allocate_zeroed (memory.h) or is
// handed in by the caller.
class Column {
 public:
  Column(FieldSpec spec, std::size_t capacity) : spec_(std::move(spec)) {
    if (spec_.row_bytes == 0) throw_invalid("field '" + spec_.name + "' has zero bytes per row");
    data_ = allocate_zeroed(checked_mul(capacity, spec_.row_bytes));
  }

  // External memory (a memory-mapped file, a caller's array) of at least capacity rows: owner keeps it alive.
  Column(FieldSpec spec, std::shared_ptr<std::uint8_t> memory) : spec_(std::move(spec)), data_(std::move(memory)) {
    if (spec_.row_bytes == 0) throw_invalid("field '" + spec_.name + "' has zero bytes per row");
  }

  const std::string& name() const { return spec_.name; }
  std::size_t row_bytes() const { return spec_.row_bytes; }
  std::uint8_t* data() const { return data_.get(); }
  std::uint8_t* row(std::size_t slot) const { return data_.get() + slot * spec_.row_bytes; }

 private:
  FieldSpec spec_;
  std::shared_ptr<std::uint8_t> data_;
};

}  // namespace fastreplay
