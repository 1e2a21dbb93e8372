// A small cache of aligned memory blocks for batches, so that large batches are not re-faulted from the kernel.
//
// A batch handed to Python owns its block until its last array is gone; the block then returns here and is reused
// by a later batch of the same size. The pool outlives every block it handed out (blocks hold a shared_ptr).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/fork.h"

namespace fastreplay {

class BlockPool {
 public:
  explicit BlockPool(std::size_t max_cached_bytes = std::size_t(256) << 20) : max_cached_(max_cached_bytes) {}
  ~BlockPool() {
    for (auto& b : free_) std::free(b.second);
  }
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of at least `bytes` bytes, 64-byte aligned. Throws std::bad_alloc. O(cached blocks)
  void* acquire(std::size_t bytes) {
    bytes = round(bytes);
    {
      std::lock_guard<ForkSafeMutex> lock(mu_);
      for (std::size_t i = free_.size(); i-- > 0;) {
        if (free_[i].first == bytes) {
          void* p = free_[i].second;
          free_[i] = free_.back();
          free_.pop_back();
          cached_ -= bytes;
          return p;
        }
      }
    }
    void* p = std::aligned_alloc(kCacheLine, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }

  // Give a block back (bytes as passed to acquire). O(1)
  void release(void* p, std::size_t bytes) {
    bytes = round(bytes);
    {
      std::lock_guard<ForkSafeMutex> lock(mu_);
      if (cached_ + bytes <= max_cached_ && free_.size() < kMaxBlocks) {
        free_.emplace_back(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  static constexpr std::size_t kMaxBlocks = 64;
  static std::size_t round(std::size_t bytes) { return (bytes + kCacheLine - 1) / kCacheLine * kCacheLine + (bytes == 0) * kCacheLine; }
  ForkSafeMutex mu_;  // fork() takes it first (fork.h): a child can still allocate batches
  std::vector<std::pair<std::size_t, void*>> free_;
  std::size_t cached_ = 0;
  const std::size_t max_cached_;
};

}  // namespace fastreplay
