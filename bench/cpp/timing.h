// Timing for the C++ microbenchmarks: the best of 41 repetitions of the mean time per call, in microseconds.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <type_traits>

// fn() (or fn(i), i counting the calls of a repetition) is called in repetitions of about 2 ms each (the count
// doubled until one takes that long); the figure is the best repetition's mean, which other processes disturb least.
template <class F>
double best_us(F&& fn) {
  auto call = [&](std::size_t i) {
    if constexpr (std::is_invocable_v<F&, std::size_t>)
      fn(i);
    else
      fn();
  };
  std::size_t iters = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) call(i);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > 0.002) break;
    iters *= 2;
  }
  double best = 1e30;
  for (int rep = 0; rep < 41; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < iters; ++i) call(i);
    best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                              static_cast<double>(iters));
  }
  return best;
}
