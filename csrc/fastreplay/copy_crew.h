// The copy crew: helper threads that share a large batch copy with the thread that asked for it (opt-in).
//
// One core copying rows out of DRAM keeps too few line misses in flight to reach the memory's bandwidth: an Atari
// sample(32) (1.8 MB) moves at about 90-97% of a 512 MiB memcpy on one thread, and about twice that when a second
// core copies half of it (bench/cpp/image_bench.cpp "threads"). The crew is process-wide and off by default
// (threads() == 1), because the helpers take cores that the training loop, the environments or other samplers may
// need: fastreplay.set_copy_threads(n) turns it on.
//
// run(fn, ctx, parts) calls fn(ctx, p) once for every p < parts. The caller claims parts itself from the start,
// and idle helpers join as they wake: a slow wake-up, a busy crew (another caller owns it: that caller's copy goes
// on alone) or a forked child without helpers only make the caller do more of the parts itself, never wait for a
// helper that has not started one. Parts are claimed from one atomic ticket that holds the round and the next part
// (a helper that wakes for a finished round claims nothing), and the caller returns once every part is done (each
// finisher adds to `done` with release; the caller reads it with acquire, so every part's stores happen before
// the caller goes on). The helpers are detached and never touch Python; the crew is never destroyed (they wait on
// it until the process exits).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>

#include "fastreplay/fork.h"

namespace fastreplay {

class CopyCrew {
 public:
  using PartFn = void (*)(const void* ctx, std::size_t part);
  static constexpr std::size_t kMaxThreads = 64;

  // The process's crew.
  static CopyCrew& instance() {
    static CopyCrew* crew = new CopyCrew;  // never destroyed: detached helpers wait on it until exit
    return *crew;
  }

  // Threads per large copy, the caller included (1: no helpers). Helpers start on the next large copy; extra ones
  // leave when they wake. n must be in [1, kMaxThreads] (the bindings check it).
  void set_threads(std::size_t n) {
    {
      std::lock_guard<ForkSafeMutex> lock(mu_);
      want_.store(n - 1, std::memory_order_relaxed);
    }
    cv_.notify_all();
  }
  std::size_t threads() const { return want_.load(std::memory_order_relaxed) + 1; }

  // fn(ctx, p) for every p < parts, on this thread and on any helper that joins; returns when all are done.
  void run(PartFn fn, const void* ctx, std::size_t parts) {
    if (parts == 0) return;
    if (parts > kMaxParts || want_.load(std::memory_order_relaxed) == 0 ||
        busy_.exchange(true, std::memory_order_acquire)) {
      for (std::size_t p = 0; p < parts; ++p) fn(ctx, p);
      return;
    }
    std::uint64_t round;
    {
      std::lock_guard<ForkSafeMutex> lock(mu_);
      if (watch_.forked()) {  // the helpers of the parent do not exist here
        alive_ = 0;
        watch_ = ForkWatch();
      }
      start_helpers();
      round = ++round_ & kRoundMask;
      fn_ = fn;
      ctx_ = ctx;
      parts_ = parts;
      done_.store(0, std::memory_order_relaxed);
      ticket_.store(round << kPartBits, std::memory_order_release);
    }
    published_.store(round, std::memory_order_release);
    cv_.notify_all();
    work(round, fn, ctx, parts);
    while (done_.load(std::memory_order_acquire) != parts) pause();  // a helper finishes its last part
    busy_.store(false, std::memory_order_release);
  }

 private:
  static constexpr unsigned kPartBits = 24;
  static constexpr long kSpinMicros = 200;
  static constexpr std::size_t kMaxParts = std::size_t(1) << kPartBits;
  static constexpr std::uint64_t kRoundMask = (std::uint64_t(1) << (64 - kPartBits)) - 1;

  CopyCrew() = default;

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  // Claim and do parts of `round` until none is left (or a newer round began).
  void work(std::uint64_t round, PartFn fn, const void* ctx, std::size_t parts) {
    std::uint64_t t = ticket_.load(std::memory_order_acquire);
    for (;;) {
      if ((t >> kPartBits) != round || (t & (kMaxParts - 1)) >= parts) return;
      if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      fn(ctx, static_cast<std::size_t>(t & (kMaxParts - 1)));
      done_.fetch_add(1, std::memory_order_release);
      t = ticket_.load(std::memory_order_acquire);
    }
  }

  // With mu_ held: start helpers until want_ run (a failure to start one leaves the caller doing more parts).
  void start_helpers() {
    const std::size_t want = want_.load(std::memory_order_relaxed);
    while (alive_ < want) {
      try {
        std::thread(&CopyCrew::helper, this, round_ & kRoundMask).detach();
      } catch (const std::system_error&) {
        return;
      }
      ++alive_;
    }
  }

  // A helper that just finished a round waits kSpinMicros for the next one before it sleeps: waking a sleeping
  // thread costs tens of microseconds in a VM, a good part of one Atari batch's copy.
  void spin_for_round(std::uint64_t seen) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    for (unsigned i = 0; published_.load(std::memory_order_acquire) == seen; ++i) {
      pause();
      if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) return;
    }
  }

  void helper(std::uint64_t seen) {
    for (;;) {
      PartFn fn;
      const void* ctx;
      std::size_t parts;
      std::uint64_t round;
      spin_for_round(seen);
      {
        std::unique_lock<ForkSafeMutex> lock(mu_);
        cv_.wait(lock, [&] { return (round_ & kRoundMask) != seen || alive_ > want_.load(std::memory_order_relaxed); });
        if (alive_ > want_.load(std::memory_order_relaxed)) {  // fewer wanted: this one leaves
          --alive_;
          return;
        }
        seen = round = round_ & kRoundMask;
        fn = fn_;
        ctx = ctx_;
        parts = parts_;
      }
      work(round, fn, ctx, parts);
    }
  }

  ForkSafeMutex mu_;  // held briefly: to publish a round, to start helpers, and by helpers to read a round
  std::condition_variable_any cv_;
  std::atomic<std::size_t> want_{0};  // helpers wanted
  std::atomic<bool> busy_{false};     // a caller owns the crew
  std::size_t alive_ = 0;             // helpers started (mu_)
  std::uint64_t round_ = 0;           // the current round (mu_)
  PartFn fn_ = nullptr;               // the current round's job (mu_)
  const void* ctx_ = nullptr;
  std::size_t parts_ = 0;
  std::atomic<std::uint64_t> ticket_{0};  // (round << kPartBits) | next part
  std::atomic<std::size_t> done_{0};      // parts of the current round finished
  std::atomic<std::uint64_t> published_{0};  // round_, for spinning helpers
  ForkWatch watch_;
};

}  // namespace fastreplay
