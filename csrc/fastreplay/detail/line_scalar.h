// SumMinTree's line kernels in portable C++: a line is an array of 8 doubles. See line.h.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

// Included by line.h only, after its shared helpers.
namespace fastreplay {
namespace detail {
namespace line_scalar {

inline constexpr const char* kName = "scalar";

struct Line {
  double v[kLineFan];
};

inline Line read_shared(const std::atomic<double>* src) {
  Line r;
  for (std::size_t i = 0; i < kLineFan; ++i) r.v[i] = load_relaxed(src[i]);
  return r;
}

inline Line read_own(const std::atomic<double>* src) {
  Line r;
  std::memcpy(r.v, static_cast<const void*>(src), sizeof r.v);
  return r;
}

inline void write(std::atomic<double>* dst, const Line& line) {
  for (std::size_t i = 0; i < kLineFan; ++i) store_relaxed(dst[i], line.v[i]);
}

inline Line scan(const Line& c) {
  Line p;
  for (std::size_t i = 0; i < kLineFan; i += 2) {
    const double base = i ? p.v[i - 1] : 0.0;
    p.v[i] = base + c.v[i];
    p.v[i + 1] = base + (c.v[i] + c.v[i + 1]);
  }
  return p;
}

inline double last(const Line& p) { return p.v[kLineFan - 1]; }

inline double smallest(const Line& c, bool leaves) {
  double m = kLineInf;
  if (leaves) {
    for (std::size_t i = 0; i < kLineFan; ++i) {
      const double v = c.v[i] > 0.0 ? c.v[i] : kLineInf;
      m = v < m ? v : m;
    }
  } else {
    for (std::size_t i = 0; i < kLineFan; ++i) m = c.v[i] < m ? c.v[i] : m;
  }
  return m;
}

// top = p[7]'s bit pattern minus one; when p[7] == 0 that is a NaN, so t is NaN, every comparison false, j = 0.
inline std::size_t child(const Line& p, double u) {
  double top = p.v[kLineFan - 1];
  std::uint64_t b;
  std::memcpy(&b, &top, sizeof b);
  b -= 1;
  std::memcpy(&top, &b, sizeof b);
  const double t = u < top ? u : top;
  std::size_t j = 0;
  for (std::size_t i = 0; i < kLineFan; ++i) j += p.v[i] <= t;
  return j;
}

}  // namespace line_scalar
}  // namespace detail
}  // namespace fastreplay
