// Batched gather: copy the rows at B indices of every column into contiguous outputs, with software prefetch.
//
// Small rows (up to a few cache lines) are latency-bound: each row is a cache miss somewhere in a large column.
// The gather walks the batch in chunks of kChunk rows; while it copies one chunk, field by field with a
// fixed-size copy, it has already asked for every line of the next chunk in every field, so ~kChunk x fields
// misses are in flight at once (measured on the 2-core dev box at capacity 1e6, 5 CartPole fields, B = 256:
// 5.5 us field-by-field with a 16-row prefetch distance, 4.5 us chunked). Those figures were taken while GCC
// deleted every call to prefetch_rows (see there), so the chunked order, not the prefetches, made that difference;
// with the prefetches compiled in, sample(256) at 1e6 CartPole rows moved by under 2% (bench_ab, 11 rounds).
// Large rows (images) are bandwidth-bound: bulk_copy.h copies them as several streams at once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastreplay/bulk_copy.h"
#include "fastreplay/copy.h"

namespace fastreplay {

struct ColumnRef {
  const std::uint8_t* base;
  std::size_t row_bytes;
};

namespace detail {
inline constexpr std::size_t kChunk = 16;
inline constexpr std::size_t kSmallRow = 256;

using CopyFn = void (*)(const std::uint8_t*, std::size_t, const std::int64_t*, std::size_t, std::uint8_t*);

template <std::size_t Bytes>
void copy_fixed(const std::uint8_t* base, std::size_t, const std::int64_t* idx, std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) load_shared(out + i * Bytes, base + static_cast<std::size_t>(idx[i]) * Bytes, Bytes);
}
inline void copy_any(const std::uint8_t* base, std::size_t rb, const std::int64_t* idx, std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) load_shared(out + i * rb, base + static_cast<std::size_t>(idx[i]) * rb, rb);
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
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = c.base + static_cast<std::size_t>(idx[i]) * c.row_bytes;
    __builtin_prefetch(p);
    if (c.row_bytes > 1) __builtin_prefetch(p + c.row_bytes - 1);  // a row may straddle two lines
  }
}
}  // namespace detail

// out[f][i] = column f's row idx[i], for i < n and every field f. Indices must already be checked against the
// columns' capacity. O(n * sum of row bytes)
inline void gather_batch(const ColumnRef* cols, std::size_t nf, const std::int64_t* idx, std::size_t n,
                         std::uint8_t* const* out) {
  using namespace detail;
  // Large-row fields first, each as a bulk copy of several streams at once (bulk_copy.h).
  for (std::size_t f = 0; f < nf; ++f)
    if (cols[f].row_bytes > kSmallRow) copy_rows(cols[f].base, cols[f].row_bytes, idx, n, out[f]);
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
        fns[f](cols[f].base, cols[f].row_bytes, idx + c0, c1 - c0, out[f] + c0 * cols[f].row_bytes);
  }
  for (std::size_t f = nfc; f < nf; ++f)  // more than 64 fields: plain copies
    if (cols[f].row_bytes <= kSmallRow) copy_any(cols[f].base, cols[f].row_bytes, idx, n, out[f]);
}

}  // namespace fastreplay
