// A binary max tree over slots, for the maximum priority over the transitions stored now.
//
// Power-of-two leaves: slot i is node leaves + i, the parent of node x is x / 2, the root is node 1 (node 0 is
// unused). Values are plain doubles: one writer at a time and no concurrent reader (PrioritizedCore holds its mutex
// for both). Empty slots hold 0, so max() of an empty tree is 0.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>

#include "fastreplay/common.h"
#include "fastreplay/memory.h"

namespace fastreplay {

class MaxTree {
 public:
  // Memory from `blocks` (shared.h) if given (zeroed: every slot 0).
  explicit MaxTree(std::size_t capacity, Blocks* blocks = nullptr) {
    leaves_ = 1;
    while (leaves_ < capacity) leaves_ <<= 1;
    memory_ = take_zeroed(blocks, checked_mul(2 * leaves_, sizeof(double)));
    max_ = reinterpret_cast<double*>(memory_.get());
  }
  // O(1)
  double max() const { return max_[1]; }
  // O(log capacity)
  void set(std::size_t slot, double value) {
    std::size_t node = leaves_ + slot;
    max_[node] = value;
    for (node >>= 1; node >= 1; node >>= 1) max_[node] = std::max(max_[2 * node], max_[2 * node + 1]);
  }
  // Every slot back to 0. O(capacity)
  void reset() { std::fill(max_, max_ + 2 * leaves_, 0.0); }

 private:
  std::size_t leaves_;
  std::shared_ptr<std::uint8_t> memory_;  // owns max_
  double* max_;
};

}  // namespace fastreplay
