// RateLimiter: Reverb's samples-per-insert rate limiting for a buffer that many threads add to and sample from.
//
// It counts inserted rows and sampled rows and keeps error = inserts * spi - samples within [min_diff, max_diff]
// by blocking whichever side runs ahead:
//   - an insert of n rows may proceed when inserts + n <= min_size (filling up to the minimum is always allowed),
//     or when (inserts + n) * spi - samples <= max_diff;
//   - a sample of n rows may proceed when inserts >= min_size and inserts * spi - (samples + n) >= min_diff.
// So error <= max_diff after every insert that passed the minimum, and error >= min_diff after every sample.
// Blocked calls wait on a condition variable (one per side) with an optional deadline, or return at once
// (timeout 0). cancel() wakes every waiter and makes all later waits fail with Cancelled (used at shutdown).
// The configuration checks (Reverb's, which reject bands in which one side could block forever) live in
// check_config; each call's own size is checked against the band in acquire (a call larger than the band could
// never proceed). Batched calls: a sample of B rows and an insert of n rows can both be blocked at once when the band
// is narrower than B + n * spi, so choose max_diff - min_diff >= B + n * spi for the largest calls of each side.
// Free of Python: the bindings release the GIL around acquire.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>

#include "fastreplay/common.h"

namespace fastreplay {

class RateLimiter {
 public:
  enum class Side { Insert, Sample };
  enum class Result { Ok, WouldBlock, TimedOut, Cancelled };

  struct Counters {
    std::int64_t inserts = 0;
    std::int64_t samples = 0;
  };

  // Throws std::invalid_argument for a configuration that could block forever (see check_config).
  RateLimiter(double samples_per_insert, std::int64_t min_size, double min_diff, double max_diff)
      : spi_(samples_per_insert), min_size_(min_size), min_diff_(min_diff), max_diff_(max_diff) {
    check_config(samples_per_insert, min_size, min_diff, max_diff);
  }

  // Reverb's checks: spi finite and > 0, min_size >= 1, finite min_diff < max_diff, and a band at least
  // 2 * max(1, spi) wide (a narrower one can block a single-row insert and a single-row sample at once).
  static void check_config(double spi, std::int64_t min_size, double min_diff, double max_diff) {
    if (!(spi > 0.0) || !std::isfinite(spi))
      throw std::invalid_argument("RateLimiter: samples_per_insert must be finite and > 0, got " + std::to_string(spi));
    if (min_size < 1)
      throw std::invalid_argument("RateLimiter: min_size_to_sample must be >= 1, got " + std::to_string(min_size));
    if (!std::isfinite(min_diff) || !std::isfinite(max_diff) || !(min_diff < max_diff))
      throw std::invalid_argument("RateLimiter: need finite min_diff < max_diff, got min_diff=" +
                                  std::to_string(min_diff) + ", max_diff=" + std::to_string(max_diff));
    const double need = 2.0 * std::max(1.0, spi);
    if (max_diff - min_diff < need)
      throw std::invalid_argument("RateLimiter: the band max_diff - min_diff = " + std::to_string(max_diff - min_diff) +
                                  " must be >= 2 * max(1, samples_per_insert) = " + std::to_string(need) +
                                  "; a narrower band could block inserts and samples at the same time (deadlock)");
  }

  // Waits until n rows of `side` may proceed, then counts them. timeout_s < 0: no deadline; 0: never waits.
  // Throws std::invalid_argument for n < 0 or a call larger than the band (it could never proceed).
  Result acquire(Side side, std::int64_t n, double timeout_s) {
    check_size(side, n);
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return cancelled_ || can(side, n); };
    if (!ready()) {
      if (timeout_s == 0.0) return Result::WouldBlock;
      auto& cv = side == Side::Insert ? insert_cv_ : sample_cv_;
      if (timeout_s < 0.0) {
        cv.wait(lock, ready);
      } else {
        const auto d = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(std::min(timeout_s, 1e9)));
        if (!cv.wait_for(lock, d, ready)) return Result::TimedOut;
      }
    }
    if (cancelled_) return Result::Cancelled;
    if (side == Side::Insert) {
      c_.inserts += n;
      sample_cv_.notify_all();
    } else {
      c_.samples += n;
      insert_cv_.notify_all();
    }
    return Result::Ok;
  }

  // Whether n rows of `side` could proceed now (without counting them).
  bool can_proceed(Side side, std::int64_t n) const {
    std::lock_guard<std::mutex> lock(mu_);
    return can(side, n);
  }

  // Takes back n rows of `side` counted by acquire (the call they were for failed); wakes the other side's waiters.
  void release(Side side, std::int64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t& c = side == Side::Insert ? c_.inserts : c_.samples;
    if (n < 0 || n > c)
      throw std::invalid_argument("RateLimiter: cannot release " + std::to_string(n) + " rows of " +
                                  std::to_string(c) + " counted");
    c -= n;
    insert_cv_.notify_all();
    sample_cv_.notify_all();
  }

  // Wakes every blocked call (they return Cancelled) and makes later blocking calls return Cancelled too.
  void cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    insert_cv_.notify_all();
    sample_cv_.notify_all();
  }

  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  Counters counters() const {
    std::lock_guard<std::mutex> lock(mu_);
    return c_;
  }

  // Restores counters (a checkpoint); wakes the waiters, whose condition may now hold.
  void set_counters(Counters c) {
    if (c.inserts < 0 || c.samples < 0)
      throw std::invalid_argument("RateLimiter: counters must be >= 0, got inserts=" + std::to_string(c.inserts) +
                                  ", samples=" + std::to_string(c.samples));
    std::lock_guard<std::mutex> lock(mu_);
    c_ = c;
    insert_cv_.notify_all();
    sample_cv_.notify_all();
  }

  // Changes samples_per_insert live (checked as at construction); wakes the waiters.
  void set_samples_per_insert(double spi) {
    check_config(spi, min_size_, min_diff_, max_diff_);
    std::lock_guard<std::mutex> lock(mu_);
    spi_ = spi;
    insert_cv_.notify_all();
    sample_cv_.notify_all();
  }

  double samples_per_insert() const {
    std::lock_guard<std::mutex> lock(mu_);
    return spi_;
  }
  std::int64_t min_size() const { return min_size_; }
  double min_diff() const { return min_diff_; }
  double max_diff() const { return max_diff_; }

 private:
  void check_size(Side side, std::int64_t n) const {
    if (n < 0) throw std::invalid_argument("RateLimiter: the number of rows must be >= 0, got " + std::to_string(n));
    const double band = max_diff_ - min_diff_;
    std::lock_guard<std::mutex> lock(mu_);
    const double cost = side == Side::Insert ? static_cast<double>(n) * spi_ : static_cast<double>(n);
    // An insert is free while it stays within min_size, so only inserts past it are bounded by the band.
    if (cost > band && !(side == Side::Insert && c_.inserts + n <= min_size_))
      throw std::invalid_argument(
          std::string("RateLimiter: ") + (side == Side::Insert ? "an insert of " : "a sample of ") + std::to_string(n) +
          " rows moves the error by " + std::to_string(cost) + ", more than the band max_diff - min_diff = " +
          std::to_string(band) + ": it could never proceed; use smaller calls or a wider error_buffer");
  }

  bool can(Side side, std::int64_t n) const {
    if (side == Side::Insert) {
      if (c_.inserts + n <= min_size_) return true;
      return static_cast<double>(c_.inserts + n) * spi_ - static_cast<double>(c_.samples) <= max_diff_;
    }
    if (c_.inserts < min_size_) return false;
    return static_cast<double>(c_.inserts) * spi_ - static_cast<double>(c_.samples + n) >= min_diff_;
  }

  mutable std::mutex mu_;
  std::condition_variable insert_cv_, sample_cv_;
  Counters c_;
  double spi_;
  const std::int64_t min_size_;
  const double min_diff_, max_diff_;
  bool cancelled_ = false;
};

}  // namespace fastreplay
