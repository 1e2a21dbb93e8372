// The two powers of prioritized replay, with exact shortcuts for the exponents used in practice.
//
// - LeafPower: the leaf x^alpha of x = p + eps (double). alpha = 1 gives x, 0 gives 1, 0.5 gives sqrt(x): each
//   is what std::pow returns for that exponent (pow(x, 1) = x and pow(x, 0) = 1 exactly; sqrt is correctly
//   rounded and pow(x, 0.5) is within 1 ulp of it, both for every x >= 0 including +0 and +inf). Other
//   exponents take pow_many below (a batch, or one value: the same function, bit for bit).
// - WeightPower: the importance weight r^beta of a ratio r = p_min / p_i in [0, 1], in float32: pow_many's double
//   result rounded to float (so within 1 ulp of float, as powf), clamped to the smallest positive float so that
//   it stays in (0, 1]. beta = 1 gives r and beta = 0 gives 1 without a power call, bit for bit what powf gives
//   for them.
// - pow_many(x, a, out, n): out[k] = x[k]^a, computed as 2^(a * log2 x[k]) without a call, in vector registers:
//   four values at a time with AVX2 (chosen at run time), else two with SSE2 (every x86-64), else portable scalar
//   code; the same operations in the same order on every path, so the same bits (detail/pow_kernel.h, compiled
//   once per path). log2 x is split exactly into its exponent e and log2 m, m in [sqrt(1/2), sqrt(2)); a * e is
//   formed exactly (a split in two halves of 26 bits), so the fraction of a * log2 x that 2^ sees carries no
//   rounding error of the large product; log m is the series 2 atanh((m - 1) / (m + 1)) and 2^f, |f| <= 1/2, its
//   Taylor series, both truncated below 1e-17 and evaluated by Estrin's scheme (short dependency chains). Error
//   bound: relative error below 2^-51 (4.4e-16) times max(1, |a|) for every positive normal x whose power is a
//   normal double (tests/cpp/powers_check.cpp checks it against long double powl on 10^6 points per exponent
//   from 0.05 to 3, on both paths: about 1.5 ulp at most for a = 0.6). Every other input (0, subnormals, +inf, a
//   result near or beyond the exponent range) falls back to std::pow, lane by lane. pow_many<false>, for the
//   weights, truncates both series earlier (below 2e-11): within 1 ulp of float once rounded to float.
// Costs, 256 values at a time (bench/cpp/per_bench.cpp's stages "leaf pow" and "weights", bench/results/per.md):
// std::pow about 9-10 ns per value, powf 4-8 ns; pow_many about 4.3 ns with AVX2 (7.6 ns with SSE2 alone), its
// float variant about 3.7 ns.
#pragma once

#define FASTREPLAY_POW_MANY 1  // pow_many, LeafPower::many and WeightPower::many exist (for bench/cpp/per_bench.cpp)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

// The lane types of the kernel (detail/pow_kernel.h): GCC/Clang vectors of doubles, 16 bytes (SSE2, every
// x86-64) in the portable copy and 32 bytes (AVX2) in the AVX2 copy; plain doubles elsewhere. Its helpers are
// always inlined.
#if defined(__GNUC__)
#define FASTREPLAY_POW_INLINE __attribute__((always_inline)) inline
#else
#define FASTREPLAY_POW_INLINE inline
#endif
#if defined(__GNUC__) && !defined(FASTREPLAY_NO_SIMD)
#define FASTREPLAY_POW_VECTOR 1
#if defined(__x86_64__) && !defined(__clang__)
#define FASTREPLAY_POW_AVX2 1
#endif
#endif

// The portable copy of the kernel, and the AVX2 one.
#define FASTREPLAY_POW_NS pw_portable
#include "fastreplay/detail/pow_kernel.h"
#undef FASTREPLAY_POW_NS
#if defined(FASTREPLAY_POW_AVX2)
#pragma GCC push_options
#pragma GCC target("avx2")
#define FASTREPLAY_POW_NS pw_avx2
#include "fastreplay/detail/pow_kernel.h"
#undef FASTREPLAY_POW_NS
#pragma GCC pop_options
#endif

namespace fastreplay {
namespace detail {
namespace pw {

// The two halves of a: ahi keeps a's top 26 significant bits (Veltkamp's split), alo = a - ahi exactly.
inline void split(double a, double& ahi, double& alo) {
  const double c = a * 134217729.0;  // 2^27 + 1
  ahi = c - (c - a);
  alo = a - ahi;
  if (!std::isfinite(c)) ahi = a, alo = 0.0;  // |a| > 2^996: every finite x^a overflows or underflows anyway
}

// The portable kernel: SSE2 vectors (every x86-64), or scalar code where vectors are not available.
template <bool Full>
inline void pow_portable(const double* x, double a, double ahi, double alo, double* out, std::size_t n) {
#if defined(FASTREPLAY_POW_VECTOR)
  typedef double VD __attribute__((vector_size(16)));
  typedef std::int64_t VI __attribute__((vector_size(16)));
  pw_portable::pow_groups<VD, VI, Full>(x, a, ahi, alo, out, n);
#else
  pw_portable::pow_groups<double, std::int64_t, Full>(x, a, ahi, alo, out, n);
#endif
}

#if defined(FASTREPLAY_POW_AVX2)
// The same kernel, four lanes at a time, for processors with AVX2 (chosen at run time: the build targets every
// x86-64). Without FMA, so that every operation rounds as in the portable kernel: the same bits on either path.
template <bool Full>
__attribute__((target("avx2"))) inline void pow_avx2(const double* x, double a, double ahi, double alo,
                                                    double* out, std::size_t n) {
  typedef double VD __attribute__((vector_size(32)));
  typedef std::int64_t VI __attribute__((vector_size(32)));
  pw_avx2::pow_groups<VD, VI, Full>(x, a, ahi, alo, out, n);
}
inline bool have_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

// Which kernel pow_many takes: the fastest the processor runs (Auto), or the portable one (for tests).
enum class PowPath { Auto, Portable };

}  // namespace pw
}  // namespace detail

// out[k] = x[k]^a for a batch (the error bound in the header comment); x and out may be the same array. Full: to
// double precision; else to about 1e-11, for a result rounded to float. O(n)
template <bool Full = true>
inline void pow_many(const double* x, double a, double* out, std::size_t n,
                     detail::pw::PowPath path = detail::pw::PowPath::Auto) {
  double ahi, alo;
  detail::pw::split(a, ahi, alo);
#if defined(FASTREPLAY_POW_AVX2)
  if (path == detail::pw::PowPath::Auto && detail::pw::have_avx2())
    detail::pw::pow_avx2<Full>(x, a, ahi, alo, out, n);
  else
#endif
    detail::pw::pow_portable<Full>(x, a, ahi, alo, out, n);
  (void)path;
}

class LeafPower {
 public:
  explicit LeafPower(double alpha)
      : alpha_(alpha), kind_(alpha == 1.0 ? One : alpha == 0.0 ? Zero : alpha == 0.5 ? Half : Any) {}
  double alpha() const { return alpha_; }
  // x^alpha for x >= 0: pow_many of one value. O(1)
  double operator()(double x) const {
    switch (kind_) {
      case One:
        return x;
      case Zero:
        return 1.0;
      case Half:
        return std::sqrt(x);
      default: {
        double r;
        pow_many(&x, alpha_, &r, 1);
        return r;
      }
    }
  }
  // x[k] = x[k]^alpha for a batch: the same values as operator(), bit for bit. O(n)
  void many(double* x, std::size_t n) const {
    if (kind_ == Any) return pow_many(x, alpha_, x, n);
    for (std::size_t k = 0; k < n; ++k) x[k] = (*this)(x[k]);
  }

 private:
  enum Kind { Any, One, Zero, Half };
  double alpha_;
  Kind kind_;
};

class WeightPower {
 public:
  explicit WeightPower(double beta) : beta_(beta), kind_(beta == 1.0 ? One : beta == 0.0 ? Zero : Any) {}
  // w[k] = max(min(r[k], 1)^beta, smallest positive float) in float32, for r[k] >= 0. r is overwritten (scratch).
  // O(n)
  void many(double* r, float* w, std::size_t n) const {
    for (std::size_t k = 0; k < n; ++k) r[k] = std::min(r[k], 1.0);
    switch (kind_) {
      case One:
        for (std::size_t k = 0; k < n; ++k) w[k] = clamp(static_cast<float>(r[k]));
        return;
      case Zero:
        for (std::size_t k = 0; k < n; ++k) w[k] = 1.0f;
        return;
      default:
        pow_many<false>(r, beta_, r, n);
        for (std::size_t k = 0; k < n; ++k) w[k] = clamp(static_cast<float>(r[k]));
    }
  }
  // The same for one ratio. O(1)
  float operator()(double r) const {
    float w;
    many(&r, &w, 1);
    return w;
  }

 private:
  static float clamp(float w) { return std::max(w, std::numeric_limits<float>::denorm_min()); }
  enum Kind { Any, One, Zero };
  double beta_;
  Kind kind_;
};

}  // namespace fastreplay
