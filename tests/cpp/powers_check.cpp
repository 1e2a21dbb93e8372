// powers_check: pow_many (csrc/fastreplay/powers.h) against long double powl, on both of its paths.
//
//   cmake -S . -B build/t -DFASTREPLAY_TESTS=ON && cmake --build build/t --target powers_check && build/t/powers_check
//   (an argument: points per exponent, default 10^6; `quick`: 10^5)
//
// Checks, for exponents 0.05 .. 3 and x spread over the whole double range (log-uniform):
// - the error bound of the header: |pow_many(x, a) - x^a| <= 2^-51 max(1, |a|) x^a (powl's own error, about
//   2^-64, is far below it); the largest error found is printed in ulps;
// - the float variant (weights): within 1 ulp of float of x^a;
// - the portable path (SSE2 or scalar) and the AVX2 path (where the processor has it) give the same bits;
// - inputs outside the kernel's range (0, subnormals, +inf, results near the exponent limits) give exactly what
//   std::pow gives; a batch of any length gives what single calls give;
// - the shortcuts of LeafPower (alpha 0, 0.5, 1) and WeightPower (beta 0, 1) give std::pow's bits.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "fastreplay/powers.h"

#include "check.h"

using fastreplay::pow_many;
using fastreplay::detail::pw::PowPath;

static double ulps(double got, long double want) {
  const long double ulp = std::ldexp(1.0L, std::ilogb(static_cast<double>(want)) - 52);
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

int main(int argc, char** argv) {
  std::size_t n = 1000000;
  if (argc > 1) n = std::strcmp(argv[1], "quick") == 0 ? 100000 : static_cast<std::size_t>(std::atof(argv[1]));
  std::mt19937_64 gen(7);
  for (const double a : {0.6, 0.4, 0.25, 0.7, 0.05, 0.999, 1.5, 2.0, 3.0}) {
    // x^a within the double range: log x uniform over [-700, 700] / max(1, a)
    std::uniform_real_distribution<double> lx(-700.0, 700.0);
    std::vector<double> x(n), y(n), z(n);
    for (auto& v : x) v = std::exp(lx(gen) / std::max(1.0, a));
    pow_many(x.data(), a, y.data(), n);
    pow_many(x.data(), a, z.data(), n, PowPath::Portable);
    CHECK(std::memcmp(y.data(), z.data(), n * sizeof(double)) == 0);
    double worst = 0.0;
    const long double bound = std::ldexp(1.0L, -51) * std::max(1.0, a);
    for (std::size_t k = 0; k < n; ++k) {
      const long double want = powl(static_cast<long double>(x[k]), static_cast<long double>(a));
      worst = std::max(worst, ulps(y[k], want));
      if (!(std::fabs(static_cast<long double>(y[k]) - want) <= bound * want)) {
        std::fprintf(stderr, "a=%g x=%.17g: %.17g, powl %.20Lg\n", a, x[k], y[k], want);
        CHECK(false);
        break;
      }
    }
    // the float variant, on ratios in (0, 1]
    std::uniform_real_distribution<double> lr(-700.0, 0.0);
    double worst_f = 0.0;
    for (std::size_t k = 0; k < n; ++k) x[k] = std::exp(lr(gen));
    pow_many<false>(x.data(), a, y.data(), n);
    pow_many<false>(x.data(), a, z.data(), n, PowPath::Portable);
    CHECK(std::memcmp(y.data(), z.data(), n * sizeof(double)) == 0);
    for (std::size_t k = 0; k < n; ++k) {
      const long double want = powl(static_cast<long double>(x[k]), static_cast<long double>(a));
      if (want < std::numeric_limits<float>::min() || want > std::numeric_limits<float>::max()) continue;
      const float got = static_cast<float>(y[k]);
      const float ulp_f = std::nextafter(static_cast<float>(want), 0.0f) - static_cast<float>(want);
      const double e = static_cast<double>(std::fabs(static_cast<long double>(got) - want) / std::fabs(ulp_f));
      worst_f = std::max(worst_f, e);
      CHECK(e <= 1.0);
    }
    std::printf("a=%-5g largest error %.2f ulp (the bound, relative 2^-51 max(1, a), is %.0f ulp or more); "
                "float variant %.2f ulp of float\n", a, worst, 2.0 * std::max(1.0, a), worst_f);
  }

  // Outside the kernel's range: std::pow's bits, on both paths; batches of every length 1 .. 9 as single calls.
  const double tiny = std::numeric_limits<double>::denorm_min(), inf = std::numeric_limits<double>::infinity();
  const std::vector<double> edge = {0.0, tiny, 1e-310, std::numeric_limits<double>::min(), 1e-300, 1e300,
                                    std::numeric_limits<double>::max(), inf, 1.0, 2.0, 0.5, 3.0};
  for (const double a : {0.6, 0.05, 2.0, 3.0, 40.0, 1e-3}) {
    for (const PowPath path : {PowPath::Auto, PowPath::Portable}) {
      std::vector<double> y(edge.size());
      pow_many(edge.data(), a, y.data(), edge.size(), path);
      for (std::size_t k = 0; k < edge.size(); ++k) {
        const double want = std::pow(edge[k], a);
        const bool exact_case = !(edge[k] >= std::numeric_limits<double>::min()) || edge[k] == inf ||
                                std::fabs(a * std::log2(edge[k])) > 999.0;
        if (exact_case) {
          CHECK(std::memcmp(&y[k], &want, sizeof want) == 0);
        } else {
          CHECK(std::fabs(y[k] - want) <= 1e-15 * std::max(1.0, a) * want);
        }
      }
      for (std::size_t len = 1; len <= 9; ++len) {
        std::vector<double> batch(len), one(len);
        pow_many(edge.data(), a, batch.data(), len, path);
        for (std::size_t k = 0; k < len; ++k) pow_many(edge.data() + k, a, one.data() + k, 1, path);
        CHECK(std::memcmp(batch.data(), one.data(), len * sizeof(double)) == 0);
      }
    }
  }

  // The shortcuts: std::pow's bits.
  for (const double x : {0.0, 1e-300, 0.3, 1.0, 7.5, 1e300, inf}) {
    for (const double a : {0.0, 0.5, 1.0}) {
      double got = fastreplay::LeafPower(a)(x), want = std::pow(x, a);
      if (a == 0.5) want = std::sqrt(x);  // sqrt is correctly rounded; pow(x, 0.5) within 1 ulp of it
      CHECK(std::memcmp(&got, &want, sizeof got) == 0);
    }
  }
  for (const double r : {0.0, 1e-60, 1e-30, 0.3, 1.0, 2.0}) {
    const float one = fastreplay::WeightPower(1.0)(r), zero = fastreplay::WeightPower(0.0)(r);
    CHECK(one == std::max(static_cast<float>(std::min(r, 1.0)), std::numeric_limits<float>::denorm_min()));
    CHECK(zero == 1.0f);
    const float w = fastreplay::WeightPower(0.4)(r);
    const double want = std::max(std::pow(std::min(r, 1.0), 0.4), static_cast<double>(std::numeric_limits<float>::denorm_min()));
    CHECK(w > 0.0f && w <= 1.0f && std::fabs(w - want) <= 2e-7 * want);
  }
  std::printf("powers_check: %s (%d failures)\n", g_failures ? "FAILED" : "ok", g_failures);
  return g_failures ? 1 : 0;
}
