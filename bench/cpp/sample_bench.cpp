// Microbenchmark of ReplayCore::sample with CartPole rows (obs f32[4], action i64, reward f32, next_obs f32[4], done
// bool; 45 bytes), packed into 64-byte records (Layout::Auto) and column by column (Layout::Columnar), and where its
// time goes: drawing 256 indices, gathering their rows, reading their generations (alone, after the gather; the
// core reads them with the rows); against a plain copy of the same bytes. Buffer full, B = 256.
//
//   g++ -O2 -std=c++17 -I csrc bench/cpp/sample_bench.cpp -o /tmp/sample_bench -lpthread && /tmp/sample_bench
//   (optionally capacities as arguments: /tmp/sample_bench 1e4 1e6)
// Each figure is the best of 41 repetitions (about 2 ms each) of the mean time per call, in microseconds.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fastreplay/replay.h"

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
  const std::vector<FieldSpec> fields = {{"obs", 16, 4}, {"action", 8, 8}, {"reward", 4, 4}, {"next_obs", 16, 4},
                                         {"done", 1, 1}};
  const std::size_t B = 256, row = 45;
  std::printf("%10s %10s %10s %12s %10s %10s %10s %10s\n", "capacity", "layout", "sample", "sample+gens", "indices",
              "gather", "gens", "copy");
  for (std::size_t cap : caps) {
    for (Layout layout : {Layout::Auto, Layout::Columnar}) {
      ReplayCore core(cap, fields, 1, {}, nullptr, nullptr, layout);
      std::vector<std::uint8_t> src[5];
      const void* ptrs[5];
      for (std::size_t f = 0; f < 5; ++f) {
        src[f].assign(cap * fields[f].row_bytes, static_cast<std::uint8_t>(f + 1));
        ptrs[f] = src[f].data();
      }
      core.add(ptrs, cap);
      std::vector<std::int64_t> idx(B);
      std::vector<std::uint64_t> gens(B);
      std::vector<std::uint8_t> out[5];
      std::uint8_t* rows[5];
      for (std::size_t f = 0; f < 5; ++f) {
        out[f].resize(B * fields[f].row_bytes);
        rows[f] = out[f].data();
      }
      const std::vector<ColumnRef> refs = column_refs([&] {
        std::vector<Column> c;
        for (std::size_t f = 0; f < 5; ++f) c.push_back(core.column(f));
        return c;
      }());
      std::uint64_t stream = 0;
      // as the bindings call it for a uniform batch (no generations); with them, as get() and prioritized do
      const double t_sample = best_us([&] { core.sample(B, idx.data(), nullptr, rows); });
      const double t_sample_gens = best_us([&] { core.sample(B, idx.data(), gens.data(), rows); });
      const double t_idx = best_us([&] {
        Rng rng(1, stream++);
        for (std::size_t i = 0; i < B; ++i) idx[i] = static_cast<std::int64_t>(rng.bounded(cap));
        __asm__ volatile("" : : "r"(idx.data()) : "memory");
      });
      const double t_gather = best_us([&] {
        Rng rng(1, stream++);
        for (std::size_t i = 0; i < B; ++i) idx[i] = static_cast<std::int64_t>(rng.bounded(cap));
        gather_batch(refs.data(), refs.size(), idx.data(), B, rows);
        __asm__ volatile("" : : "r"(rows[0]) : "memory");
      }) - t_idx;
      const double t_gens = best_us([&] {
        Rng rng(1, stream++);
        for (std::size_t i = 0; i < B; ++i) idx[i] = static_cast<std::int64_t>(rng.bounded(cap));
        for (std::size_t i = 0; i < B; ++i) gens[i] = core.ring().generation(static_cast<std::size_t>(idx[i]));
        __asm__ volatile("" : : "r"(gens.data()) : "memory");
      }) - t_idx;
      std::vector<std::uint8_t> a(B * row, 1), b(B * row);
      const double t_copy = best_us([&] {
        std::memcpy(b.data(), a.data(), a.size());
        __asm__ volatile("" : : "r"(b.data()) : "memory");
      });
      std::printf("%10zu %10s %10.2f %12.2f %10.2f %10.2f %10.2f %10.2f\n", cap,
                  layout == Layout::Auto ? "packed" : "columnar", t_sample, t_sample_gens, t_idx, t_gather, t_gens, t_copy);
    }
  }
  return 0;
}
