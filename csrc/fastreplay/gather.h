// Batched gather: copy the rows at B indices of every column into contiguous outputs, with software prefetch.
//
// Small rows (up to a few cache lines) are latency-bound: each row is a cache miss somewhere in a large column.
// The gather walks the batch in chunks of kChunk rows; while it copies one chunk, field by field with a
// fixed-size copy, it has already asked for every line of the next chunk in every field, so ~kChunk x fields
// misses are in flight at once. Fields packed into one record (storage.h) share their lines: only the record's
// lead member asks for them. Measured with bench/cpp/sample_bench.cpp at 1e6 CartPole rows, B = 256 (gather
// only, best of 41, three alternating runs): 16-row chunks 2.15-2.32 us, 32-row chunks 1.95-2.05 us; no change
// at 1e4 and 1e5. At that point the gather is at the machine's limit for random lines: 256 misses in 2 us is
// about ten in flight at ~100 ns each.
// Large rows (images) are bandwidth-bound: bulk_copy.h copies them as several streams at once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <vector>

#include "fastreplay/bulk_copy.h"
#include "fastreplay/copy.h"
#include "fastreplay/storage.h"

namespace fastreplay {

// A column as the gather sees it: row i at base + i * stride. `ahead`: bytes from a row's start to prefetch (a
// record's lead member asks for the whole record, its other members for nothing: one request per line).
struct ColumnRef {
  const std::uint8_t* base;
  std::size_t row_bytes;
  std::size_t stride;
  std::size_t ahead;
};

// The gather's view of one column that is gathered alone (it prefetches its own rows).
inline ColumnRef column_ref(const Column& c) { return {c.data(), c.row_bytes(), c.stride(), c.row_bytes()}; }

// The gather's view of a set of columns gathered together: one member of each record (the one at the record's
// start, offset 0) prefetches the record.
inline std::vector<ColumnRef> column_refs(const std::vector<Column>& cols) {
  std::vector<ColumnRef> refs;
  for (const Column& c : cols) {
    ColumnRef r = column_ref(c);
    if (!c.contiguous()) {
      r.ahead = c.stride();
      for (const Column& o : cols)  // a member at a lower offset of the same record: that one leads
        if (!o.contiguous() && o.stride() == c.stride() && o.data() < c.data() && c.data() < o.data() + o.stride())
          r.ahead = 0;
    }
    refs.push_back(r);
  }
  return refs;
}

namespace detail {
inline constexpr std::size_t kChunk = 32;
inline constexpr std::size_t kSmallRow = 256;

using CopyFn = void (*)(const std::uint8_t*, std::size_t, std::size_t, const std::int64_t*, std::size_t,
                        std::uint8_t*);

template <std::size_t Bytes>
void copy_fixed(const std::uint8_t* base, std::size_t, std::size_t stride, const std::int64_t* idx, std::size_t n,
                std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i)
    load_shared(out + i * Bytes, base + static_cast<std::size_t>(idx[i]) * stride, Bytes);
}
inline void copy_any(const std::uint8_t* base, std::size_t rb, std::size_t stride, const std::int64_t* idx,
                     std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) load_shared(out + i * rb, base + static_cast<std::size_t>(idx[i]) * stride, rb);
}
inline CopyFn copy_fn(std::size_t row_bytes) {
  switch (row_bytes) {  // fixed sizes become single loads and stores
    case 1: return copy_fixed<1>;
    case 2: return copy_fixed<2>;
    case 4: return copy_fixed<4>;
    case 8: return copy_fixed<8>;
    case 12: return copy_fixed<12>;
    case 16: return copy_fixed<16>;
    case 24: return copy_fixed<24>;
    case 32: return copy_fixed<32>;
    case 64: return copy_fixed<64>;
    default: return copy_any;
  }
}
// always_inline: otherwise GCC's IPA pure-const analysis finds that this function has no side effects (prefetches
// do not count) and deletes every call to it, so no row was ever prefetched (checked in the disassembly, GCC 12).
__attribute__((always_inline)) inline void prefetch_rows(const ColumnRef& c, const std::int64_t* idx, std::size_t n) {
  if (c.ahead == 0) return;  // another member of the record asks for its lines
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = c.base + static_cast<std::size_t>(idx[i]) * c.stride;
    const std::uint8_t* last = p + c.ahead - 1;  // a row may straddle two lines, a record several
    for (; p < last; p += 64) __builtin_prefetch(p);
    __builtin_prefetch(last);
  }
}
}  // namespace detail

// out[f][i] = column f's row idx[i], for i < n and every field f. Indices must already be checked against the
// columns' capacity. O(n * sum of row bytes)
inline void gather_batch(const ColumnRef* cols, std::size_t nf, const std::int64_t* idx, std::size_t n,
                         std::uint8_t* const* out) {
  using namespace detail;
  // Large-row fields first, as bulk copies of several streams at once, shared with the copy crew if it has helpers
  // (bulk_copy.h).
  {
    RowsSpec large[64];
    std::size_t k = 0;
    for (std::size_t f = 0; f < nf; ++f) {
      if (cols[f].row_bytes <= kSmallRow) continue;
      large[k++] = RowsSpec{cols[f].base, cols[f].row_bytes, cols[f].stride, out[f]};
      if (k == 64) {
        copy_rows_many(large, k, idx, n);
        k = 0;
      }
    }
    if (k) copy_rows_many(large, k, idx, n);
  }
  // Small-row fields, chunk by chunk, the next chunk's lines prefetched in every field.
  CopyFn fns[64];
  const std::size_t nfc = std::min<std::size_t>(nf, 64);
  for (std::size_t f = 0; f < nfc; ++f) fns[f] = copy_fn(cols[f].row_bytes);
  for (std::size_t f = 0; f < nfc; ++f)
    if (cols[f].row_bytes <= kSmallRow) prefetch_rows(cols[f], idx, std::min(n, kChunk));
  for (std::size_t c0 = 0; c0 < n; c0 += kChunk) {
    const std::size_t c1 = std::min(n, c0 + kChunk);
    const std::size_t c2 = std::min(n, c1 + kChunk);
    for (std::size_t f = 0; f < nfc; ++f)
      if (cols[f].row_bytes <= kSmallRow) prefetch_rows(cols[f], idx + c1, c2 - c1);
    for (std::size_t f = 0; f < nfc; ++f)
      if (cols[f].row_bytes <= kSmallRow)
        fns[f](cols[f].base, cols[f].row_bytes, cols[f].stride, idx + c0, c1 - c0, out[f] + c0 * cols[f].row_bytes);
  }
  for (std::size_t f = nfc; f < nf; ++f)  // more than 64 fields: plain copies
    if (cols[f].row_bytes <= kSmallRow) copy_any(cols[f].base, cols[f].row_bytes, cols[f].stride, idx, n, out[f]);
}

}  // namespace fastreplay
