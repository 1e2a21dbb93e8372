// Microbenchmark of PrioritizedCore: sample(256) and update_priorities(256), alone and as the training loop does
// them (sample, then update the drawn rows), at several capacities, on CartPole rows (obs float32[4], action
// int64, reward float32, next_obs float32[4], done bool). The tree alone is in tree_bench.cpp.
//
//   g++ -O2 -std=c++17 -I csrc bench/cpp/per_bench.cpp -o /tmp/per_bench -lpthread && /tmp/per_bench
//   (optionally capacities as arguments: /tmp/per_bench 1e4 1e6; --json: the stages of the loop at the first
//   capacity as JSON, for bench/scripts/bench_per.py)
// Each figure is the best of 41 repetitions (about 2 ms each) of the mean time per call, in microseconds.
//
// Stages (each timed alone, on batches drawn by the real sample, so the same rows and tree paths are touched):
//   descent     SumMinTree::find_prefix_many of 256 stratified points
//   gather      ReplayCore::get of the drawn rows without generations (bounds check, copy of the indices, gather)
//   generations the 256 generations read from the ring (one random read each)
//   weights     the 256 weights (p_min / p_i)^beta (WeightPower::many; before it, one powf each)
//   sample      the whole PrioritizedCore::sample
//   leaf pow    the 256 leaves (p + eps)^alpha of an update (LeafPower::many; before it, one std::pow each)
//   tree update SumMinTree::set_many of 256 leaves (a copy of the tree)
//   update      the whole PrioritizedCore::update_priorities (with generations)
//   loop        sample then update the drawn rows
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "fastreplay/prioritized.h"

#include "timing.h"

using namespace fastreplay;

// (name, row bytes): also builds against the headers of commits before FieldSpec had an alignment (bench_per --before)
static const std::vector<FieldSpec> kFields = {{"obs", 16}, {"action", 8}, {"reward", 4}, {"next_obs", 16}, {"done", 1}};

int main(int argc, char** argv) {
  std::vector<std::size_t> caps;
  bool json = false;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--json") == 0)
      json = true;
    else
      caps.push_back(static_cast<std::size_t>(std::atof(argv[a])));
  }
  if (caps.empty()) caps = {10000, 100000, 1000000};
  if (json) caps.resize(1);
  if (!json) std::printf("%-9s %10s %10s %14s\n", "capacity", "sample 256", "update 256", "sample+update");
  for (const std::size_t cap : caps) {
    const double alpha = 0.6, eps = 1e-6, beta = 0.4;
    PrioritizedCore c(cap, kFields, 1, alpha, eps, PrioritizedCore::MaxMode::AllTime);
    std::vector<std::uint8_t> data(cap * 16, 1);
    const void* src[5] = {data.data(), data.data(), data.data(), data.data(), data.data()};
    c.add(src, cap);
    std::vector<std::int64_t> all(cap);
    std::vector<double> pr(cap);
    Rng r(3);
    for (std::size_t i = 0; i < cap; i++) all[i] = static_cast<std::int64_t>(i), pr[i] = r.uniform();
    c.update_priorities(all.data(), pr.data(), cap, nullptr, false);
    const std::size_t B = 256, kPool = 2048;
    std::vector<std::int64_t> idx(B);
    std::vector<float> w(B);
    std::vector<std::uint64_t> g(B);
    std::vector<std::vector<std::uint8_t>> outs;
    std::vector<std::uint8_t*> o;
    for (const FieldSpec& f : kFields) outs.emplace_back(B * f.row_bytes);
    for (auto& v : outs) o.push_back(v.data());
    std::vector<double> td(B);
    for (auto& t : td) t = r.uniform();
    // A pool of batches drawn by the real sampler: the stages replay them in turn (2048 of them: more than the caches hold).
    std::vector<std::int64_t> pool_idx(kPool * B);
    std::vector<std::uint64_t> pool_gen(kPool * B);
    for (std::size_t p = 0; p < kPool; ++p) c.sample(B, beta, &pool_idx[p * B], w.data(), &pool_gen[p * B], o.data());
    std::size_t it = 0;
    const double sample = best_us([&] { c.sample(B, beta, idx.data(), w.data(), g.data(), o.data()); });
    const double update = best_us([&] {
      const std::size_t p = it++ % kPool;
      c.update_priorities(&pool_idx[p * B], td.data(), B, &pool_gen[p * B], false);
    });
    const double loop = best_us([&] {
      c.sample(B, beta, idx.data(), w.data(), g.data(), o.data());
      c.update_priorities(idx.data(), td.data(), B, g.data(), false);
    });
    if (!json) {
      std::printf("%-9zu %10.2f %10.2f %14.2f\n", cap, sample, update, loop);
      continue;
    }
    // Stages.
    std::vector<double> u(B);
    std::vector<std::size_t> nodes(B);
    Rng ur(5);
    const double descent = best_us([&] {
      const double seg = c.tree().total() / static_cast<double>(B);
      for (std::size_t k = 0; k < B; ++k) u[k] = (static_cast<double>(k) + ur.uniform()) * seg;
      c.tree().find_prefix_many(u.data(), B, idx.data(), nodes.data());
    });
    const double gather = best_us([&] { c.get(&pool_idx[(it++ % kPool) * B], B, nullptr, o.data()); });
    const double gens = best_us([&] {
      const std::int64_t* ix = &pool_idx[(it++ % kPool) * B];
      for (std::size_t k = 0; k < B; ++k) g[k] = c.ring().generation(static_cast<std::size_t>(ix[k]));
    });
#if defined(FASTREPLAY_POW_MANY)  // the batched powers (powers.h), as sample and update_priorities take them
    std::vector<double> ratio(B);
    const double weights = best_us([&] {
      const std::int64_t* ix = &pool_idx[(it++ % kPool) * B];
      const double pmin = c.tree().min();
      for (std::size_t k = 0; k < B; ++k) ratio[k] = pmin / c.tree().leaf(static_cast<std::size_t>(ix[k]));
      WeightPower(beta).many(ratio.data(), w.data(), B);
    });
    std::vector<double> leaves(B);
    const LeafPower leaf_power(alpha);
    const double leaf_pow = best_us([&] {
      for (std::size_t k = 0; k < B; ++k) leaves[k] = td[k] + eps + 1e-9 * static_cast<double>(it & 7);
      leaf_power.many(leaves.data(), B);
      ++it;
    });
#else  // earlier commits: one powf / std::pow per value
    const double weights = best_us([&] {
      const std::int64_t* ix = &pool_idx[(it++ % kPool) * B];
      const double pmin = c.tree().min();
      for (std::size_t k = 0; k < B; ++k)
        w[k] = std::pow(static_cast<float>(pmin / c.tree().leaf(static_cast<std::size_t>(ix[k]))), static_cast<float>(beta));
    });
    std::vector<double> leaves(B);
    const double leaf_pow = best_us([&] {
      for (std::size_t k = 0; k < B; ++k) leaves[k] = std::pow(td[k] + eps + 1e-9 * static_cast<double>(it & 7), alpha);
      ++it;
    });
#endif
    SumMinTree copy(cap);
    {
      for (std::size_t s = 0; s < cap; ++s) copy.set_leaf_only(s, c.tree().leaf(s));
      copy.rebuild();
    }
    std::vector<std::size_t> scratch;
    const double tree_update = best_us([&] { copy.set_many(&pool_idx[(it++ % kPool) * B], leaves.data(), B, scratch); });
    std::printf(
        "{\"capacity\": %zu, \"batch\": %zu, \"stages\": {\"descent\": %.3f, \"gather (get, 5 fields)\": %.3f, "
        "\"generations\": %.3f, \"weights\": %.3f, \"sample (whole)\": %.3f, \"leaf pow (update)\": %.3f, "
        "\"tree update (set_many)\": %.3f, \"update_priorities (whole)\": %.3f, \"loop (sample + update)\": %.3f}}\n",
        cap, B, descent, gather, gens, weights, sample, leaf_pow, tree_update, update, loop);
  }
}
