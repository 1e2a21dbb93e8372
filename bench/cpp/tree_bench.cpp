// Microbenchmark of SumMinTree alone: batched descent, batched update (random slots; and the same slots again, all
// in cache) and the two together, at several capacities.
//
// Build and run (portable flags, as the extension is built):
//   g++ -O2 -std=c++17 -I csrc bench/cpp/tree_bench.cpp -o /tmp/tree_bench && /tmp/tree_bench
// The portable scalar line kernels instead of SSE2: add -DFASTREPLAY_NO_SIMD.
// Against the binary tree it replaced (commit 4bf17d7), for before/after numbers:
//   mkdir -p /tmp/old/fastreplay && git show 4bf17d7:csrc/fastreplay/segment_tree.h |
//     sed 's/SegmentTree/SumMinTree/g; s/MaxTree/OldMaxTree/g' >/tmp/old/fastreplay/sum_min_tree.h
//   g++ -O2 -std=c++17 -I /tmp/old -I csrc bench/cpp/tree_bench.cpp -o /tmp/tree_bench_old && /tmp/tree_bench_old
//
// Every call draws fresh random inputs (cycled from a pool of 64 pre-generated batches, so the generator is not
// timed): a descent's strata are jittered like sample()'s, so consecutive calls walk different paths and large
// trees miss in cache as they would in training. Each figure is the best of 41 repetitions (about 2 ms each) of
// the mean time per call, in microseconds: on a shared machine the best is the one that nobody preempted.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fastreplay/rng.h"
#include "fastreplay/sum_min_tree.h"

using namespace fastreplay;

namespace {

constexpr std::size_t kPool = 64;

template <class F>
double best_us(F&& fn) {
  std::size_t iters = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) fn(i);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.002) break;
    iters *= 2;
  }
  double best = 1e30;
  for (int rep = 0; rep < 41; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) fn(i);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
    best = std::min(best, us);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> caps = {10000, 100000, 1000000};
  if (argc > 1) {
    caps.clear();
    for (int a = 1; a < argc; ++a) caps.push_back(static_cast<std::size_t>(std::atof(argv[a])));
  }
  const std::size_t batches[] = {32, 256, 1024};
  Rng rng(42);
  std::printf("%-9s %10s %10s %10s %12s %12s %12s\n", "capacity", "desc B=32", "desc B=256", "desc B=1024",
              "set_many 256", "set 256 hot", "desc+set 256");
  for (const std::size_t cap : caps) {
    SumMinTree tree(cap);
    {  // random leaves, as PER's (p + eps)^alpha with p uniform
      std::vector<std::int64_t> s(cap);
      std::vector<double> v(cap);
      std::vector<std::size_t> scratch;
      for (std::size_t i = 0; i < cap; ++i) {
        s[i] = static_cast<std::int64_t>(i);
        v[i] = std::pow(rng.uniform() + 1e-6, 0.6);
      }
      tree.set_many(s.data(), v.data(), cap, scratch);
    }
    double desc[3];
    for (int b = 0; b < 3; ++b) {
      const std::size_t n = batches[b];
      std::vector<double> jitter(kPool * n), u(n);
      for (auto& j : jitter) j = rng.uniform();
      std::vector<std::int64_t> idx(n);
      std::vector<std::size_t> nodes(n);
      desc[b] = best_us([&](std::size_t it) {
        const double* j = &jitter[(it % kPool) * n];
        const double seg = tree.total() / static_cast<double>(n);
        for (std::size_t k = 0; k < n; ++k) u[k] = (static_cast<double>(k) + j[k]) * seg;
        tree.find_prefix_many(u.data(), n, idx.data(), nodes.data());
      });
    }
    const std::size_t n = 256;
    std::vector<std::int64_t> slots(kPool * n);
    std::vector<double> vals(kPool * n);
    for (auto& s : slots) s = static_cast<std::int64_t>(rng.bounded(cap));
    for (auto& v : vals) v = std::pow(rng.uniform() + 1e-6, 0.6);
    std::vector<std::size_t> scratch;
    const double upd = best_us([&](std::size_t it) {
      tree.set_many(&slots[(it % kPool) * n], &vals[(it % kPool) * n], n, scratch);
    });
    // The same 256 slots every call (values still cycling): every line in cache, so this is the repair's work
    // alone, without its misses.
    const double hot = best_us([&](std::size_t it) {
      tree.set_many(slots.data(), &vals[(it % kPool) * n], n, scratch);
    });
    // The tree's share of PER's sample + update_priorities loop: descend, then set the drawn slots.
    std::vector<double> jitter(kPool * n), u(n);
    for (auto& j : jitter) j = rng.uniform();
    std::vector<std::int64_t> idx(n);
    std::vector<std::size_t> nodes(n);
    const double loop = best_us([&](std::size_t it) {
      const double* j = &jitter[(it % kPool) * n];
      const double seg = tree.total() / static_cast<double>(n);
      for (std::size_t k = 0; k < n; ++k) u[k] = (static_cast<double>(k) + j[k]) * seg;
      tree.find_prefix_many(u.data(), n, idx.data(), nodes.data());
      tree.set_many(idx.data(), &vals[(it % kPool) * n], n, scratch);
    });
    std::printf("%-9zu %10.2f %10.2f %11.2f %12.2f %12.2f %12.2f\n", cap, desc[0], desc[1], desc[2], upd, hot, loop);
  }
}
