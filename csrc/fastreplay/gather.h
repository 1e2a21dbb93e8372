// Batched gather: copy the rows at B indices of one column into a contiguous output, with software prefetch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastreplay/copy.h"

namespace fastreplay {

namespace detail {
// Rows this far ahead are prefetched while the current one is copied: enough to overlap ~10-20 cache misses.
inline constexpr std::size_t kPrefetchAhead = 16;

template <std::size_t Bytes>
inline void gather_fixed(const std::uint8_t* base, const std::int64_t* idx, std::size_t n, std::uint8_t* out) {
  for (std::size_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) __builtin_prefetch(base + static_cast<std::size_t>(idx[i + kPrefetchAhead]) * Bytes);
    load_shared(out + i * Bytes, base + static_cast<std::size_t>(idx[i]) * Bytes, Bytes);
  }
}
}  // namespace detail

// out[i] = column[idx[i]] for i < n. Indices must already be checked against the column's capacity. O(n)
inline void gather_rows(const std::uint8_t* base, std::size_t row_bytes, const std::int64_t* idx, std::size_t n,
                        std::uint8_t* out) {
  switch (row_bytes) {  // fixed sizes become single loads and stores
    case 1: return detail::gather_fixed<1>(base, idx, n, out);
    case 2: return detail::gather_fixed<2>(base, idx, n, out);
    case 4: return detail::gather_fixed<4>(base, idx, n, out);
    case 8: return detail::gather_fixed<8>(base, idx, n, out);
    case 12: return detail::gather_fixed<12>(base, idx, n, out);
    case 16: return detail::gather_fixed<16>(base, idx, n, out);
    case 32: return detail::gather_fixed<32>(base, idx, n, out);
    default: break;
  }
  if (row_bytes <= 256) {
    for (std::size_t i = 0; i < n; ++i) {
      if (i + detail::kPrefetchAhead < n) {
        const std::uint8_t* p = base + static_cast<std::size_t>(idx[i + detail::kPrefetchAhead]) * row_bytes;
        __builtin_prefetch(p);
        __builtin_prefetch(p + row_bytes - 1);
      }
      load_shared(out + i * row_bytes, base + static_cast<std::size_t>(idx[i]) * row_bytes, row_bytes);
    }
    return;
  }
  // Large rows (images): each copy is long enough for the hardware prefetcher; prefetch the next row's start.
  for (std::size_t i = 0; i < n; ++i) {
    if (i + 1 < n) __builtin_prefetch(base + static_cast<std::size_t>(idx[i + 1]) * row_bytes);
    load_shared(out + i * row_bytes, base + static_cast<std::size_t>(idx[i]) * row_bytes, row_bytes);
  }
}

}  // namespace fastreplay
