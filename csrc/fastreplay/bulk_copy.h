// Bulk row copies: the gather of large rows (images) at the memory's streaming bandwidth.
//
// A batch of large rows is read from DRAM, and one core reading one stream is limited by how many of its line
// misses are in flight: the hardware prefetcher follows a stream within a 4 KiB page only, and restarts at every
// page and row. A plain copy of 1.8 MB (an Atari batch: 32 obs + 32 next_obs rows) out of DRAM into a cached
// destination therefore ran at ~76% of a 512 MiB memcpy, whose glibc loop reads 4 pages at once; rows gathered one
// by one, with or without software prefetch 4-16 KiB ahead, ran at the same 76-81% (bench/cpp/image_bench.cpp).
// copy_rows does what that glibc loop does, for a gather: the batch's bytes, seen as one stream of rows laid end to
// end, are cut into kStreams segments copied kStreamChunk bytes from each in turn, so that kStreams streams are in
// flight, and each chunk prefetches (into L2) the chunk kStreamPrefetch bytes further along its segment, in the
// same row or the next. Stores stay ordinary, so the batch is in cache when the consumer reads it next (streaming
// stores measured no faster). Measured in one run: 12.4-13.0 GB/s against 9.9 for the row-by-row copy, 10.0 for
// a contiguous copy of the same bytes and 13.9 for only reading the rows. 1, 2, 4 and 8 streams, chunks of 64 B to
// 1 KiB and distances of 0.5-4 KiB were tried: 4 streams of 64-128 B chunks with 0.5-2 KiB were best (within
// noise of each other; 8 streams and 512 B chunks were ~5% slower), and an explicit AVX2 chunk copy was no faster
// than memcpy of a fixed size, so no run-time dispatch is needed.
//
// Under ThreadSanitizer every byte goes through load_shared (copy.h), as everywhere storage is read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastreplay/copy.h"
#include "fastreplay/copy_crew.h"

namespace fastreplay {
namespace detail {

inline constexpr std::size_t kStreams = 4;
inline constexpr std::size_t kStreamChunk = 128;
inline constexpr std::size_t kStreamPrefetch = 1024;
inline constexpr std::size_t kMaxStreams = 8;

// One full chunk: a copy of a fixed size (inlined, or glibc's memcpy, which picks its vector width at run time).
inline void copy_chunk(std::uint8_t* d, const std::uint8_t* s) { load_shared(d, s, kStreamChunk); }

// Bytes [lo, hi) of out = rows idx[0..n) of rb bytes each (row k at base + k * stride), laid end to end, copied
// as `streams` (<= kMaxStreams) segments in turn, `prefetch` bytes ahead (0: none). O(hi - lo)
inline void copy_rows_span(const std::uint8_t* base, std::size_t rb, std::size_t stride, const std::int64_t* idx,
                           std::size_t n, std::uint8_t* out, std::size_t lo, std::size_t hi, std::size_t streams,
                           std::size_t prefetch) {
  struct Cursor {
    std::size_t pos, end, row, off;  // stream position, segment end, and the row and offset at pos
  };
  if (hi <= lo) return;
  streams = std::max<std::size_t>(1, std::min(streams, kMaxStreams));
  Cursor c[kMaxStreams];
  for (std::size_t j = 0; j < streams; ++j) {
    const std::size_t pos = j ? lo + (hi - lo) / streams * j / kCacheLine * kCacheLine : lo;
    c[j] = Cursor{pos, 0, pos / rb, pos % rb};
    if (j) c[j - 1].end = pos;
  }
  c[streams - 1].end = hi;
  for (std::size_t live = streams; live;) {
    live = 0;
    for (std::size_t j = 0; j < streams; ++j) {
      Cursor& s = c[j];
      if (s.pos >= s.end) continue;
      ++live;
      const std::uint8_t* src = base + static_cast<std::size_t>(idx[s.row]) * stride;
      if (prefetch) {  // the lines of the chunk `prefetch` bytes ahead, in this row or the next
        for (std::size_t q = 0; q < kStreamChunk; q += kCacheLine) {
          const std::size_t ahead = s.off + prefetch + q;
          if (ahead < rb)
            __builtin_prefetch(src + ahead, 0, 2);
          else if (s.row + 1 < n && ahead - rb < rb)
            __builtin_prefetch(base + static_cast<std::size_t>(idx[s.row + 1]) * stride + (ahead - rb), 0, 2);
        }
      }
      const std::size_t take = std::min({kStreamChunk, rb - s.off, s.end - s.pos});
      if (take == kStreamChunk)
        copy_chunk(out + s.pos, src + s.off);
      else
        load_shared(out + s.pos, src + s.off, take);
      s.pos += take;
      s.off += take;
      if (s.off == rb) {
        ++s.row;
        s.off = 0;
      }
    }
  }
}

// All of out (n * rb bytes), as copy_rows_span. O(n * rb)
inline void copy_rows_streams(const std::uint8_t* base, std::size_t rb, std::size_t stride, const std::int64_t* idx,
                              std::size_t n, std::uint8_t* out, std::size_t streams, std::size_t prefetch) {
  copy_rows_span(base, rb, stride, idx, n, out, 0, n * rb, streams, prefetch);
}

// One large-row column of a gather: rows of rb bytes, `stride` apart from base, into out (n * rb bytes).
struct RowsSpec {
  const std::uint8_t* base;
  std::size_t rb, stride;
  std::uint8_t* out;
};

// A copy shared with the copy crew (copy_crew.h): from kParallelMin bytes in all, in kPartsPerThread parts per thread.
inline constexpr std::size_t kParallelMin = std::size_t(256) << 10;
inline constexpr std::size_t kPartsPerThread = 8;

struct RowsJob {
  const RowsSpec* specs;
  std::size_t k;
  const std::int64_t* idx;
  std::size_t n, total, parts;
  // Part p: bytes [total * p / parts, total * (p + 1) / parts) of the columns' outputs laid end to end, each bound
  // on a cache line but the last.
  static void part(const void* ctx, std::size_t p) {
    const auto& j = *static_cast<const RowsJob*>(ctx);
    auto at = [&](std::size_t q) { return q == j.parts ? j.total : j.total / j.parts * q / kCacheLine * kCacheLine; };
    const std::size_t lo = at(p), hi = at(p + 1);
    std::size_t start = 0;  // where spec s begins in the concatenation
    for (std::size_t s = 0; s < j.k && start < hi; ++s) {
      const RowsSpec& c = j.specs[s];
      const std::size_t end = start + j.n * c.rb;
      if (end > lo)
        copy_rows_span(c.base, c.rb, c.stride, j.idx, j.n, c.out, std::max(lo, start) - start,
                       std::min(hi, end) - start, kStreams, kStreamPrefetch);
      start = end;
    }
  }
};

// out of every spec = its rows idx[0..n), as copy_rows_streams with kStreams streams. A copy of a batch of under
// 4 pages per column is row by row; from kParallelMin bytes in all, the work is shared with the copy crew when it
// has helpers, cut across the columns laid end to end. Indices already checked. O(n * sum of rb)
// noinline: large-row copies are long, and inlined into gather_batch this code slowed its small-row path (+0.3 us
// for sample(256) of CartPole rows through the bindings).
__attribute__((noinline)) inline void copy_rows_many(const RowsSpec* specs, std::size_t k, const std::int64_t* idx,
                                                     std::size_t n) {
  std::size_t total = 0;
  for (std::size_t s = 0; s < k; ++s) total += n * specs[s].rb;
  CopyCrew& crew = CopyCrew::instance();
  const std::size_t threads = crew.threads();
  if (threads > 1 && total >= kParallelMin) {
    const RowsJob job{specs, k, idx, n, total, threads * kPartsPerThread};
    crew.run(&RowsJob::part, &job, job.parts);
    return;
  }
  for (std::size_t s = 0; s < k; ++s) {
    const RowsSpec& c = specs[s];
    if (n * c.rb < kStreams * 4096) {
      for (std::size_t i = 0; i < n; ++i)
        load_shared(c.out + i * c.rb, c.base + static_cast<std::size_t>(idx[i]) * c.stride, c.rb);
    } else {
      copy_rows_streams(c.base, c.rb, c.stride, idx, n, c.out, kStreams, kStreamPrefetch);
    }
  }
}

// out[i * rb ..] = row idx[i] of one column (copy_rows_many of one spec). O(n * rb)
inline void copy_rows(const std::uint8_t* base, std::size_t rb, std::size_t stride, const std::int64_t* idx,
                      std::size_t n, std::uint8_t* out) {
  const RowsSpec spec{base, rb, stride, out};
  copy_rows_many(&spec, 1, idx, n);
}

}  // namespace detail
}  // namespace fastreplay
