// Shared helpers of the fastreplay core: error throwing, a debug-only assert and sanitizer detection.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__SANITIZE_THREAD__)
#define FASTREPLAY_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FASTREPLAY_TSAN 1
#endif
#endif
#ifndef FASTREPLAY_TSAN
#define FASTREPLAY_TSAN 0
#endif

// Internal invariants only; never used to validate input (Release builds define NDEBUG).
#ifdef NDEBUG
#define FR_DEBUG_ASSERT(cond) ((void)0)
#else
#include <cassert>
#define FR_DEBUG_ASSERT(cond) assert(cond)
#endif

namespace fastreplay {

// A memory fence. ThreadSanitizer cannot model fences (GCC rejects them under -fsanitize=thread), so TSan builds
// use a compiler-only fence: they run on x86-64, whose hardware already orders load-load and store-store, and
// under TSan all shared data accesses are atomic anyway (copy.h), so the race analysis is unaffected.
inline void fence(std::memory_order order) {
#if FASTREPLAY_TSAN
  std::atomic_signal_fence(order);
#else
  std::atomic_thread_fence(order);
#endif
}

// The error vocabulary of the core and the bindings: the bindings translate these into Python exceptions.
// A value of the wrong type (TypeError).
struct type_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
[[noreturn]] inline void throw_type(const std::string& msg) { throw type_error(msg); }
// Invalid argument from the caller (pybind11 turns it into ValueError).
[[noreturn]] inline void throw_invalid(const std::string& msg) { throw std::invalid_argument(msg); }
// Index out of range (pybind11 turns it into IndexError).
[[noreturn]] inline void throw_index(const std::string& msg) { throw std::out_of_range(msg); }

// A double as Python's repr writes it ("0.5", "-1.0", "1e-05", "nan", "inf"), so messages read the same from
// every layer.
inline std::string format_real(double x) {
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x || x != x) break;
  }
  std::string s(buf);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

inline constexpr std::size_t kCacheLine = 64;

// a * b, or std::bad_alloc if the product does not fit in size_t (a size no machine could allocate).
inline std::size_t checked_mul(std::size_t a, std::size_t b) {
  if (b != 0 && a > static_cast<std::size_t>(-1) / b) throw std::bad_alloc();
  return a * b;
}

}  // namespace fastreplay
