// Microbenchmark of large-row (image) gathers: where the time of an Atari sample(32) goes, below Python.
//
//   g++ -O2 -std=c++17 -I csrc bench/cpp/image_bench.cpp -o /tmp/image_bench -lpthread
//   /tmp/image_bench [rounds [sweep|threads]]
//
// Two uint8[4,84,84] columns (28,224-byte rows) of capacity 1e5 with 5e4 rows written, allocated as the core does
// (allocate_zeroed: mmap + MADV_HUGEPAGE). Each round times, in alternation so that a noisy neighbour hits all of
// them alike: a 512 MiB memcpy (the floor), a contiguous copy of the same bytes as one batch out of the
// column, and the gather of 32 random rows x 2 fields into a batch block (a) with the shipped gather_batch, (b) with
// variants of the copy loop; each round starts at another case. Figures are GB/s of bytes moved (the medians over
// rounds) and each one's ratio to the memcpy in the same round (median of the per-round ratios). "sweep" adds
// streams x prefetch distances; "threads" the upper bound of a 2-thread copy (a spinning helper thread).
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "fastreplay/bulk_copy.h"
#include "fastreplay/gather.h"
#include "fastreplay/memory.h"
#include "fastreplay/pool.h"
#include "fastreplay/rng.h"
#include "image_variants.h"

using namespace fastreplay;
using Clock = std::chrono::steady_clock;

static constexpr std::size_t kRow = 4 * 84 * 84, kCap = 100000, kFill = 50000, kB = 32;

static double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 21;
  const bool sweep = argc > 2 && std::string(argv[2]) == "sweep";  // streams x prefetch distances
  const bool two_threads = argc > 2 && std::string(argv[2]) == "threads";  // the 2-thread copy's upper bound
  auto obs = allocate_zeroed(kCap * kRow), nobs = allocate_zeroed(kCap * kRow);
  for (std::size_t i = 0; i < kFill * kRow; i += 4096)  // every stored page written (faulted in)
    obs.get()[i] = nobs.get()[i] = static_cast<std::uint8_t>(i >> 12);
  const std::size_t big = std::size_t(512) << 20;
  auto msrc = allocate_zeroed(big), mdst = allocate_zeroed(big);
  std::memset(msrc.get(), 1, big);
  std::memset(mdst.get(), 2, big);
  ColumnRef cols[2] = {{obs.get(), kRow, kRow, kRow}, {nobs.get(), kRow, kRow, kRow}};
  const std::size_t batch_bytes = 2 * kB * kRow;
  auto pool = std::make_shared<BlockPool>();
  Rng rng(1, 0);
  std::vector<std::int64_t> idx(kB);
  std::uint8_t* fixed = static_cast<std::uint8_t*>(std::aligned_alloc(64, batch_bytes));
  std::memset(fixed, 0, batch_bytes);
  std::size_t contiguous_at = 0;

  struct Case {
    std::string name;
    std::function<double()> run;  // seconds for one call moving `bytes`
    std::size_t bytes;
    std::vector<double> gbs, ratio;
  };
  auto draw = [&] {
    for (auto& i : idx) i = static_cast<std::int64_t>(rng.bounded(kFill));
  };
  auto gather_into = [&](std::uint8_t* dst, void (*fn)(const ColumnRef*, std::size_t, const std::int64_t*, std::size_t,
                                                        std::uint8_t* const*)) {
    std::uint8_t* outs[2] = {dst, dst + kB * kRow};
    const auto t0 = Clock::now();
    fn(cols, 2, idx.data(), kB, outs);
    return secs(t0, Clock::now());
  };
  std::vector<Case> cases;
  cases.push_back({"memcpy 512 MiB", [&] {
                     const auto t0 = Clock::now();
                     std::memcpy(mdst.get(), msrc.get(), big);
                     return secs(t0, Clock::now());
                   }, big, {}, {}});
  cases.push_back({"contiguous copy, same bytes, fixed dst", [&] {
                     contiguous_at = (contiguous_at + 2 * kB) % (kFill - 2 * kB);
                     const auto t0 = Clock::now();
                     std::memcpy(fixed, obs.get() + contiguous_at * kRow, batch_bytes);
                     return secs(t0, Clock::now());
                   }, batch_bytes, {}, {}});
  cases.push_back({"gather_batch, pool block (incl. acquire/release)", [&] {
                     draw();
                     const auto t0 = Clock::now();
                     auto* p = static_cast<std::uint8_t*>(pool->acquire(batch_bytes + 1024));
                     std::uint8_t* outs[2] = {p + 1024, p + 1024 + kB * kRow};
                     gather_batch(cols, 2, idx.data(), kB, outs);
                     pool->release(p, batch_bytes + 1024);
                     return secs(t0, Clock::now());
                   }, batch_bytes, {}, {}});
  cases.push_back({"plain memcpy per row, fixed dst", [&] {
                     draw();
                     const auto t0 = Clock::now();
                     for (std::size_t f = 0; f < 2; ++f)
                       for (std::size_t i = 0; i < kB; ++i)
                         std::memcpy(fixed + (f * kB + i) * kRow, cols[f].base + idx[i] * kRow, kRow);
                     return secs(t0, Clock::now());
                   }, batch_bytes, {}, {}});
  auto variant = [&](std::string name, std::function<void(const std::uint8_t*, std::uint8_t*)> fn) {
    cases.push_back({name, [&, fn] {
                       draw();
                       const auto t0 = Clock::now();
                       for (std::size_t f = 0; f < 2; ++f) fn(cols[f].base, fixed + f * kB * kRow);
                       return secs(t0, Clock::now());
                     }, batch_bytes, {}, {}});
  };
  variant("before: rows one by one, 4 KiB blocks, prefetch 8 KiB", [&](const std::uint8_t* b, std::uint8_t* o) {
    image_bench::rows_one_by_one(b, kRow, idx.data(), kB, o);
  });
  variant("copy_rows (shipped)", [&](const std::uint8_t* b, std::uint8_t* o) {
    detail::copy_rows(b, kRow, kRow, idx.data(), kB, o);
  });
  cases.push_back({"gather_batch, fixed dst (after copy_rows)", [&] {
                     draw();
                     return gather_into(fixed, gather_batch);
                   }, batch_bytes, {}, {}});
  auto huge_dst = allocate_zeroed(std::size_t(4) << 20);  // mmap + MADV_HUGEPAGE, as pool.h could do for batches
  std::memset(huge_dst.get(), 0, std::size_t(4) << 20);
  cases.push_back({"gather_batch, huge-page dst", [&] {
                     draw();
                     return gather_into(huge_dst.get(), gather_batch);
                   }, batch_bytes, {}, {}});
  // Upper bound of copying with two threads: a helper thread (spinning, for this measurement only) copies obs while
  // the caller copies next_obs.
  std::atomic<int> job{0};
  std::atomic<bool> quit{false};
  std::thread helper;
  if (two_threads) helper = std::thread([&] {
    while (!quit.load(std::memory_order_relaxed)) {
      if (job.load(std::memory_order_acquire) == 1) {
        detail::copy_rows(cols[0].base, kRow, kRow, idx.data(), kB, fixed);
        job.store(2, std::memory_order_release);
      }
    }
  });
  if (two_threads)
  cases.push_back({"2 threads (spinning helper copies obs)", [&] {
                     draw();
                     const auto t0 = Clock::now();
                     job.store(1, std::memory_order_release);
                     detail::copy_rows(cols[1].base, kRow, kRow, idx.data(), kB, fixed + kB * kRow);
                     while (job.load(std::memory_order_acquire) != 2) {
                     }
                     job.store(0, std::memory_order_relaxed);
                     return secs(t0, Clock::now());
                   }, batch_bytes, {}, {}});
  if (sweep)
  for (std::size_t k : {1, 2, 4, 8})
    for (std::size_t pf : {0, 512, 1024, 2048, 4096})
      variant("copy_rows_streams " + std::to_string(k) + " prefetch " + std::to_string(pf),
              [&, k, pf](const std::uint8_t* b, std::uint8_t* o) {
        detail::copy_rows_streams(b, kRow, kRow, idx.data(), kB, o, k, pf);
      });
  cases.push_back({"touch-only: read the rows (sum), no store", [&] {
                     draw();
                     const auto t0 = Clock::now();
                     std::uint64_t s = 0;
                     for (std::size_t f = 0; f < 2; ++f)
                       for (std::size_t i = 0; i < kB; ++i) {
                         const auto* p = reinterpret_cast<const std::uint64_t*>(cols[f].base + idx[i] * kRow);
                         for (std::size_t k = 0; k < kRow / 8; k += 8) s += p[k];
                       }
                     asm volatile("" ::"r"(s));
                     return secs(t0, Clock::now());
                   }, batch_bytes, {}, {}});

  for (int r = 0; r < rounds + 2; ++r) {
    // Each round starts at another case: the case run right after the 512 MiB memcpy is slowed by its aftermath
    // (~4%), which must not always hit the same one.
    std::vector<double> gbs(cases.size());
    for (std::size_t q = 0; q < cases.size(); ++q) {
      const std::size_t ci = (q + static_cast<std::size_t>(r)) % cases.size();
      Case& c = cases[ci];
      // several calls per case per round (the small ones are ~150 us); the median call counts
      std::vector<double> t;
      const int reps = c.bytes == big ? 1 : 15;
      for (int k = 0; k < reps; ++k) t.push_back(c.run());
      std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
      gbs[ci] = c.bytes / t[t.size() / 2] / 1e9;
    }
    if (r >= 2)  // warmup
      for (std::size_t ci = 0; ci < cases.size(); ++ci) {
        cases[ci].gbs.push_back(gbs[ci]);
        cases[ci].ratio.push_back(gbs[ci] / gbs[0]);
      }
  }
  quit = true;
  if (helper.joinable()) helper.join();
  if (FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {  // whether the columns got huge pages
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (!std::strncmp(line, "AnonHugePages", 13)) std::printf("%s", line);
    std::fclose(f);
  }
  auto med = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("%-55s %9s %9s\n", "case", "GB/s", "/memcpy");
  for (auto& c : cases) std::printf("%-55s %9.2f %8.1f%%\n", c.name.c_str(), med(c.gbs), 100 * med(c.ratio));
}
