// Randomised check of SumMinTree against a brute-force reference (a vector of leaves, cumsum + searchsorted).
//
// CI builds it with CMake (-DFASTREPLAY_TESTS=ON) and runs `tree_check quick` under ThreadSanitizer, under
// AddressSanitizer + UBSan, and with the scalar line kernels (-DFASTREPLAY_NO_SIMD=ON). By hand:
//   g++ -O2 -std=c++17 -Wall -Wextra -Wold-style-cast -Werror -UNDEBUG -I csrc tests/cpp/tree_check.cpp -o /tmp/tree_check -lpthread
//   /tmp/tree_check            # full run, including 10^7 single updates at capacity 10^6
//   /tmp/tree_check quick      # smaller long-run part (for sanitizer builds)
// Add -DFASTREPLAY_NO_SIMD to check the portable scalar kernels instead of SSE2.
//
// Reference semantics of find_prefix(u): the first slot whose inclusive prefix sum exceeds u (numpy's
// searchsorted(cumsum(leaves), u, side='right')), moved forward to the next positive leaf if it is empty; when
// u >= total, the last positive leaf. With integer leaves every sum is exact in double, so the tree must agree
// exactly, including for u on a boundary and u next to runs of zero leaves. With arbitrary real leaves the tree
// and the reference round differently, so the tree's answer must lie between the reference's answers for
// u -/+ a tolerance, and must be a positive leaf.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "fastreplay/rng.h"
#include "fastreplay/sum_min_tree.h"

using fastreplay::Rng;
using fastreplay::SumMinTree;

namespace {

int g_failures = 0;

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      if (++g_failures <= 20) {                                           \
        std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
        std::printf(__VA_ARGS__);                                         \
        std::printf("\n");                                                \
      }                                                                   \
    }                                                                     \
  } while (0)

constexpr double kInf = std::numeric_limits<double>::infinity();

// Seconds since the previous call (the first call starts the clock), for the run's log.
double lap() {
  static auto t = std::chrono::steady_clock::now();
  const auto now = std::chrono::steady_clock::now();
  const double s = std::chrono::duration<double>(now - t).count();
  t = now;
  return s;
}

struct Reference {
  std::vector<double> leaves;
  explicit Reference(std::size_t n) : leaves(n, 0.0) {}

  long double exact_sum() const {
    long double s = 0;
    for (double v : leaves) s += v;
    return s;
  }
  // The root as the contract fixes it, bit for bit: each line of 8 (zero-padded) summed as
  // (((c0 + c1) + (c2 + c3)) + (c4 + c5)) + (c6 + c7), level by level up to a single value.
  double fixed_root() const {
    std::vector<double> level = leaves;
    do {
      std::vector<double> up((level.size() + 7) / 8);
      level.resize(8 * up.size(), 0.0);
      for (std::size_t x = 0; x < up.size(); ++x) {
        const double* c = level.data() + 8 * x;
        up[x] = (((c[0] + c[1]) + (c[2] + c[3])) + (c[4] + c[5])) + (c[6] + c[7]);
      }
      level.swap(up);
    } while (level.size() > 1);
    return level[0];
  }
  double min_positive() const {
    double m = kInf;
    for (double v : leaves)
      if (v > 0.0) m = std::min(m, v);
    return m;
  }
  // cumsum in long double (exact for the integer tests), then searchsorted side='right'.
  std::vector<long double> cumsum() const {
    std::vector<long double> c(leaves.size());
    long double s = 0;
    for (std::size_t i = 0; i < leaves.size(); ++i) c[i] = s += leaves[i];
    return c;
  }
  std::int64_t find(const std::vector<long double>& cum, long double u) const {
    std::size_t i = static_cast<std::size_t>(std::upper_bound(cum.begin(), cum.end(), u) - cum.begin());
    while (i < leaves.size() && !(leaves[i] > 0.0)) ++i;  // skip to the next positive leaf
    if (i == leaves.size()) {                              // past the end: the last positive leaf
      i = leaves.size() - 1;
      while (i > 0 && !(leaves[i] > 0.0)) --i;
    }
    return static_cast<std::int64_t>(i);
  }
};

// Leaf values: exact integers (all sums exact), few distinct integers (ties: many leaves of a block share its min,
// which the tree counts), or reals spanning many orders of magnitude; about 30% zeros.
enum class Values { Exact, Ties, Real };
double draw_value(Rng& rng, Values kind) {
  if (rng.uniform() < 0.3) return 0.0;
  if (kind == Values::Ties) return static_cast<double>(1 + rng.bounded(3));
  if (kind == Values::Exact) return static_cast<double>(1 + rng.bounded(1000));
  return std::exp(rng.uniform() * 30.0 - 20.0);
}

void check_tree(const SumMinTree& tree, const Reference& ref, bool exact, Rng& rng, const char* where) {
  const std::size_t cap = ref.leaves.size();
  for (std::size_t i = 0; i < cap; ++i) CHECK(tree.leaf(i) == ref.leaves[i], "%s: leaf %zu", where, i);
  const long double sum = ref.exact_sum();
  const double total = tree.total();
  CHECK(std::fabs(static_cast<long double>(total) - sum) <= 1e-12L * sum, "%s: total %.17g vs %.17Lg (cap %zu)",
        where, total, sum, cap);
  if (exact) CHECK(static_cast<long double>(total) == sum, "%s: exact total %.17g vs %.17Lg", where, total, sum);
  CHECK(total == ref.fixed_root(), "%s: total %.17g, but the contract's summation order gives %.17g", where, total,
        ref.fixed_root());
  CHECK(tree.min() == ref.min_positive(), "%s: min %.17g vs %.17g", where, tree.min(), ref.min_positive());
  // Every inner sum and min, not only the root: set_many skips the mins that did not change, so a wrong skip
  // could hide below a root that happens to be right.
  CHECK(tree.consistent(), "%s: an inner sum or min differs from its line (cap %zu)", where, cap);
  if (!(sum > 0)) return;

  // Queries: 0, the largest double below total, total and beyond (clamped), random points, exact boundaries
  // cum[i] (which sit at the start of runs of zero leaves) and their neighbours.
  const std::vector<long double> cum = ref.cumsum();
  std::vector<double> us = {0.0, std::nextafter(total, 0.0), total, total * 1.5};
  for (int q = 0; q < 200; ++q) us.push_back(rng.uniform() * total);
  for (int q = 0; q < 100; ++q) {
    const double b = static_cast<double>(cum[rng.bounded(cap)]);
    us.push_back(b);
    us.push_back(std::nextafter(b, 0.0));
    us.push_back(std::nextafter(b, kInf));
  }
  const long double tol = exact ? 0.0L : 1e-12L * sum;
  std::vector<double> batch;
  std::vector<std::int64_t> single;
  for (double u : us) {
    if (!(u >= 0.0)) continue;
    const std::int64_t got = tree.find_prefix(u);
    batch.push_back(u);
    single.push_back(got);
    CHECK(got >= 0 && static_cast<std::size_t>(got) < cap, "%s: find_prefix(%.17g) = %lld outside [0, %zu)", where,
          u, static_cast<long long>(got), cap);
    if (got < 0 || static_cast<std::size_t>(got) >= cap) continue;
    CHECK(ref.leaves[static_cast<std::size_t>(got)] > 0.0, "%s: find_prefix(%.17g) = %lld, a zero leaf", where, u,
          static_cast<long long>(got));
    // u >= total (which rounding can produce in sample()) acts as u = total: it may end on the last leaf whose
    // mass is visible in the tree's running sums rather than on a later, tinier one.
    const std::int64_t lo = ref.find(cum, static_cast<long double>(std::min(u, total)) - tol);
    const std::int64_t hi = ref.find(cum, static_cast<long double>(u) + tol);
    CHECK(lo <= got && got <= hi, "%s: find_prefix(%.17g) = %lld, reference [%lld, %lld] (cap %zu, total %.17g)",
          where, u, static_cast<long long>(got), static_cast<long long>(lo), static_cast<long long>(hi), cap, total);
  }
  // The batched descent agrees with the single one, query by query (and consumes u).
  std::vector<std::int64_t> out(batch.size());
  std::vector<std::size_t> nodes(batch.size());
  tree.find_prefix_many(batch.data(), batch.size(), out.data(), nodes.data());
  for (std::size_t k = 0; k < out.size(); ++k)
    CHECK(out[k] == single[k], "%s: find_prefix_many[%zu] = %lld, find_prefix = %lld", where, k,
          static_cast<long long>(out[k]), static_cast<long long>(single[k]));
}

// A random sequence of `ops` operations on a tree of the given capacity, checking after each.
void run_sequence(std::size_t cap, Values kind, int ops, Rng& rng) {
  SumMinTree tree(cap);
  Reference ref(cap);
  const bool exact = kind != Values::Real;
  char where[96];
  std::snprintf(where, sizeof where, "cap %zu %s", cap,
                kind == Values::Exact ? "exact" : kind == Values::Ties ? "ties" : "real");
  check_tree(tree, ref, exact, rng, where);  // empty: total 0, min +inf
  std::vector<std::size_t> scratch;
  for (int op = 0; op < ops; ++op) {
    switch (rng.bounded(6)) {
      case 0: {  // single sets
        for (int r = 0; r < 5; ++r) {
          const std::size_t s = rng.bounded(cap);
          const double v = draw_value(rng, kind);
          tree.set(s, v);
          ref.leaves[s] = v;
        }
        break;
      }
      case 1:
      case 2: {  // set_many with duplicates (slots drawn from a small range half the time); the last one wins
        const std::size_t n = 1 + rng.bounded(2 * cap + 300);
        const std::size_t range = rng.bounded(2) ? cap : std::min<std::size_t>(cap, 1 + rng.bounded(16));
        std::vector<std::int64_t> slots(n);
        std::vector<double> values(n);
        for (std::size_t k = 0; k < n; ++k) {
          slots[k] = static_cast<std::int64_t>(rng.bounded(range));
          values[k] = draw_value(rng, kind);
        }
        if (rng.bounded(2)) std::sort(slots.begin(), slots.end());  // sorted input skips the sort
        for (std::size_t k = 0; k < n; ++k) ref.leaves[static_cast<std::size_t>(slots[k])] = values[k];
        tree.set_many(slots.data(), values.data(), n, scratch);
        tree.set_many(slots.data(), values.data(), 0, scratch);  // an empty batch changes nothing
        break;
      }
      case 3: {  // set_range, including empty and full ranges
        std::size_t lo = rng.bounded(cap + 1), hi = rng.bounded(cap + 1);
        if (lo > hi) std::swap(lo, hi);
        if (rng.bounded(4) == 0) lo = 0, hi = cap;
        const double v = draw_value(rng, kind);
        tree.set_range(lo, hi, v);
        for (std::size_t s = lo; s < hi; ++s) ref.leaves[s] = v;
        break;
      }
      case 4: {  // set_leaf_only for many leaves, then rebuild
        const std::size_t n = rng.bounded(cap + 1);
        for (std::size_t k = 0; k < n; ++k) {
          const std::size_t s = rng.bounded(cap);
          const double v = draw_value(rng, kind);
          tree.set_leaf_only(s, v);
          ref.leaves[s] = v;
        }
        tree.rebuild();
        break;
      }
      case 5: {  // occasionally reset; otherwise zero out a random half of the leaves one by one
        if (rng.bounded(5) == 0) {
          tree.reset();
          std::fill(ref.leaves.begin(), ref.leaves.end(), 0.0);
        } else {
          for (std::size_t s = 0; s < cap; ++s)
            if (rng.bounded(2)) {
              tree.set(s, 0.0);
              ref.leaves[s] = 0.0;
            }
        }
        break;
      }
    }
    check_tree(tree, ref, exact, rng, where);
  }
}

// A single positive leaf among zeros, at every position: every query must land on it.
void check_lone_leaf(std::size_t cap) {
  SumMinTree tree(cap);
  for (std::size_t s = 0; s < cap; ++s) {
    tree.set(s, 0.5);
    const double total = tree.total();
    for (double u : {0.0, 0.25, std::nextafter(total, 0.0), total, 7.0})
      CHECK(tree.find_prefix(u) == static_cast<std::int64_t>(s), "lone leaf %zu of %zu, u %g: got %lld", s, cap, u,
            static_cast<long long>(tree.find_prefix(u)));
    CHECK(tree.min() == 0.5 && total == 0.5, "lone leaf %zu of %zu: min %g total %g", s, cap, tree.min(), total);
    tree.set(s, 0.0);
    CHECK(tree.total() == 0.0 && tree.min() == kInf, "lone leaf %zu of %zu cleared", s, cap);
  }
}

// Tiny leaves next to huge ones: a child whose mass is lost to rounding in its parent's running sum must not
// make the descent step onto a zero leaf.
void check_tiny_leaves(Rng& rng) {
  for (std::size_t cap : {9, 64, 100, 4097}) {
    SumMinTree tree(cap);
    Reference ref(cap);
    for (std::size_t s = 0; s < cap; ++s) {
      const std::uint64_t kind = rng.bounded(3);
      ref.leaves[s] = kind == 0 ? 0.0 : kind == 1 ? 1e18 : 1e-18;
      tree.set(s, ref.leaves[s]);
    }
    check_tree(tree, ref, false, rng, "tiny leaves");
  }
}

// After many single updates, the root must still equal the sum of the current leaves (no drift).
void check_long_run(std::size_t cap, std::size_t updates) {
  SumMinTree tree(cap);
  Rng rng(7);
  for (std::size_t i = 0; i < updates; ++i) tree.set(rng.bounded(cap), std::pow(rng.uniform(), 0.6) * 10.0);
  long double sum = 0;
  for (std::size_t s = 0; s < cap; ++s) sum += tree.leaf(s);
  const double rel = static_cast<double>(std::fabs(static_cast<long double>(tree.total()) - sum) / sum);
  std::printf("  long run: capacity %zu, %zu single updates: |root - sum| / sum = %.3g (%.1f s)\n", cap, updates, rel,
              lap());
  CHECK(rel <= 1e-9, "long run: relative error %.3g", rel);
  double m = kInf;
  for (std::size_t s = 0; s < cap; ++s)
    if (tree.leaf(s) > 0.0) m = std::min(m, tree.leaf(s));
  CHECK(tree.min() == m, "long run: min %.17g vs %.17g", tree.min(), m);
}

// One writer updates while readers descend (run under -fsanitize=thread too): every answer must be a real
// slot, and once the writer stops the tree must be consistent again.
void check_concurrent() {
  const std::size_t cap = 5000;
  SumMinTree tree(cap);
  for (std::size_t s = 0; s < cap; ++s) tree.set(s, 1.0);
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> bad{0}, queries{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      Rng rng(100 + static_cast<std::uint64_t>(r));
      std::vector<double> u(64);
      std::vector<std::int64_t> out(64);
      std::vector<std::size_t> nodes(64);
      while (!stop.load()) {
        const double total = tree.total();
        for (std::size_t k = 0; k < 64; ++k) u[k] = (static_cast<double>(k) + rng.uniform()) * total / 64.0;
        tree.find_prefix_many(u.data(), 64, out.data(), nodes.data());
        for (std::size_t k = 0; k < 64; ++k) bad += out[k] < 0 || static_cast<std::size_t>(out[k]) >= cap;
        bad += static_cast<std::size_t>(tree.find_prefix(rng.uniform() * total)) >= cap;
        queries += 65;
      }
    });
  }
  Rng rng(5);
  std::vector<std::size_t> scratch;
  std::vector<std::int64_t> slots(128);
  std::vector<double> values(128);
  // At least 2000 batches, and on until the readers have run (a loaded machine may not schedule them at once).
  std::size_t batches = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (; batches < 2000 || (queries.load() < 100000 && std::chrono::steady_clock::now() < deadline); ++batches) {
    for (std::size_t k = 0; k < 128; ++k) {
      slots[k] = static_cast<std::int64_t>(rng.bounded(cap));
      values[k] = rng.bounded(3) ? rng.uniform() : 0.0;
    }
    tree.set_many(slots.data(), values.data(), 128, scratch);
    tree.set(rng.bounded(cap), rng.uniform());
  }
  stop = true;
  for (auto& t : readers) t.join();
  std::printf("  concurrent: %zu queries during %zu batched updates, %zu outside [0, capacity) (%.1f s)\n",
              queries.load(), batches, bad.load(), lap());
  CHECK(bad.load() == 0, "concurrent: %zu answers outside [0, capacity)", bad.load());
  CHECK(queries.load() > 0, "concurrent: the readers never ran");
  long double sum = 0;
  for (std::size_t s = 0; s < cap; ++s) sum += tree.leaf(s);
  CHECK(std::fabs(static_cast<long double>(tree.total()) - sum) <= 1e-12L * sum, "concurrent: total");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "quick") == 0;
  std::printf("tree_check: %s line kernels%s\n", fastreplay::detail::line::kName, quick ? ", quick" : "");
  lap();
  Rng rng(2024);
  std::vector<std::size_t> caps = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 511, 512, 513, 1000, 4096, 4097};
  for (int r = 0; r < 30; ++r) caps.push_back(1 + rng.bounded(r < 20 ? 100 : 5000));
  caps.push_back(70001);   // 6 levels
  caps.push_back(262145);  // 8^6 + 1: a top line with 2 entries
  for (std::size_t cap : caps) {
    // The quick run (sanitizer builds) does fewer operations per tree, fewest on the two large ones.
    const int ops = !quick ? 40 : cap > 10000 ? 4 : 20;
    run_sequence(cap, Values::Exact, ops, rng);
    run_sequence(cap, Values::Ties, ops, rng);
    run_sequence(cap, Values::Real, ops, rng);
  }
  std::printf("  random sequences: %zu capacities, exact, tied and real leaves (%.1f s)\n", caps.size(), lap());
  for (std::size_t cap : {1, 2, 3, 8, 9, 65, 100}) check_lone_leaf(cap);
  check_tiny_leaves(rng);
  std::printf("  lone and tiny leaves (%.1f s)\n", lap());
  check_concurrent();
  check_long_run(1000000, quick ? 1000000 : 10000000);
  if (g_failures) {
    std::printf("tree_check: %d failures\n", g_failures);
    return 1;
  }
  std::printf("tree_check: all passed\n");
  return 0;
}
