// Storage: where each field's rows live. Small rows are packed together into one record per transition (a row
// group); large rows (images) keep a contiguous column of their own. Both are addressed the same way, as a column
// with a stride: row `slot` of a field is at base + slot * stride.
//
// Why packed records: a sampled transition reads one row of every field. Stored column by column, CartPole's five
// fields put those rows in five places of five large arrays, five cache misses per transition; in one record they
// are one or two adjacent lines. Large rows gain nothing from packing (each is many lines anyway) and keep the
// column layout, so that frames and images stay contiguous for streaming copies.
//
// The rule (plan_storage, the only place it is decided), for Layout::Auto:
// - a field is *small* if its row is at most kPackedRow bytes; if at least two fields are small, all small fields
//   share one record (in order of decreasing alignment, then of declaration, each at an offset aligned to its
//   item size); one small field alone stays a column;
// - the record is padded to a power of two up to 64 bytes, or to a multiple of 64 beyond, so that with 64-byte
//   aligned memory a record never straddles more cache lines than it must;
// - Layout::Columnar keeps every field in its own column (what memory-mapped files hold: one file per field).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/copy.h"
#include "fastreplay/memory.h"

namespace fastreplay {

struct FieldSpec {
  std::string name;
  std::size_t row_bytes = 0;  // bytes of one row (itemsize * prod(shape)), > 0
  std::size_t align = 1;      // alignment its rows need inside a record (the dtype's item size)
};

enum class Layout { Auto, Columnar };

// Rows of at most this many bytes are packed into records (Layout::Auto).
inline constexpr std::size_t kPackedRow = 256;

// Where one field's rows are: in block `block` of the plan, at `offset` bytes into each of its `stride`-byte rows.
struct Placement {
  std::size_t block = 0, offset = 0, stride = 0;
};

struct StoragePlan {
  std::vector<Placement> fields;        // one per field, in the fields' order
  std::vector<std::size_t> block_row;   // bytes per slot of each block (a record's size, or a column's row)
  std::vector<std::vector<std::size_t>> members;  // the fields of each block, by offset
};

// The storage plan of `fields` (see the header comment). Throws std::invalid_argument on a zero-byte field.
inline StoragePlan plan_storage(const std::vector<FieldSpec>& fields, Layout layout) {
  StoragePlan plan;
  plan.fields.resize(fields.size());
  std::vector<std::size_t> small;
  for (std::size_t f = 0; f < fields.size(); ++f) {
    if (fields[f].row_bytes == 0) throw_invalid("field '" + fields[f].name + "' has zero bytes per row");
    if (layout == Layout::Auto && fields[f].row_bytes <= kPackedRow) small.push_back(f);
  }
  if (small.size() < 2) small.clear();
  std::vector<char> packed(fields.size(), 0);
  if (!small.empty()) {
    std::stable_sort(small.begin(), small.end(),
                     [&](std::size_t a, std::size_t b) { return fields[a].align > fields[b].align; });
    std::size_t off = 0, max_align = 1;
    for (std::size_t f : small) {
      const std::size_t al = std::max<std::size_t>(fields[f].align, 1);
      off = (off + al - 1) / al * al;
      plan.fields[f] = {0, off, 0};
      off += fields[f].row_bytes;
      max_align = std::max(max_align, al);
      packed[f] = 1;
    }
    std::size_t rec = max_align;
    if (off <= kCacheLine) {
      while (rec < off) rec *= 2;
    } else {
      rec = (off + kCacheLine - 1) / kCacheLine * kCacheLine;
      rec = (rec + max_align - 1) / max_align * max_align;
    }
    for (std::size_t f : small) plan.fields[f].stride = rec;
    plan.block_row.push_back(rec);
    plan.members.push_back(small);
  }
  for (std::size_t f = 0; f < fields.size(); ++f) {
    if (packed[f]) continue;
    plan.fields[f] = {plan.block_row.size(), 0, fields[f].row_bytes};
    plan.block_row.push_back(fields[f].row_bytes);
    plan.members.push_back({f});
  }
  return plan;
}

// One field's rows: capacity rows of row_bytes each, `stride` bytes apart (stride == row_bytes: a plain column).
// Memory is shared with the other members of its record block, if any, and kept alive by every one of them.
class Column {
 public:
  // `memory` points at the field's row 0 (an aliasing pointer into a record block, a mapped file, a caller's
  // array) and holds at least capacity rows of `stride` bytes; stride 0 means row_bytes.
  Column(FieldSpec spec, std::shared_ptr<std::uint8_t> memory, std::size_t stride = 0)
      : spec_(std::move(spec)), data_(std::move(memory)), stride_(stride ? stride : spec_.row_bytes) {
    if (spec_.row_bytes == 0) throw_invalid("field '" + spec_.name + "' has zero bytes per row");
    if (stride_ < spec_.row_bytes) throw_invalid("field '" + spec_.name + "': stride below the row size");
  }

  const std::string& name() const { return spec_.name; }
  std::size_t row_bytes() const { return spec_.row_bytes; }
  std::size_t stride() const { return stride_; }
  bool contiguous() const { return stride_ == spec_.row_bytes; }
  std::uint8_t* data() const { return data_.get(); }
  const std::shared_ptr<std::uint8_t>& memory() const { return data_; }  // owns the block that data() points into
  std::uint8_t* row(std::size_t slot) const { return data_.get() + slot * stride_; }

  // Copy n contiguous source rows into rows slot .. slot + n - 1 (shared storage: see copy.h).
  void store_rows(std::size_t slot, const std::uint8_t* src, std::size_t n) const {
    if (contiguous()) return store_shared(row(slot), src, n * spec_.row_bytes);
    for (std::size_t k = 0; k < n; ++k) store_shared(row(slot + k), src + k * spec_.row_bytes, spec_.row_bytes);
  }

 private:
  FieldSpec spec_;
  std::shared_ptr<std::uint8_t> data_;
  std::size_t stride_;
};

// Zeroed storage for capacity slots of `fields` laid out by `plan`: one block per plan block from `blocks` (see
// memory.h; null: process memory), taken in the plan's block order, and one Column per field aliasing into it.
// Record blocks are 64-byte aligned (one slack line is taken for that). Throws std::bad_alloc.
inline std::vector<Column> allocate_columns(const std::vector<FieldSpec>& fields, const StoragePlan& plan,
                                            std::size_t capacity, Blocks* blocks) {
  std::vector<std::shared_ptr<std::uint8_t>> base;
  for (std::size_t b = 0; b < plan.block_row.size(); ++b) {
    const bool record = plan.members[b].size() > 1;
    std::shared_ptr<std::uint8_t> mem =
        take_zeroed(blocks, checked_mul(capacity, plan.block_row[b]) + (record ? kCacheLine : 0));
    if (record) {
      const auto p = reinterpret_cast<std::uintptr_t>(mem.get());
      mem = std::shared_ptr<std::uint8_t>(mem, mem.get() + ((p + kCacheLine - 1) / kCacheLine * kCacheLine - p));
    }
    base.push_back(std::move(mem));
  }
  std::vector<Column> cols;
  cols.reserve(fields.size());
  for (std::size_t f = 0; f < fields.size(); ++f) {
    const Placement& pl = plan.fields[f];
    cols.emplace_back(fields[f], std::shared_ptr<std::uint8_t>(base[pl.block], base[pl.block].get() + pl.offset),
                      pl.stride);
  }
  return cols;
}

}  // namespace fastreplay
