// Microbenchmark of PrioritizedCore: sample(256) and update_priorities(256), alone and as the training loop does
// them (sample, then update the drawn rows), at several capacities. The tree alone is in tree_bench.cpp.
//
//   g++ -O2 -std=c++17 -I csrc bench/cpp/per_bench.cpp -o /tmp/per_bench -lpthread && /tmp/per_bench
//   (optionally capacities as arguments: /tmp/per_bench 1e4 1e6; for the old tree, add -I /tmp/old before -I csrc
//   as explained in tree_bench.cpp)
// Each figure is the best of 41 repetitions (about 2 ms each) of the mean time per call, in microseconds.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fastreplay/prioritized.h"

using namespace fastreplay;

template <class F>
static double best_us(F&& fn) {
  std::size_t iters = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) fn();
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > 0.002) break;
    iters *= 2;
  }
  double best = 1e30;
  for (int rep = 0; rep < 41; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) fn();
    best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                              static_cast<double>(iters));
  }
  return best;
}

int main(int argc, char** argv) {
  std::vector<std::size_t> caps = {10000, 100000, 1000000};
  if (argc > 1) {
    caps.clear();
    for (int a = 1; a < argc; ++a) caps.push_back(static_cast<std::size_t>(std::atof(argv[a])));
  }
  std::printf("%-9s %10s %10s %14s\n", "capacity", "sample 256", "update 256", "sample+update");
  for (const std::size_t cap : caps) {
    PrioritizedCore c(cap, {{"obs", 16}}, 1, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime);
    std::vector<float> data(cap * 4, 1.f);
    const void* src[1] = {data.data()};
    c.add(src, cap);
    std::vector<std::int64_t> all(cap);
    std::vector<double> pr(cap);
    Rng r(3);
    for (std::size_t i = 0; i < cap; i++) all[i] = static_cast<std::int64_t>(i), pr[i] = r.uniform();
    c.update_priorities(all.data(), pr.data(), cap, nullptr, false);
    const std::size_t B = 256;
    std::vector<std::int64_t> idx(B);
    std::vector<float> w(B);
    std::vector<std::uint64_t> g(B);
    std::vector<std::uint8_t> out(B * 16);
    std::uint8_t* o[1] = {out.data()};
    std::vector<double> td(B);
    for (auto& t : td) t = r.uniform();
    const double sample = best_us([&] { c.sample(B, 0.4, idx.data(), w.data(), g.data(), o); });
    const double update = best_us([&] { c.update_priorities(idx.data(), td.data(), B, g.data(), false); });
    const double loop = best_us([&] {
      c.sample(B, 0.4, idx.data(), w.data(), g.data(), o);
      c.update_priorities(idx.data(), td.data(), B, g.data(), false);
    });
    std::printf("%-9zu %10.2f %10.2f %14.2f\n", cap, sample, update, loop);
  }
}
