// A small cache of aligned memory blocks for batches, so that large batches are not re-faulted from the kernel.
//
// A batch handed to Python owns its block until its last array is gone; the block then returns here and is reused
// by a later batch of the same size. The pool outlives every block it handed out (blocks hold a shared_ptr).
// Blocks of 1 MiB and more (an Atari batch of 32 is 1.8 MB) are whole 2 MiB huge pages where the kernel allows
// (mmap at a 2 MiB boundary, MADV_HUGEPAGE): the gather into them then misses the TLB on its stores once per 2 MiB
// instead of once per 4 KiB (measured: +4-6% gather bandwidth for Atari batches, bench/cpp/image_bench.cpp). Under
// AddressSanitizer they stay malloc'ed, so that overruns are still caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/fork.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FASTREPLAY_POOL_HUGE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FASTREPLAY_POOL_HUGE 0
#endif
#endif
#if !defined(FASTREPLAY_POOL_HUGE) && defined(__linux__)
#define FASTREPLAY_POOL_HUGE 1
#elif !defined(FASTREPLAY_POOL_HUGE)
#define FASTREPLAY_POOL_HUGE 0
#endif

namespace fastreplay {

class BlockPool {
 public:
  explicit BlockPool(std::size_t max_cached_bytes = std::size_t(256) << 20) : max_cached_(max_cached_bytes) {}
  ~BlockPool() {
    for (auto& b : free_) unmap(b.second, b.first);
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
    return map(bytes);
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
    unmap(p, bytes);
  }

 private:
  static constexpr std::size_t kMaxBlocks = 64;
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;
  static constexpr std::size_t kHugeMin = std::size_t(1) << 20;  // blocks from here on are whole huge pages
  static bool huge(std::size_t rounded) { return FASTREPLAY_POOL_HUGE && rounded >= kHugeMin; }
  static std::size_t round(std::size_t bytes) {
    if (bytes >= kHugeMin && bytes <= std::size_t(-1) - kHugePage)
      return (bytes + kHugePage - 1) / kHugePage * kHugePage;
    return (bytes + kCacheLine - 1) / kCacheLine * kCacheLine + (bytes == 0) * kCacheLine;
  }
  // A block of `bytes` (as rounded): huge pages at a 2 MiB boundary, or aligned_alloc. Throws std::bad_alloc.
  static void* map(std::size_t bytes) {
#if FASTREPLAY_POOL_HUGE
    if (huge(bytes)) {  // map 2 MiB more, then unmap the parts before and after the aligned block
      void* m = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw std::bad_alloc();
      const auto at = reinterpret_cast<std::uintptr_t>(m);
      const std::uintptr_t aligned = (at + kHugePage - 1) / kHugePage * kHugePage;
      if (aligned > at) munmap(m, aligned - at);
      munmap(reinterpret_cast<void*>(aligned + bytes), at + kHugePage - aligned);  // never empty
      void* p = reinterpret_cast<void*>(aligned);
      madvise(p, bytes, MADV_HUGEPAGE);  // advisory: ignored where THP is off
      return p;
    }
#endif
    void* p = std::aligned_alloc(kCacheLine, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void unmap(void* p, std::size_t bytes) {
#if FASTREPLAY_POOL_HUGE
    if (huge(bytes)) {
      munmap(p, bytes);
      return;
    }
#else
    (void)bytes;
#endif
    std::free(p);
  }
  ForkSafeMutex mu_;  // fork() takes it first (fork.h): a child can still allocate batches
  std::vector<std::pair<std::size_t, void*>> free_;
  std::size_t cached_ = 0;
  const std::size_t max_cached_;
};

}  // namespace fastreplay
