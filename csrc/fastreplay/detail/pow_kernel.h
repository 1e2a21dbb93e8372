// The kernel of pow_many (fastreplay/powers.h): x^a for a batch, written once for a lane type D (double, or a
// GCC/Clang vector of doubles) and its integer twin I. No include guard: powers.h includes it twice, each time in
// its own namespace FASTREPLAY_POW_NS, once as it is (the portable copy) and once under #pragma GCC target("avx2")
// (the AVX2 copy, chosen at run time), so that every function here that takes a 32-byte vector is compiled for
// AVX2, and none of them is ever called across the ABI of another target. Include it only through powers.h.
#if !defined(FASTREPLAY_POW_NS)
#error "fastreplay/detail/pow_kernel.h is included by fastreplay/powers.h only"
#endif

namespace fastreplay {
namespace detail {
namespace FASTREPLAY_POW_NS {

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

// x^a for one group of lanes. NaN in a lane means "not computed here" (the error bound in powers.h): the caller
// takes std::pow for it. ahi + alo = a, ahi with 26 significant bits, so ahi * e is exact for |e| < 2^27.
template <class D, class I, bool Full>
FASTREPLAY_POW_INLINE D pow_lanes(D x, double a, double ahi, double alo) {
  const std::int64_t kMant = (std::int64_t(1) << 52) - 1, kOne = std::int64_t(1023) << 52;
  const I b = bit_cast<I>(x);
  D m = bit_cast<D>((b & kMant) | kOne);      // [1, 2)
  const I big = mask(m > 1.4142135623730951);  // -> [sqrt(1/2), sqrt(2))
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


}  // namespace FASTREPLAY_POW_NS
}  // namespace detail
}  // namespace fastreplay
