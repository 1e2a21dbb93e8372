// Sum and min segment trees over priorities, with a level-synchronous batched descent for stratified sampling.
//
// Implicit binary heap with P = next power of two >= capacity leaves; node 1 is the root, node i has children
// 2i and 2i+1, leaf j (slot j) is node P + j. For capacity 6 (P = 8):
//
//                         1 [0,8)
//             2 [0,4)                  3 [4,8)
//       4 [0,2)    5 [2,4)       6 [4,6)    7 [6,8)
//      8  9      10  11        12  13      14  15      <- leaves: slots 0..5, 14 and 15 unused (sum 0, min +inf)
//
// Sums are doubles and every update recomputes each ancestor from its two children (never by adding a delta), so
// rounding error cannot accumulate: the root equals the tree-ordered sum of the current leaves, whatever came
// before. Nodes are std::atomic<double> accessed with relaxed order, so readers may descend while a writer
// updates (they see each node old or new, never torn); writers must be serialised by the caller.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "fastreplay/common.h"

namespace fastreplay {

class SegmentTree {
 public:
  explicit SegmentTree(std::size_t capacity) : capacity_(capacity) {
    leaves_ = 1;
    depth_ = 0;
    while (leaves_ < capacity) {
      leaves_ <<= 1;
      ++depth_;
    }
    sum_.reset(new std::atomic<double>[2 * leaves_]);
    min_.reset(new std::atomic<double>[2 * leaves_]);
    reset();
  }

  std::size_t capacity() const { return capacity_; }
  // Sum of all leaves. O(1)
  double total() const { return load(sum_[1]); }
  // Smallest positive leaf (+inf if none): zero leaves are never sampled, so they do not bound the weights. O(1)
  double min() const { return load(min_[1]); }
  double leaf(std::size_t slot) const { return load(sum_[leaves_ + slot]); }

  // All leaves empty (sum 0, min +inf). O(capacity)
  void reset() {
    for (std::size_t i = 0; i < 2 * leaves_; ++i) {
      store(sum_[i], 0.0);
      store(min_[i], kInf);
    }
  }

  // Set one leaf and repair its ancestors. O(log capacity)
  void set(std::size_t slot, double value) {
    std::size_t node = leaves_ + slot;
    store(sum_[node], value);
    store(min_[node], min_leaf(value));
    for (node >>= 1; node >= 1; node >>= 1) pull(node);
  }

  // Set leaves slots[k] = values[k] (the last of duplicate slots wins), then repair every touched ancestor exactly
  // once, level by level. `scratch` is reused to avoid allocation. O(n log n + n log capacity)
  void set_many(const std::int64_t* slots, const double* values, std::size_t n, std::vector<std::size_t>& scratch) {
    scratch.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t node = leaves_ + static_cast<std::size_t>(slots[k]);
      store(sum_[node], values[k]);
      store(min_[node], min_leaf(values[k]));
      scratch[k] = node >> 1;
    }
    if (!std::is_sorted(scratch.begin(), scratch.end())) std::sort(scratch.begin(), scratch.end());
    std::size_t m = static_cast<std::size_t>(std::unique(scratch.begin(), scratch.end()) - scratch.begin());
    for (std::size_t level = 0; level < depth_; ++level) {  // parents of a sorted list stay sorted
      for (std::size_t k = 0; k < m; ++k) pull(scratch[k]);
      std::size_t w = 0;
      for (std::size_t k = 0; k < m; ++k) {
        const std::size_t p = scratch[k] >> 1;
        if (p == 0) break;
        if (w == 0 || scratch[w - 1] != p) scratch[w++] = p;
      }
      m = w;
    }
  }

  // Set the leaves of slots [lo, hi) to value and repair their ancestors once each. O(n + log capacity)
  void set_range(std::size_t lo, std::size_t hi, double value) {
    if (lo >= hi) return;
    for (std::size_t s = lo; s < hi; ++s) {
      store(sum_[leaves_ + s], value);
      store(min_[leaves_ + s], min_leaf(value));
    }
    std::size_t a = (leaves_ + lo) >> 1, b = (leaves_ + hi - 1) >> 1;
    for (; a >= 1; a >>= 1, b >>= 1)
      for (std::size_t node = a; node <= b; ++node) pull(node);
  }

  // Set a leaf without repairing its ancestors: follow with rebuild(). O(1)
  void set_leaf_only(std::size_t slot, double value) {
    store(sum_[leaves_ + slot], value);
    store(min_[leaves_ + slot], min_leaf(value));
  }

  // Rebuild all internal nodes from the leaves. O(capacity)
  void rebuild() {
    for (std::size_t node = leaves_ - 1; node >= 1; --node) pull(node);
  }

  // Stratified batched descent: for each query k, find the leaf where the prefix sum reaches u[k] (u[k] in
  // [0, total)). All queries move down one level per step, so their cache misses overlap; the next level's
  // nodes are prefetched before any is read. A query never ends on a zero leaf while the tree is consistent:
  // it goes left whenever the right sibling is empty. u[k] is consumed. O(n log capacity)
  void find_prefix_many(double* u, std::size_t n, std::int64_t* out_slots, std::size_t* node) const {
    for (std::size_t k = 0; k < n; ++k) node[k] = 1;
    for (std::size_t level = 0; level < depth_; ++level) {
      for (std::size_t k = 0; k < n; ++k) __builtin_prefetch(&sum_[2 * node[k]]);
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t left = 2 * node[k];
        const double l = load(sum_[left]);
        const double r = load(sum_[left + 1]);
        const bool right = (u[k] >= l) & (r > 0.0);
        u[k] -= right ? l : 0.0;
        node[k] = left + right;
      }
    }
    for (std::size_t k = 0; k < n; ++k) out_slots[k] = static_cast<std::int64_t>(node[k] - leaves_);
  }
  std::int64_t find_prefix(double u) const {
    std::size_t node = 1;
    for (std::size_t level = 0; level < depth_; ++level) {
      const std::size_t left = 2 * node;
      const double l = load(sum_[left]);
      const double r = load(sum_[left + 1]);
      const bool right = (u >= l) & (r > 0.0);
      u -= right ? l : 0.0;
      node = left + right;
    }
    return static_cast<std::int64_t>(node - leaves_);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  static double min_leaf(double v) { return v > 0.0 ? v : kInf; }
  static double load(const std::atomic<double>& a) { return a.load(std::memory_order_relaxed); }
  static void store(std::atomic<double>& a, double v) { a.store(v, std::memory_order_relaxed); }
  void pull(std::size_t node) {
    store(sum_[node], load(sum_[2 * node]) + load(sum_[2 * node + 1]));
    store(min_[node], std::min(load(min_[2 * node]), load(min_[2 * node + 1])));
  }

  std::size_t capacity_;
  std::size_t leaves_;
  std::size_t depth_;
  std::unique_ptr<std::atomic<double>[]> sum_;
  std::unique_ptr<std::atomic<double>[]> min_;
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
