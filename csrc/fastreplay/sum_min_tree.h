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
// A min tree (levels 2 .. depth_, the same shape there) holds the smallest positive leaf under each entry, +inf if
// none; only its root is read. Its bottom level has one entry per block of 64 leaves (one line of level 1), kept
// with a count of the block's leaves equal to it and without reading the block: a write below the min makes it
// the min (count 1), one equal to it adds to the count, one that raises or empties a leaf equal to it takes from
// the count, and only when the count reaches 0 are the block's 64 leaves read again. Per updated row that saves
// the cold line a min per leaf line (1 MB at 10^6) would cost; the blocks' mins and counts (125 KB each at 10^6)
// stay in cache; the count keeps ties (every leaf at the initial priority) from costing a read of the block per
// write. The tree has at least 3 levels (depth_ >= 2), so that every leaf has a block.
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
// levels of a binary tree); set_many repairs each touched line once per level, and recomputes a min only if the
// min of one of its entries changed (the result is the same: a min is a function of its line, or its block);
// memory is about 1.3 N doubles.
//
// The measurements behind these choices, and the experiments that gained nothing, are in bench/README.md
// ("Segment tree: experiments").
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

#include "fastreplay/common.h"
#include "fastreplay/detail/line.h"
#include "fastreplay/memory.h"

namespace fastreplay {

class SumMinTree {
 public:
  static constexpr std::size_t kFan = 8;  // children per node: 8 doubles, one 64-byte cache line

  // Memory from `blocks` (shared.h) if given; blocks that hold another process's tree are left as they are.
  explicit SumMinTree(std::size_t capacity, Blocks* blocks = nullptr) : capacity_(capacity) {
    static_assert(std::atomic<double>::is_always_lock_free, "tree values must be lock-free atomics");
    static_assert(sizeof(std::atomic<double>) == sizeof(double), "tree values are stored as plain doubles");
    std::size_t n = capacity ? capacity : 1;
    entries_[0] = n;
    for (depth_ = 0; depth_ < 2 || n > 1;) entries_[++depth_] = n = lines(n);
    // One block: the sums of every level (leaves first), the running sums of levels 1 .. depth_ - 1, the blocks'
    // counts, then the mins of levels 2 .. depth_. Every level starts on a cache line.
    std::array<std::size_t, kMaxLevels> sum_at{}, run_at{}, min_at{};
    std::size_t cells = 0;
    for (std::size_t l = 0; l <= depth_; ++l) sum_at[l] = cells, cells += kFan * lines(entries_[l]);
    for (std::size_t l = 1; l < depth_; ++l) run_at[l] = cells, cells += kFan * lines(entries_[l]);
    const std::size_t count_at = cells;
    cells += kFan * lines(entries_[2]);
    sum_cells_ = cells;
    for (std::size_t l = 2; l <= depth_; ++l) min_at[l] = cells, cells += kFan * lines(entries_[l]);
    cells_ = cells;
    // Zeroed memory is an array of atomics holding 0.0 (as in Ring); huge pages for large trees.
    memory_ = take_zeroed(blocks, checked_mul(cells_, sizeof(double)) + kCacheLine);
    const auto addr = reinterpret_cast<std::uintptr_t>(memory_.get());
    cell_ = reinterpret_cast<std::atomic<double>*>((addr + kCacheLine - 1) / kCacheLine * kCacheLine);
    for (std::size_t l = 0; l <= depth_; ++l) sum_[l] = cell_ + sum_at[l];
    for (std::size_t l = 1; l < depth_; ++l) run_[l] = cell_ + run_at[l];
    for (std::size_t l = 2; l <= depth_; ++l) min_[l] = cell_ + min_at[l];
    count_ = cell_ + count_at;
    if (fresh_blocks(blocks))
      for (std::size_t i = sum_cells_; i < cells_; ++i) store(cell_[i], kInf);  // +inf is not all-zero bits
    marks_[0].assign(lines(entries_[0]), 0);
    marks_[1].assign(lines(entries_[1]), 0);
  }
  SumMinTree(const SumMinTree&) = delete;  // would share the values
  SumMinTree& operator=(const SumMinTree&) = delete;
  SumMinTree(SumMinTree&&) = default;
  SumMinTree& operator=(SumMinTree&&) = default;

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
    const std::uint8_t flags = write_leaf(slot, value);
    std::size_t x = slot / kFan;
    repair_sums_leaves(sum_[0], sum_[1], x);
    x /= kFan;
    repair_sums(sum_[1], run_[1], sum_[2], x);
    if (flags & kRecompute) store_block(x);
    x /= kFan;
    for (std::size_t l = 2; l < depth_; ++l, x /= kFan) repair(l, x);
  }

  // Set leaves slots[k] = values[k] (the last of duplicate slots wins), then repair every touched line exactly
  // once, level by level. The distinct lines are found with mark bytes (one per line, cleared again before
  // returning), not by sorting: level l's lines are marked in marks_[l % 2], so that one pass over a level can
  // repair each line, clear its mark and mark its parent. `scratch` is reused to avoid allocation.
  // O(n log capacity)
  void set_many(const std::int64_t* slots, const double* values, std::size_t n, std::vector<std::size_t>& scratch) {
    scratch.resize(n);
    std::size_t* todo = scratch.data();
    std::uint8_t* mark = marks_[0].data();
    std::size_t m = 0;
    std::uint8_t* const block_mark = marks_[1].data();  // level 1's: write_leaf's bits 1 and 2 (bit 0 comes later)
    for (std::size_t k = 0; k < n; ++k) {
      const auto slot = static_cast<std::size_t>(slots[k]);
      block_mark[slot / kBlockLeaves] |= write_leaf(slot, values[k]);
      const std::size_t x = slot / kFan;
      todo[m] = x;  // branch-free: kept (m advances) only if its line is not marked yet
      m += mark[x] ^ 1;
      mark[x] = 1;
    }
    for (std::size_t l = 0; l < depth_; ++l) {
      // Pointers hoisted out of the loop: the compiler cannot keep them in registers across the atomic stores.
      std::uint8_t* const cur = marks_[l % 2].data();
      std::uint8_t* const up = marks_[(l + 1) % 2].data();
      const std::atomic<double>* const sums = sum_[l];
      const std::atomic<double>* const mins = min_[l];
      std::atomic<double>* const run = run_[l];
      std::atomic<double>* const psum = sum_[l + 1];
      std::atomic<double>* const pmin = min_[l + 1];
      std::size_t w = 0;
      for (std::size_t k = 0; k < m; ++k) {
        const std::size_t x = todo[k];
        const std::uint8_t flags = cur[x];  // bit 0: queued; bit 1: the min of one of its entries changed
        cur[x] = 0;
        // The sums always change; a line's min is recomputed only where a min below it changed (most updates
        // leave the min of every line above the leaves' as it was).
        bool changed;
        if (l == 0) {  // mins: the blocks' were kept by write_leaf
          repair_sums_leaves(sums, psum, x);
          changed = false;
        } else if (l == 1) {  // line x of level 1 is block x
          repair_sums(sums, run, psum, x);
          // (lowered counts too: a min lowered, then recomputed to that value, differs from the parent's view)
          changed = (flags & kLowered) != 0;
          if (flags & kRecompute) changed |= store_block(x);
        } else {
          repair_sums(sums, run, psum, x);
          changed = (flags & 2) && repair_min(mins, pmin, x);
        }
        const std::size_t p = x / kFan;  // its parent's line, kept once
        todo[w] = p;
        w += (up[p] & 1) ^ 1;
        up[p] |= static_cast<std::uint8_t>(1 | (changed << 1));
      }
      m = w;
    }
    std::uint8_t* const last = marks_[depth_ % 2].data();
    for (std::size_t k = 0; k < m; ++k) last[todo[k]] = 0;
  }

  // A hint, before set_many writes this slot's leaf: start fetching the lines that it and its repair at level 0
  // write (the leaf's line, and its line's sum in level 1), so that their misses overlap. O(1)
  void prefetch_for_set(std::size_t slot) const {
    __builtin_prefetch(sum_[0] + slot, 1);
    __builtin_prefetch(sum_[1] + slot / kFan, 1);
  }

  // Set the leaves of slots [lo, hi) to value and repair their ancestors once each. O(n + log capacity)
  void set_range(std::size_t lo, std::size_t hi, double value) {
    if (lo >= hi) return;
    for (std::size_t s = lo; s < hi; ++s) store(sum_[0][s], value);
    std::size_t a = lo / kFan, b = (hi - 1) / kFan;
    for (std::size_t l = 0; l < depth_; ++l, a /= kFan, b /= kFan) {
      for (std::size_t x = a; x <= b; ++x) {
        if (l == 1 && lo <= kBlockLeaves * x && kBlockLeaves * (x + 1) <= hi) {  // a whole block holds `value`
          repair_sums(sum_[1], run_[1], sum_[2], x);
          store(min_[2][x], value > 0.0 ? value : kInf);
          store(count_[x], value > 0.0 ? static_cast<double>(kBlockLeaves) : 0.0);
        } else {
          repair(l, x);
        }
      }
    }
  }

  // Set a leaf without repairing its ancestors: follow with rebuild(). O(1)
  void set_leaf_only(std::size_t slot, double value) { store(sum_[0][slot], value); }

  // Rebuild all internal nodes from the leaves. O(capacity)
  void rebuild() {
    for (std::size_t l = 0; l < depth_; ++l)
      for (std::size_t x = 0; x < entries_[l + 1]; ++x) repair(l, x);
  }

  // Whether every inner value (sum, running sums, min) is exactly what repairing it from its line (a block's min:
  // from its leaves) would store:
  // what the contract promises once writers stop, whatever sequence of writes came before. For tests. O(capacity)
  bool consistent() const {
    for (std::size_t l = 0; l < depth_; ++l) {
      for (std::size_t x = 0; x < entries_[l + 1]; ++x) {
        const Line c = detail::line::read_own(sum_[l] + kFan * x);
        const Line p = detail::line::scan(c);
        alignas(16) double want[kFan], have[kFan];
        std::memcpy(want, &p, sizeof want);
        if (l > 0) {
          const Line r = detail::line::read_own(run_[l] + kFan * x);
          std::memcpy(have, &r, sizeof have);
          if (std::memcmp(want, have, sizeof want) != 0) return false;
        }
        if (load(sum_[l + 1][x]) != detail::line::last(p)) return false;
        if (l == 0) continue;
        if (l == 1) {
          const BlockMin b = block_min(x);
          if (load(min_[2][x]) != b.min || (b.min < kInf && load(count_[x]) != b.count)) return false;
          continue;
        }
        const double m = detail::line::smallest(detail::line::read_own(min_[l] + kFan * x), false);
        if (load(min_[l + 1][x]) != m) return false;
      }
    }
    return true;
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
        // The strata are in order, so consecutive queries mostly share a line here: it is read once per run of
        // queries (one snapshot serves both the child and the subtraction).
        std::size_t at = ~std::size_t(0);
        Line line{};
        alignas(16) double vals[kFan];
        for (std::size_t k = 0; k < n; ++k) {
          const std::size_t x = node[k];
          if (x != at) {
            at = x;
            line = detail::line::read_shared(sums + kFan * x);
            std::memcpy(vals, &line, sizeof vals);
          }
          const std::size_t j = detail::line::child(line, u[k]);
          u[k] -= unless_first(j, vals[(j - 1) % kFan]);
          node[k] = std::min(kFan * x + j, last);
        }
      }
    }
    const std::atomic<double>* leaves = sum_[0];
    for (std::size_t k = 0; k < n; ++k)  // the last step: only the child is needed, not the rest of u
      out_slots[k] = static_cast<std::int64_t>(kFan * node[k] + detail::line::child(leaf_sums(leaves, node[k]), u[k]));
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
  static constexpr std::size_t kBlockLeaves = kFan * kFan;  // leaves under one entry of the min tree's bottom level
  static std::size_t lines(std::size_t n) { return (n + kFan - 1) / kFan; }
  static double load(const std::atomic<double>& a) { return a.load(std::memory_order_relaxed); }
  static void store(std::atomic<double>& a, double v) { a.store(v, std::memory_order_relaxed); }

  // One line's 8 values in registers, and the kernels on it (detail/line.h): SSE2, or portable scalar code.
  using Line = detail::line::Line;
  static_assert(kFan == detail::kLineFan, "a node's children fill one line");

  // v if j > 0, else 0.0, without a branch.
  static double unless_first(std::size_t j, double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    b &= 0 - static_cast<std::uint64_t>(j != 0);
    std::memcpy(&v, &b, sizeof b);
    return v;
  }
  // One descent step on a line of stored running sums: the child holding u (line::child, the rule stated in the
  // contract above, branch-free since on random u every branch would be a coin toss); u becomes the rest within it.
  static std::size_t pick_running(const std::atomic<double>* sums, double& u) {
    const std::size_t j = detail::line::child(detail::line::read_shared(sums), u);
    u -= unless_first(j, load(sums[(j - 1) % kFan]));
    return j;
  }
  // Running sums of leaf line x, computed from one read of its leaves.
  static Line leaf_sums(const std::atomic<double>* leaves, std::size_t x) {
    return detail::line::scan(detail::line::read_shared(leaves + kFan * x));
  }
  // The same on a line of leaves, whose running sums are computed here.
  static std::size_t pick_leaves(const std::atomic<double>* leaves, double& u) {
    const Line p = detail::line::scan(detail::line::read_shared(leaves));
    const std::size_t j = detail::line::child(p, u);
    alignas(16) double sums[kFan];
    std::memcpy(sums, &p, sizeof sums);
    u -= unless_first(j, sums[(j - 1) % kFan]);
    return j;
  }

  // Line x of level l changed: store its running sums (levels 1 .. depth_ - 1), and its sum and min in level l + 1.
  void repair(std::size_t l, std::size_t x) {
    if (l == 0) {
      repair_sums_leaves(sum_[0], sum_[1], x);
    } else if (l == 1) {
      repair_sums(sum_[1], run_[1], sum_[2], x);
      store_block(x);
    } else {
      repair_inner(sum_[l], min_[l], run_[l], sum_[l + 1], min_[l + 1], x);
    }
  }
  // The smallest positive leaf of block x (leaf lines 8x .. 8x + 7, those that exist), +inf if none, and how many
  // of its leaves equal it (0 if none).
  struct BlockMin {
    double min, count;
  };
  BlockMin block_min(std::size_t x) const {
    const std::size_t first = kFan * x, end = std::min(first + kFan, entries_[1]);
    double m = kInf;
    for (std::size_t line = first; line < end; ++line)
      m = std::min(m, detail::line::smallest(detail::line::read_own(sum_[0] + kFan * line), true));
    std::size_t count = 0;
    if (m < kInf)
      for (std::size_t s = kFan * first; s < kFan * end; ++s) count += load(sum_[0][s]) == m;
    return {m, static_cast<double>(count)};
  }
  // Store block x's min and count from its leaves. Returns whether the min changed.
  bool store_block(std::size_t x) {
    const BlockMin b = block_min(x);
    store(count_[x], b.count);
    return store_if_changed(min_[2][x], b.min);
  }
  // Store a leaf and keep its block's min and count without reading the block where possible (see the contract at
  // the top): returns kLowered if the min went down, kRecompute if its count reached 0 (the caller then calls
  // store_block once the block's writes are done, which gives the right min and count whatever this left). The
  // outcomes are coin tosses on random updates, hence selects, not branches. Writers only, serialised.
  static constexpr std::uint8_t kLowered = 2, kRecompute = 4;  // as set_many's mark bits
  std::uint8_t write_leaf(std::size_t slot, double value) {
    std::atomic<double>& leaf = sum_[0][slot];
    const std::size_t x = slot / kBlockLeaves;
    const double old = load(leaf), m = load(min_[2][x]), count = load(count_[x]);
    const double v = value > 0.0 ? value : kInf;  // zero leaves do not count
    const bool lower = v < m;
    const double left = count - static_cast<double>(old == m && old > 0.0) + static_cast<double>(v == m && v < kInf);
    store(leaf, value);
    store(min_[2][x], lower ? v : m);
    store(count_[x], lower ? 1.0 : left);
    return static_cast<std::uint8_t>((lower * kLowered) | ((!lower && left <= 0.0 && m < kInf) * kRecompute));
  }
  // repair(l, x) for 0 < l < depth_ (run_[l] is null at the top level, which has no running sums).
  static void repair_inner(const std::atomic<double>* sums, const std::atomic<double>* mins, std::atomic<double>* run,
                           std::atomic<double>* psum, std::atomic<double>* pmin, std::size_t x) {
    const Line p = detail::line::scan(detail::line::read_own(sums + kFan * x));
    if (run) detail::line::write(run + kFan * x, p);
    store(psum[x], detail::line::last(p));
    store(pmin[x], detail::line::smallest(detail::line::read_own(mins + kFan * x), false));
  }

  // set_many's parts of a repair. Sums of line x of level l >= 1: its running sums (but at the top level, where
  // run is null) and its sum in level l + 1.
  static void repair_sums(const std::atomic<double>* sums, std::atomic<double>* run, std::atomic<double>* psum,
                          std::size_t x) {
    const Line p = detail::line::scan(detail::line::read_own(sums + kFan * x));
    if (run) detail::line::write(run + kFan * x, p);
    store(psum[x], detail::line::last(p));
  }
  // Sum of a line of leaves (their running sums are not stored).
  static void repair_sums_leaves(const std::atomic<double>* sums, std::atomic<double>* psum, std::size_t x) {
    store(psum[x], detail::line::last(detail::line::scan(detail::line::read_own(sums + kFan * x))));
  }
  // Min of line x of a level >= 1. Returns whether it changed.
  static bool repair_min(const std::atomic<double>* mins, std::atomic<double>* pmin, std::size_t x) {
    return store_if_changed(pmin[x], detail::line::smallest(detail::line::read_own(mins + kFan * x), false));
  }
  // Stores v; returns whether it differs from the value before. Only the (single) writer stores these values,
  // so its re-read is exact. The store is unconditional: a branch on a random outcome would cost more.
  static bool store_if_changed(std::atomic<double>& a, double v) {
    const bool changed = load(a) != v;
    store(a, v);
    return changed;
  }

  std::size_t capacity_;
  std::size_t depth_;                              // the root's level; the leaves are level 0
  std::array<std::size_t, kMaxLevels> entries_{};  // entries of each level, before padding to whole lines
  // First line of each level's sums (0 .. depth_), running sums (1 .. depth_ - 1) and mins (2 .. depth_).
  std::array<std::atomic<double>*, kMaxLevels> sum_{}, run_{}, min_{};
  std::atomic<double>* count_ = nullptr;  // per block: how many of its leaves equal its min (see write_leaf)
  std::atomic<double>* cell_ = nullptr;    // every value: sums and running sums in [0, sum_cells_), then mins
  std::size_t sum_cells_ = 0, cells_ = 0;
  std::shared_ptr<std::uint8_t> memory_;   // owns cell_ (64 bytes of slack for the alignment)
  // set_many: one byte per line of the even levels (marks_[0], sized for the leaves) and of the odd levels
  // (marks_[1]); all zero between calls.
  std::array<std::vector<std::uint8_t>, 2> marks_;
};

}  // namespace fastreplay
