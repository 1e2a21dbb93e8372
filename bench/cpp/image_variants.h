// The large-row loop of gather.h before bulk_copy.h (for image_bench.cpp's comparison): rows one by one, copied in
// 4 KiB blocks while the block 8 KiB further along the rows is prefetched.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace image_bench {
inline void rows_one_by_one(const std::uint8_t* base, std::size_t rb, const std::int64_t* idx, std::size_t n,
                            std::uint8_t* out) {
  constexpr std::size_t kBlock = 4096;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* src = base + static_cast<std::size_t>(idx[i]) * rb;
    const std::uint8_t* next = i + 1 < n ? base + static_cast<std::size_t>(idx[i + 1]) * rb : nullptr;
    std::uint8_t* dst = out + i * rb;
    for (std::size_t off = 0; off < rb; off += kBlock) {
      const std::size_t ahead = off + 2 * kBlock;
      const std::uint8_t* pf = ahead < rb ? src + ahead : (next ? next + (ahead - rb) : nullptr);
      const std::uint8_t* pf_end = ahead < rb ? src + rb : (next ? next + rb : nullptr);
      for (std::size_t b = 0; pf && b < kBlock && pf + b < pf_end; b += 64) __builtin_prefetch(pf + b);
      std::memcpy(dst + off, src + off, std::min(kBlock, rb - off));
    }
  }
}
}  // namespace image_bench
