// Sum and min trees over priorities, 8 children per node (one cache line), with a level-synchronous batched descent.
//
// Level 0 holds the leaves (slot i is entry i), 8 to a 64-byte line, the last line padded with zeros. Level l + 1
// holds one entry per line of level l: that line's sum. The top level, depth_, has one entry: the root. Each line
// of the levels in between also has its running sums stored in a second array, for the descent. Capacity 20:
//
//   level 2 (root)    T                                                   T = total() = a + b + c
//   level 1           [ a  b  c  0  0  0  0  0 ]                          running sums: [ a  a+b  T  T  T  T  T  T ]
//   level 0 (leaves)  [ s0 .. s7 ] [ s8 .. s15 ] [ s16 .. s19  0  0  0  0 ]   a = s0 + .. + s7, b = s8 + .. + s15, ...
//
// A min tree of the same shape (levels 1 .. depth_) holds the smallest positive leaf under each entry, +inf if
// none; only its root is read.
//
// Contract:
// - Sums are recomputed from the 8 entries of a line, always in the same order, whenever one of them changes;
//   never by adding a delta, so rounding error cannot accumulate: the root is a fixed function of the current
//   leaves (their sum to ~1e-15 relative), whatever came before.
// - Descent: in a line with running sums p[0..7] (p[7] = the line's sum), go to child j = #{i : p[i] <= t},
//   t = min(u, the largest double below p[7]), and subtract p[j-1] from u. The p[i] never decrease, so child j
//   has p[j] > p[j-1] (or p[j] = p[7] > p[j-1]): its mass is positive. A query therefore goes to a later child
//   only if that child has positive mass, never ends on a zero leaf while the tree is consistent, and never on a
//   padding slot >= capacity, even while a writer is active. u >= total acts as u = total (the last leaf whose
//   mass shows in the sums). With exactly representable sums the answer is numpy's
//   searchsorted(cumsum(leaves), u, side='right').
// - Readers (total, min, leaf, find_prefix*) take no lock: every value is a std::atomic<double> read with relaxed
//   loads, so a reader concurrent with a writer sees each value old or new, never torn. Writers (set*, reset,
//   rebuild) must be serialised by the caller; a writer reads back only values that writers stored.
//
// Costs (N = capacity): a descent reads one cache line per level, ceil(log8 N) of them (7 at N = 1e6, against 20
// levels of a binary tree); set_many repairs each touched line once per level; memory is about 1.43 N doubles.
//
// Measured with bench/cpp/tree_bench.cpp (g++ -O2, portable SSE2 build, 2-vCPU Xeon VM), microseconds per call at
// N = 1e4 / 1e5 / 1e6, against the binary tree of std::atomic<double> that this replaced:
//   find_prefix_many, B = 256      4.2 / 5.3 / 6.4   (before 13 / 18 / 27: its branches mispredict on random u)
//   set_many, 256 random slots     1.8 / 3.4 / 7.7   (before 10 / 16 / 24)
// What the choices bought (same benchmark): SSE2 line kernels, 2x over the portable scalar fallback; stored
// running sums, a 30% faster descent for 10-30% slower set_many (a net gain for sample + update); prefetching the
// next level as soon as a query's child is known, 20-30% of the descent at 1e6 (skipped for levels in L1);
// marking lines instead of sorting the batch, 5-6 us per set_many of random slots; huge pages (through
// allocate_zeroed), 0-10% from 1e6 up. Reading the descent's lines with plain vector loads instead of
// relaxed atomics would be 15% faster but a data race in C++ terms. Software prefetch in set_many and
// interleaving sums with running sums or mins (one 128-byte pair per node) gained nothing.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fastreplay/common.h"
#include "fastreplay/memory.h"

namespace fastreplay {

class SegmentTree {
 public:
  static constexpr std::size_t kFan = 8;  // children per node: 8 doubles, one 64-byte cache line

  explicit SegmentTree(std::size_t capacity) : capacity_(capacity) {
    static_assert(std::atomic<double>::is_always_lock_free, "tree values must be lock-free atomics");
    static_assert(sizeof(std::atomic<double>) == sizeof(double), "tree values are stored as plain doubles");
    std::size_t n = capacity ? capacity : 1;
    entries_[0] = n;
    for (depth_ = 0; depth_ == 0 || n > 1;) entries_[++depth_] = n = lines(n);
    // One block: the sums of every level (leaves first), the running sums of levels 1 .. depth_ - 1, then the
    // mins of levels 1 .. depth_. Every level starts on a cache line.
    std::array<std::size_t, kMaxLevels> sum_at{}, run_at{}, min_at{};
    std::size_t cells = 0;
    for (std::size_t l = 0; l <= depth_; ++l) sum_at[l] = cells, cells += kFan * lines(entries_[l]);
    for (std::size_t l = 1; l < depth_; ++l) run_at[l] = cells, cells += kFan * lines(entries_[l]);
    sum_cells_ = cells;
    for (std::size_t l = 1; l <= depth_; ++l) min_at[l] = cells, cells += kFan * lines(entries_[l]);
    cells_ = cells;
    // Zeroed memory is an array of atomics holding 0.0 (as in Ring); huge pages for large trees.
    memory_ = allocate_zeroed(checked_mul(cells_, sizeof(double)) + kCacheLine);
    const auto addr = reinterpret_cast<std::uintptr_t>(memory_.get());
    cell_ = reinterpret_cast<std::atomic<double>*>((addr + kCacheLine - 1) / kCacheLine * kCacheLine);
    for (std::size_t l = 0; l <= depth_; ++l) sum_[l] = cell_ + sum_at[l];
    for (std::size_t l = 1; l < depth_; ++l) run_[l] = cell_ + run_at[l];
    for (std::size_t l = 1; l <= depth_; ++l) min_[l] = cell_ + min_at[l];
    for (std::size_t i = sum_cells_; i < cells_; ++i) store(cell_[i], kInf);  // +inf is not all-zero bits
    marks_.assign(lines(entries_[0]), 0);
  }
  SegmentTree(const SegmentTree&) = delete;  // would share the values
  SegmentTree& operator=(const SegmentTree&) = delete;
  SegmentTree(SegmentTree&&) = default;
  SegmentTree& operator=(SegmentTree&&) = default;

  std::size_t capacity() const { return capacity_; }
  // Sum of all leaves. O(1)
  double total() const { return load(sum_[depth_][0]); }
  // Smallest positive leaf (+inf if none): zero leaves are never sampled, so they do not bound the weights. O(1)
  double min() const { return load(min_[depth_][0]); }
  double leaf(std::size_t slot) const { return load(sum_[0][slot]); }

  // All leaves empty (sum 0, min +inf). O(capacity)
  void reset() {
    for (std::size_t i = 0; i < cells_; ++i) store(cell_[i], i < sum_cells_ ? 0.0 : kInf);
  }

  // Set one leaf and repair its ancestors. O(log capacity)
  void set(std::size_t slot, double value) {
    store(sum_[0][slot], value);
    std::size_t x = slot / kFan;
    for (std::size_t l = 0; l < depth_; ++l, x /= kFan) repair(l, x);
  }

  // Set leaves slots[k] = values[k] (the last of duplicate slots wins), then repair every touched line exactly
  // once, level by level. The distinct lines are found with one mark byte per leaf line (cleared again before
  // returning), not by sorting. `scratch` is reused to avoid allocation. O(n log capacity)
  void set_many(const std::int64_t* slots, const double* values, std::size_t n, std::vector<std::size_t>& scratch) {
    scratch.resize(n);
    std::size_t* todo = scratch.data();
    std::uint8_t* mark = marks_.data();
    std::size_t m = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const auto slot = static_cast<std::size_t>(slots[k]);
      store(sum_[0][slot], values[k]);
      const std::size_t x = slot / kFan;
      todo[m] = x;  // branch-free: kept (m advances) only if its line is not marked yet
      m += mark[x] ^ 1;
      mark[x] = 1;
    }
    for (std::size_t l = 0; l < depth_; ++l) {
      for (std::size_t k = 0; k < m; ++k) {
        mark[todo[k]] = 0;
        repair(l, todo[k]);
      }
      std::size_t w = 0;
      for (std::size_t k = 0; k < m; ++k) {  // their parents' lines, each once
        const std::size_t p = todo[k] / kFan;
        todo[w] = p;
        w += mark[p] ^ 1;
        mark[p] = 1;
      }
      m = w;
    }
    for (std::size_t k = 0; k < m; ++k) mark[todo[k]] = 0;
  }

  // Set the leaves of slots [lo, hi) to value and repair their ancestors once each. O(n + log capacity)
  void set_range(std::size_t lo, std::size_t hi, double value) {
    if (lo >= hi) return;
    for (std::size_t s = lo; s < hi; ++s) store(sum_[0][s], value);
    std::size_t a = lo / kFan, b = (hi - 1) / kFan;
    for (std::size_t l = 0; l < depth_; ++l, a /= kFan, b /= kFan)
      for (std::size_t x = a; x <= b; ++x) repair(l, x);
  }

  // Set a leaf without repairing its ancestors: follow with rebuild(). O(1)
  void set_leaf_only(std::size_t slot, double value) { store(sum_[0][slot], value); }

  // Rebuild all internal nodes from the leaves. O(capacity)
  void rebuild() {
    for (std::size_t l = 0; l < depth_; ++l)
      for (std::size_t x = 0; x < entries_[l + 1]; ++x) repair(l, x);
  }

  // Stratified batched descent: for each query k, find the slot where the prefix sum reaches u[k] (u[k] in
  // [0, total)). All queries move down one level per step, so their cache misses overlap: as soon as a query's
  // child is known, its line in the next level is prefetched. u[k] is consumed; node[n] is scratch. The clamp to
  // the level's last entry only acts under a concurrent writer, whose half-rewritten running sums could otherwise
  // send a query into the padding. O(n log capacity)
  void find_prefix_many(double* u, std::size_t n, std::int64_t* out_slots, std::size_t* node) const {
    for (std::size_t k = 0; k < n; ++k) node[k] = 0;
    for (std::size_t l = depth_ - 1; l > 0; --l) {
      const std::atomic<double>* sums = run_[l];
      const std::atomic<double>* next = l > 1 ? run_[l - 1] : sum_[0];
      const std::size_t last = entries_[l] - 1;
      if (entries_[l] > kPrefetchLines) {  // the next level has entries_[l] lines
        for (std::size_t k = 0; k < n; ++k) {
          node[k] = std::min(kFan * node[k] + pick_running(sums + kFan * node[k], u[k]), last);
          __builtin_prefetch(next + kFan * node[k]);
        }
      } else {  // small levels stay in L1: prefetching them would only cost instructions
        for (std::size_t k = 0; k < n; ++k)
          node[k] = std::min(kFan * node[k] + pick_running(sums + kFan * node[k], u[k]), last);
      }
    }
    const std::atomic<double>* leaves = sum_[0];
    for (std::size_t k = 0; k < n; ++k)
      out_slots[k] = static_cast<std::int64_t>(kFan * node[k] + pick_leaves(leaves + kFan * node[k], u[k]));
  }
  // O(log capacity)
  std::int64_t find_prefix(double u) const {
    std::size_t x = 0;
    for (std::size_t l = depth_ - 1; l > 0; --l)
      x = std::min(kFan * x + pick_running(run_[l] + kFan * x, u), entries_[l] - 1);
    return static_cast<std::int64_t>(kFan * x + pick_leaves(sum_[0] + kFan * x, u));
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  static constexpr std::size_t kMaxLevels = 24;      // 8^22 > 2^64
  static constexpr std::size_t kPrefetchLines = 512;  // 32 KiB: smaller levels are not prefetched
  static std::size_t lines(std::size_t n) { return (n + kFan - 1) / kFan; }
  static double load(const std::atomic<double>& a) { return a.load(std::memory_order_relaxed); }
  static void store(std::atomic<double>& a, double v) { a.store(v, std::memory_order_relaxed); }

  // One line's 8 values in registers: four pairs with SSE2 (part of every x86-64), else an array.
#if defined(__SSE2__)
  struct Line {
    __m128d v0, v1, v2, v3;  // named members, not an array, so that GCC -O2 keeps them in registers
  };
#else
  struct Line {
    double v[kFan];
  };
#endif

  // A reader's copy of a line: eight relaxed atomic loads, as a writer may be storing into it.
  static Line read_shared(const std::atomic<double>* src) {
    Line r;
#if defined(__SSE2__)
    r.v0 = _mm_set_pd(load(src[1]), load(src[0]));
    r.v1 = _mm_set_pd(load(src[3]), load(src[2]));
    r.v2 = _mm_set_pd(load(src[5]), load(src[4]));
    r.v3 = _mm_set_pd(load(src[7]), load(src[6]));
#else
    for (std::size_t i = 0; i < kFan; ++i) r.v[i] = load(src[i]);
#endif
    return r;
  }
  // A writer's copy of a line: plain vector loads. They cannot race: readers only load, and writers are
  // serialised by the caller.
  static Line read_own(const std::atomic<double>* src) {
#if defined(__SSE2__)
    const double* p = reinterpret_cast<const double*>(src);
    Line r;
    r.v0 = _mm_load_pd(p);
    r.v1 = _mm_load_pd(p + 2);
    r.v2 = _mm_load_pd(p + 4);
    r.v3 = _mm_load_pd(p + 6);
    return r;
#else
    Line r;
    std::memcpy(r.v, static_cast<const void*>(src), sizeof r.v);
    return r;
#endif
  }
  // Relaxed atomic stores, one per value: readers may be loading the line.
  static void write(std::atomic<double>* dst, const Line& line) {
#if defined(__SSE2__)
    store(dst[0], _mm_cvtsd_f64(line.v0));
    store(dst[1], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v0, line.v0)));
    store(dst[2], _mm_cvtsd_f64(line.v1));
    store(dst[3], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v1, line.v1)));
    store(dst[4], _mm_cvtsd_f64(line.v2));
    store(dst[5], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v2, line.v2)));
    store(dst[6], _mm_cvtsd_f64(line.v3));
    store(dst[7], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v3, line.v3)));
#else
    for (std::size_t i = 0; i < kFan; ++i) store(dst[i], line.v[i]);
#endif
  }

  // Running sums p[i] = c[0] + ... + c[i], added in pairs: p1 = c0 + c1, p3 = p1 + (c2 + c3), p5 = p3 + (c4 + c5),
  // p7 = p5 + (c6 + c7), and p2 = p1 + c2, p4 = p3 + c4, p6 = p5 + c6. They never decrease, which is all the
  // descent needs; the order is the same everywhere (descent, repair, SSE2 or not), so p7 of a line is exactly
  // its entry in the level above.
  static Line scan(const Line& c) {
    Line p;
#if defined(__SSE2__)
    const __m128d zero = _mm_setzero_pd();
    p.v0 = _mm_add_pd(c.v0, _mm_unpacklo_pd(zero, c.v0));  // [c0, c0 + c1]
    p.v1 = _mm_add_pd(c.v1, _mm_unpacklo_pd(zero, c.v1));  // [c2, c2 + c3]
    p.v2 = _mm_add_pd(c.v2, _mm_unpacklo_pd(zero, c.v2));
    p.v3 = _mm_add_pd(c.v3, _mm_unpacklo_pd(zero, c.v3));
    p.v1 = _mm_add_pd(p.v1, _mm_unpackhi_pd(p.v0, p.v0));  // [p1 + c2, p1 + (c2 + c3)]
    p.v2 = _mm_add_pd(p.v2, _mm_unpackhi_pd(p.v1, p.v1));
    p.v3 = _mm_add_pd(p.v3, _mm_unpackhi_pd(p.v2, p.v2));
#else
    for (std::size_t i = 0; i < kFan; i += 2) {
      const double base = i ? p.v[i - 1] : 0.0;
      p.v[i] = base + c.v[i];
      p.v[i + 1] = base + (c.v[i] + c.v[i + 1]);
    }
#endif
    return p;
  }
  static double last(const Line& p) {
#if defined(__SSE2__)
    return _mm_cvtsd_f64(_mm_unpackhi_pd(p.v3, p.v3));
#else
    return p.v[kFan - 1];
#endif
  }
  // Smallest value of a line; for a line of leaves, zeros count as +inf.
  static double smallest(const Line& c, bool leaves) {
#if defined(__SSE2__)
    Line w = c;
    if (leaves) {
      const __m128d zero = _mm_setzero_pd(), inf = _mm_set1_pd(kInf);
      const __m128d g0 = _mm_cmpgt_pd(c.v0, zero), g1 = _mm_cmpgt_pd(c.v1, zero), g2 = _mm_cmpgt_pd(c.v2, zero),
                    g3 = _mm_cmpgt_pd(c.v3, zero);
      w.v0 = _mm_or_pd(_mm_and_pd(g0, c.v0), _mm_andnot_pd(g0, inf));
      w.v1 = _mm_or_pd(_mm_and_pd(g1, c.v1), _mm_andnot_pd(g1, inf));
      w.v2 = _mm_or_pd(_mm_and_pd(g2, c.v2), _mm_andnot_pd(g2, inf));
      w.v3 = _mm_or_pd(_mm_and_pd(g3, c.v3), _mm_andnot_pd(g3, inf));
    }
    const __m128d m = _mm_min_pd(_mm_min_pd(w.v0, w.v1), _mm_min_pd(w.v2, w.v3));
    return _mm_cvtsd_f64(_mm_min_sd(m, _mm_unpackhi_pd(m, m)));
#else
    double m = kInf;
    if (leaves) {
      for (std::size_t i = 0; i < kFan; ++i) {
        const double v = c.v[i] > 0.0 ? c.v[i] : kInf;
        m = v < m ? v : m;
      }
    } else {
      for (std::size_t i = 0; i < kFan; ++i) m = c.v[i] < m ? c.v[i] : m;
    }
    return m;
#endif
  }

  // The child j of a line with running sums p that holds u: j = #{i : p[i] <= t}, t = min(u, top), where top is
  // p[7] with its bit pattern minus one: the largest double below p[7], or a NaN when p[7] == 0 (t is then NaN,
  // every comparison false and j = 0). Branch-free, since on random u every branch would be a coin toss.
  static std::size_t child(const Line& p, double u) {
#if defined(__SSE2__)
    const __m128i bits = _mm_add_epi64(_mm_castpd_si128(p.v3), _mm_set_epi64x(-1, 0));
    const __m128d t = _mm_min_pd(_mm_set1_pd(u), _mm_castsi128_pd(_mm_unpackhi_epi64(bits, bits)));
    __m128i c = _mm_add_epi64(  // a true comparison is all ones: -1
        _mm_add_epi64(_mm_castpd_si128(_mm_cmple_pd(p.v0, t)), _mm_castpd_si128(_mm_cmple_pd(p.v1, t))),
        _mm_add_epi64(_mm_castpd_si128(_mm_cmple_pd(p.v2, t)), _mm_castpd_si128(_mm_cmple_pd(p.v3, t))));
    c = _mm_add_epi64(c, _mm_unpackhi_epi64(c, c));
    return static_cast<std::size_t>(-_mm_cvtsi128_si64(c));
#else
    double top = p.v[kFan - 1];
    std::uint64_t b;
    std::memcpy(&b, &top, sizeof b);
    b -= 1;
    std::memcpy(&top, &b, sizeof b);
    const double t = u < top ? u : top;
    std::size_t j = 0;
    for (std::size_t i = 0; i < kFan; ++i) j += p.v[i] <= t;
    return j;
#endif
  }
  // v if j > 0, else 0.0, without a branch.
  static double unless_first(std::size_t j, double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    b &= 0 - static_cast<std::uint64_t>(j != 0);
    std::memcpy(&v, &b, sizeof b);
    return v;
  }
  // One descent step on a line of stored running sums: the child holding u; u becomes the rest within it.
  static std::size_t pick_running(const std::atomic<double>* sums, double& u) {
    const std::size_t j = child(read_shared(sums), u);
    u -= unless_first(j, load(sums[(j - 1) % kFan]));
    return j;
  }
  // The same on a line of leaves, whose running sums are computed here.
  static std::size_t pick_leaves(const std::atomic<double>* leaves, double& u) {
    const Line p = scan(read_shared(leaves));
    const std::size_t j = child(p, u);
    alignas(16) double sums[kFan];
    std::memcpy(sums, &p, sizeof sums);
    u -= unless_first(j, sums[(j - 1) % kFan]);
    return j;
  }

  // Line x of level l changed: store its running sums (levels 1 .. depth_ - 1), and its sum and min in level l + 1.
  void repair(std::size_t l, std::size_t x) {
    const Line c = read_own(sum_[l] + kFan * x);
    const Line p = scan(c);
    if (l > 0) write(run_[l] + kFan * x, p);
    store(sum_[l + 1][x], last(p));
    store(min_[l + 1][x], l == 0 ? smallest(c, true) : smallest(read_own(min_[l] + kFan * x), false));
  }

  std::size_t capacity_;
  std::size_t depth_;                              // the root's level; the leaves are level 0
  std::array<std::size_t, kMaxLevels> entries_{};  // entries of each level, before padding to whole lines
  // First line of each level's sums (0 .. depth_), running sums (1 .. depth_ - 1) and mins (1 .. depth_).
  std::array<std::atomic<double>*, kMaxLevels> sum_{}, run_{}, min_{};
  std::atomic<double>* cell_ = nullptr;    // every value: sums and running sums in [0, sum_cells_), then mins
  std::size_t sum_cells_ = 0, cells_ = 0;
  std::shared_ptr<std::uint8_t> memory_;   // owns cell_ (64 bytes of slack for the alignment)
  std::vector<std::uint8_t> marks_;        // set_many: one byte per leaf line, all zero between calls
};

// Max over slots (single writer at a time, as SegmentTree); used for 'maximum priority over stored transitions'.
class MaxTree {
 public:
  explicit MaxTree(std::size_t capacity) {
    leaves_ = 1;
    while (leaves_ < capacity) leaves_ <<= 1;
    max_.assign(2 * leaves_, 0.0);
  }
  double max() const { return max_[1]; }
  // O(log capacity)
  void set(std::size_t slot, double value) {
    std::size_t node = leaves_ + slot;
    max_[node] = value;
    for (node >>= 1; node >= 1; node >>= 1) max_[node] = std::max(max_[2 * node], max_[2 * node + 1]);
  }
  void reset() { std::fill(max_.begin(), max_.end(), 0.0); }

 private:
  std::size_t leaves_;
  std::vector<double> max_;
};

}  // namespace fastreplay
