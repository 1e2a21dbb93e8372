// RateLimiter tests of core_tests (included by core_tests.cpp after its CHECK macro): Reverb's checks, min size,
// non-blocking and timed-out calls, release, cancel, and a writer far faster than the sampler.
#pragma once

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fastreplay/rate_limiter.h"

// RateLimiter: Reverb's checks, min size, non-blocking and timed-out calls, cancel, and a writer far faster than
// the sampler: every snapshot of the counters keeps error = inserts * spi - samples within the band.
static void test_rate_limiter(double seconds) {
  using RL = fastreplay::RateLimiter;
  auto rejects = [](double spi, std::int64_t min_size, double lo, double hi) {
    try {
      RL rl(spi, min_size, lo, hi);
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  CHECK(rejects(0.0, 1, -1, 1));
  CHECK(rejects(1.0, 0, -1, 1));
  CHECK(rejects(1.0, 1, 1, 1));
  CHECK(rejects(4.0, 1, -3, 3));  // band 6 < 2 * 4
  CHECK(!rejects(4.0, 1, -4, 4));
  {
    RL rl(2.0, 3, 6.0 - 4.0, 6.0 + 4.0);  // SampleToInsertRatio(spi=2, min_size=3, error_buffer=4)
    CHECK(rl.acquire(RL::Side::Sample, 1, 0.0) == RL::Result::WouldBlock);  // below min size
    CHECK(rl.acquire(RL::Side::Insert, 3, 0.0) == RL::Result::Ok);         // free up to min size
    CHECK(rl.acquire(RL::Side::Insert, 1, 0.0) == RL::Result::Ok);         // error 8 <= 10
    CHECK(rl.acquire(RL::Side::Insert, 1, 0.0) == RL::Result::Ok);         // error 10 <= 10
    CHECK(rl.acquire(RL::Side::Insert, 1, 0.0) == RL::Result::WouldBlock); // error 12 > 10
    CHECK(rl.acquire(RL::Side::Sample, 8, 0.0) == RL::Result::Ok);         // 10 - 8 = 2 >= 2
    CHECK(rl.acquire(RL::Side::Sample, 1, 0.0) == RL::Result::WouldBlock); // 1 < 2
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(rl.acquire(RL::Side::Sample, 1, 0.05) == RL::Result::TimedOut);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(45));
    bool threw = false;
    try {
      rl.acquire(RL::Side::Sample, 9, 0.0);  // larger than the band of 8
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw);
    rl.release(RL::Side::Sample, 8);  // the 8 sampled rows taken back: error 10 again, a sample of 8 fits
    CHECK(rl.counters().samples == 0 && rl.can_proceed(RL::Side::Sample, 8));
    threw = false;
    try {
      rl.release(RL::Side::Insert, 6);  // more than the 5 counted
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw && rl.counters().inserts == 5);
    CHECK(rl.acquire(RL::Side::Sample, 8, 0.0) == RL::Result::Ok);  // error 2: the next sample must wait
    std::thread blocked([&] { CHECK(rl.acquire(RL::Side::Sample, 5, -1.0) == RL::Result::Cancelled); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    rl.cancel();
    blocked.join();
  }
  // Stress: 2 writers inserting 5 rows per call as fast as they can, 1 sampler of 8 rows sleeping between calls.
  const double spi = 0.5, lo = 50.0 * spi - 20.0, hi = 50.0 * spi + 20.0;
  RL rl(spi, 50, lo, hi);
  std::atomic<bool> stop{false};
  std::atomic<long> violations{0}, samples_done{0};
  auto check = [&] {
    const auto c = rl.counters();
    const double err = static_cast<double>(c.inserts) * spi - static_cast<double>(c.samples);
    if ((c.inserts > 50 && err > hi) || (c.samples > 0 && err < lo)) violations.fetch_add(1);
  };
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w)
    ts.emplace_back([&] {
      while (!stop.load()) {
        if (rl.acquire(RL::Side::Insert, 5, 0.01) == RL::Result::Ok) check();
      }
    });
  ts.emplace_back([&] {
    while (!stop.load()) {
      if (rl.acquire(RL::Side::Sample, 8, 0.01) == RL::Result::Ok) {
        samples_done.fetch_add(1);
        check();
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  // At least `seconds`, and until the sampler has run 20 times (a loaded machine may starve it; 60 s at most).
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(seconds) ||
         (samples_done.load() < 20 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop.store(true);
  for (auto& t : ts) t.join();
  CHECK(violations.load() == 0);
  CHECK(samples_done.load() >= 20);
  const auto c = rl.counters();
  const double err = static_cast<double>(c.inserts) * spi - static_cast<double>(c.samples);
  CHECK(err <= hi && err >= lo);
}
