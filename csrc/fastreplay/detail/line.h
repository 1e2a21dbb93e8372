// The line kernels of SumMinTree: arithmetic on one 64-byte line of 8 doubles, in SSE2 or in portable scalar code.
//
// Exactly one implementation is compiled: line_sse2.h where the compiler targets SSE2 (every x86-64), else
// line_scalar.h. Defining FASTREPLAY_NO_SIMD forces the scalar one, so that it can be built and tested on x86-64
// too (CMake: -DFASTREPLAY_NO_SIMD=ON). Both define, in their own namespace aliased here as `line`:
//
//   struct Line                          one line's 8 values, held in registers
//   Line read_shared(const atomic*)      eight relaxed atomic loads (a writer may be storing into the line)
//   Line read_own(const atomic*)         plain loads, for the serialised writer (they cannot race: readers only load)
//   void write(atomic*, const Line&)     eight relaxed atomic stores (readers may be loading the line)
//   Line scan(const Line& c)             running sums p[i] = c[0] + ... + c[i], added in one fixed order
//   double last(const Line& p)           p[7]
//   double smallest(const Line&, bool)   smallest value; on a line of leaves, zeros count as +inf
//   size_t child(const Line& p, double)  the descent step: j = #{i : p[i] <= min(u, largest double below p[7])}
//   const char* kName                    "sse2" or "scalar"
//
// The two compute the same values: the same additions in the same order, the same comparisons. The sums of scan
// are added in pairs: p1 = c0 + c1, p3 = p1 + (c2 + c3), p5 = p3 + (c4 + c5), p7 = p5 + (c6 + c7), and
// p2 = p1 + c2, p4 = p3 + c4, p6 = p5 + c6. They never decrease, which is all the descent needs; the order is the
// same everywhere (descent and repair), so p7 of a line is exactly its entry in the level above.
#pragma once

#include <atomic>
#include <cstddef>
#include <limits>

namespace fastreplay {
namespace detail {

inline constexpr std::size_t kLineFan = 8;  // doubles per line: one 64-byte cache line
inline constexpr double kLineInf = std::numeric_limits<double>::infinity();

inline double load_relaxed(const std::atomic<double>& a) { return a.load(std::memory_order_relaxed); }
inline void store_relaxed(std::atomic<double>& a, double v) { a.store(v, std::memory_order_relaxed); }

}  // namespace detail
}  // namespace fastreplay

#if defined(__SSE2__) && !defined(FASTREPLAY_NO_SIMD)
#include "fastreplay/detail/line_sse2.h"
namespace fastreplay {
namespace detail {
namespace line = line_sse2;
}  // namespace detail
}  // namespace fastreplay
#else
#include "fastreplay/detail/line_scalar.h"
namespace fastreplay {
namespace detail {
namespace line = line_scalar;
}  // namespace detail
}  // namespace fastreplay
#endif
