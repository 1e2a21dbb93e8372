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
// - pow_many(x, a, out, n): out[k] = x[k]^a, computed as 2^(a * log2 x[k]) without a call, two values at a time
//   in the vector registers every x86-64 has (SSE2; portable scalar code elsewhere, the same operations in the
//   same order, so the same bits). log2 x is split exactly into its exponent e and log2 m, m in [sqrt(1/2),
//   sqrt(2)); a * e is formed exactly (a split in two halves of 26 bits), so the fraction of a * log2 x that 2^
//   sees carries no rounding error of the large product; log m is the series 2 atanh((m - 1) / (m + 1)) and 2^f,
//   |f| <= 1/2, its Taylor series, both truncated below 1e-17 and evaluated by Estrin's scheme (short dependency
//   chains). Error bound: relative error below 2^-51 (4.4e-16) times
//   max(1, |a|) for every positive normal x whose power is a normal double (tests/cpp/powers_check.cpp measures
//   the largest error against long double powl on 10^7 points: about 1.5 ulp at a = 0.6). Every other input (0,
//   subnormals, +inf, a result near or beyond the exponent range) falls back to std::pow, lane by lane.
// Costs, 256 values at a time (bench/cpp/per_bench.cpp's stages "leaf pow" and "weights", bench/results/per.md):
// std::pow about 9-10 ns per value, powf 4-8 ns; pow_many about 4.4 ns with AVX2 (7.7 ns with SSE2 alone), its
// float variant about 3.9 ns.
#pragma once

#define FASTREPLAY_POW_MANY 1  // pow_many, LeafPower::many and WeightPower::many exist (for bench/cpp/per_bench.cpp)

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace fastreplay {
namespace detail {
namespace pw {

// The kernel is written once for a value type D (double, or a GCC/Clang vector of doubles) and its integer twin
// I; only these helpers see the difference. They are always inlined, so that the AVX2 copy of the kernel compiles
// them with its own instructions (and no 32-byte vector ever crosses a call: -Wpsabi is silenced for that).
#if defined(__GNUC__)
#define FASTREPLAY_POW_INLINE __attribute__((always_inline)) inline
#else
#define FASTREPLAY_POW_INLINE inline
#endif
#if defined(__GNUC__) && !defined(FASTREPLAY_NO_SIMD)
#define FASTREPLAY_POW_VECTOR 1
// -Wpsabi warns that a 32-byte vector passed by value changes the ABI without AVX; none crosses a call here (every
// function that takes one is always inlined into the AVX2 kernel). Its instantiations are diagnosed at the end of
// the translation unit, so the warning cannot be popped again after this header.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double VD2 __attribute__((vector_size(16)));  // one SSE2 register
typedef std::int64_t VI2 __attribute__((vector_size(16)));
#if defined(__x86_64__) && !defined(__clang__)
#define FASTREPLAY_POW_AVX2 1
typedef double VD4 __attribute__((vector_size(32)));  // one AVX2 register (only in the AVX2 copy of the kernel)
typedef std::int64_t VI4 __attribute__((vector_size(32)));
#endif
#endif
template <class To, class From>
FASTREPLAY_POW_INLINE To bit_cast(From f) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To t;
  std::memcpy(&t, &f, sizeof t);
  return t;
}
// A lane mask (0 or -1 per lane) from a comparison: vector comparisons already give one.
template <class M>
FASTREPLAY_POW_INLINE M mask(M m) { return m; }
FASTREPLAY_POW_INLINE std::int64_t mask(bool b) { return -static_cast<std::int64_t>(b); }

// a or b, lane by lane, as the mask m says. Branch-free.
template <class D, class I>
FASTREPLAY_POW_INLINE D select(I m, D a, D b) {
  return bit_cast<D>((bit_cast<I>(a) & m) | (bit_cast<I>(b) & ~m));
}

// v in every lane.
template <class D>
FASTREPLAY_POW_INLINE D splat(double v) { return D{} + v; }

// Nearest integer (ties to even) for |x| < 2^51: the addition rounds away the fraction. (No -ffast-math here:
// the build never reassociates.)
template <class D>
FASTREPLAY_POW_INLINE D round_int(D x) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  return (x + magic) - magic;
}

// x^a for one group of lanes. NaN in a lane means "not computed here" (see the error bound above): the caller
// takes std::pow for it. ahi + alo = a, ahi with 26 significant bits, so ahi * e is exact for |e| < 2^27.
template <class D, class I, bool Full>
FASTREPLAY_POW_INLINE D pow_lanes(D x, double a, double ahi, double alo) {
  const std::int64_t kMant = (std::int64_t(1) << 52) - 1, kOne = std::int64_t(1023) << 52;
  const I b = bit_cast<I>(x);
  D m = bit_cast<D>((b & kMant) | kOne);                       // [1, 2)
  const I big = mask(m > 1.4142135623730951);           // -> [sqrt(1/2), sqrt(2))
  m = select(big, m * 0.5, m);
  // The exponent field as a double (exact), then e = field - 1023 (+1 where m was halved).
  const I field = (b >> 52) & 0x7ff;
  const D e = (bit_cast<D>(field | std::int64_t(0x4330000000000000)) - 4503599627370496.0) - 1023.0 +
              select(big, splat<D>(1.0), splat<D>(0.0));
  // log m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), |s| <= 0.1716: the terms to s^19 leave < 1e-17 (Full), to
  // s^11 < 2e-11 (for a float result).
  const D s = (m - 1.0) / (m + 1.0);
  const D z = s * s;
  // q = 1/3 + z/5 + z^2/7 + ..., by Estrin's scheme (independent pairs, then powers of z): a short dependency
  // chain, so that the processor overlaps groups instead of waiting on one long Horner chain.
  const D z2 = z * z, z4 = z2 * z2;
  D q;
  if constexpr (Full) {  // to 1/19
    const D z8 = z4 * z4;
    q = ((1.0 / 3 + z * (1.0 / 5)) + z2 * (1.0 / 7 + z * (1.0 / 9))) +
        z4 * ((1.0 / 11 + z * (1.0 / 13)) + z2 * (1.0 / 15 + z * (1.0 / 17))) + z8 * (1.0 / 19);
  } else {  // to 1/11
    q = ((1.0 / 3 + z * (1.0 / 5)) + z2 * (1.0 / 7 + z * (1.0 / 9))) + z4 * (1.0 / 11);
  }
  const D ln_m = 2.0 * s + (2.0 * s) * (z * q);
  // a log2 x = ahi e + alo e + a log2 m: the integer part of the exact ahi e is taken out before anything is added.
  const D t = ahi * e;
  const D n1 = round_int(t);
  D f = (t - n1) + (alo * e + a * (ln_m * 1.4426950408889634));
  const D n2 = round_int(f);
  f = f - n2;  // |f| <= 1/2
  const D n = n1 + n2;
  // 2^f = exp(g), g = f ln 2, |g| <= 0.347: Taylor terms to g^13 leave < 5e-18 (Full), to g^9 < 1e-11.
  const D g = f * 0.6931471805599453;
  const D g2 = g * g, g4 = g2 * g2;
  // sum g^i / i!, by Estrin's scheme as q above, the 1 added last (the sum of the rest is below 0.42).
  const D e23 = 1.0 / 2 + g * (1.0 / 6), e45 = 1.0 / 24 + g * (1.0 / 120), e67 = 1.0 / 720 + g * (1.0 / 5040),
          e89 = 1.0 / 40320 + g * (1.0 / 362880);
  D hi;  // the terms from g^4 on, divided by g^4
  if constexpr (Full) {  // to g^13
    const D e1011 = 1.0 / 3628800 + g * (1.0 / 39916800), e1213 = 1.0 / 479001600 + g * (1.0 / 6227020800.0);
    hi = (e45 + g2 * e67) + g4 * ((e89 + g2 * e1011) + g4 * e1213);
  } else {  // to g^9
    hi = (e45 + g2 * e67) + g4 * e89;
  }
  const D p = 1.0 + (g + g2 * (e23 + g2 * hi));
  // 2^n built from its bits (masked: no overflow or negative shift even in lanes left to std::pow); only |n| <= 1000
  // and positive normal finite x are computed here.
  const D biased = n + (1023.0 + 4503599627370496.0);  // exact: n is an integer, |n| small
  const D scale = bit_cast<D>((bit_cast<I>(biased) & 0x7ff) << 52);  // the low bits of biased: n + 1023
  const I ok = mask(x >= std::numeric_limits<double>::min()) & mask(x <= std::numeric_limits<double>::max()) &
               mask(n <= 1000.0) & mask(n >= -1000.0);
  return select(ok, p * scale, splat<D>(std::numeric_limits<double>::quiet_NaN()));
}

// The two halves of a: ahi keeps a's top 26 significant bits (Veltkamp's split), alo = a - ahi exactly.
inline void split(double a, double& ahi, double& alo) {
  const double c = a * 134217729.0;  // 2^27 + 1
  ahi = c - (c - a);
  alo = a - ahi;
  if (!std::isfinite(c)) ahi = a, alo = 0.0;  // |a| > 2^996: every finite x^a overflows or underflows anyway
}

// out[k] = x[k]^a, `lanes` values at a time, the last group padded with 1.0 (each lane's arithmetic is its own,
// so padding changes no bits). A lane the kernel leaves to std::pow (NaN) takes it here, from the input kept in a
// register: x and out may be the same array.
template <class D, class I, bool Full>
FASTREPLAY_POW_INLINE void pow_groups(const double* x, double a, double ahi, double alo, double* out, std::size_t n) {
  constexpr std::size_t lanes = sizeof(D) / sizeof(double);
  for (std::size_t k = 0; k < n; k += lanes) {
    const std::size_t m = std::min(lanes, n - k);
    D in;
    if (m == lanes) {
      std::memcpy(&in, x + k, sizeof in);
    } else {
      double tmp[lanes];
      for (std::size_t i = 0; i < lanes; ++i) tmp[i] = i < m ? x[k + i] : 1.0;
      std::memcpy(&in, tmp, sizeof in);
    }
    const D v = pow_lanes<D, I, Full>(in, a, ahi, alo);
    double r[lanes];
    std::memcpy(r, &v, sizeof r);
    // One test per group (rare: a well-predicted branch): is any lane NaN?
    const I nan = mask(v != v);
    std::int64_t any[lanes];
    std::memcpy(any, &nan, sizeof any);
    std::int64_t bad = 0;
    for (std::size_t i = 0; i < lanes; ++i) bad |= any[i];
    if (bad) {
      double xs[lanes];
      std::memcpy(xs, &in, sizeof xs);
      for (std::size_t i = 0; i < lanes; ++i)
        if (r[i] != r[i]) r[i] = std::pow(xs[i], a);
    }
    if (m == lanes)
      std::memcpy(out + k, r, sizeof r);
    else
      for (std::size_t i = 0; i < m; ++i) out[k + i] = r[i];
  }
}

// The portable kernel: SSE2 vectors (every x86-64), or scalar code where vectors are not available.
template <bool Full>
inline void pow_portable(const double* x, double a, double ahi, double alo, double* out, std::size_t n) {
#if defined(FASTREPLAY_POW_VECTOR)
  pow_groups<VD2, VI2, Full>(x, a, ahi, alo, out, n);
#else
  pow_groups<double, std::int64_t, Full>(x, a, ahi, alo, out, n);
#endif
}

#if defined(FASTREPLAY_POW_AVX2)
// The same kernel, four lanes at a time, for processors with AVX2 (chosen at run time: the build targets every
// x86-64). Without FMA, so that every operation rounds as in the portable kernel: the same bits on either path.
template <bool Full>
__attribute__((target("avx2"))) inline void pow_avx2(const double* x, double a, double ahi, double alo,
                                                    double* out, std::size_t n) {
  pow_groups<VD4, VI4, Full>(x, a, ahi, alo, out, n);
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
