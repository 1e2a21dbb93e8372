// The two powers of prioritized replay, with exact shortcuts for the exponents used in practice.
//
// - LeafPower: the leaf x^alpha of x = p + eps (double). alpha = 1 gives x, 0 gives 1, 0.5 gives sqrt(x): each
//   is what std::pow returns for that exponent (pow(x, 1) = x and pow(x, 0) = 1 exactly; sqrt is correctly
//   rounded and pow(x, 0.5) is within 1 ulp of it, both for every x >= 0 including +0 and +inf). Other
//   exponents call std::pow.
// - WeightPower: the importance weight r^beta of a ratio r = p_min / p_i in [0, 1], in float32 (powf of r
//   rounded to float; in double when r is below the smallest normal float, where the rounding would lose r's
//   digits or all of r), clamped to the smallest positive float so that it stays in (0, 1]. beta = 1 gives r
//   and beta = 0 gives 1 without a power call, bit for bit what powf gives for them.
// Costs measured in bench/cpp/per_bench.cpp (bench/results/per.md): one std::pow is about 10 ns, one powf 8 ns;
// a batch of 256 pays that 256 times.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace fastreplay {

class LeafPower {
 public:
  explicit LeafPower(double alpha)
      : alpha_(alpha), kind_(alpha == 1.0 ? One : alpha == 0.0 ? Zero : alpha == 0.5 ? Half : Any) {}
  double alpha() const { return alpha_; }
  // x^alpha for x >= 0. O(1)
  double operator()(double x) const {
    switch (kind_) {
      case One:
        return x;
      case Zero:
        return 1.0;
      case Half:
        return std::sqrt(x);
      default:
        return std::pow(x, alpha_);
    }
  }

 private:
  enum Kind { Any, One, Zero, Half };
  double alpha_;
  Kind kind_;
};

class WeightPower {
 public:
  explicit WeightPower(double beta)
      : beta_(static_cast<float>(beta)), kind_(beta == 1.0 ? One : beta == 0.0 ? Zero : Any) {}
  // w[k] = (*this)(r[k]) for a batch. (An SSE2 exp2/log2 in double, two at a time, measured 1.6 µs per 256
  // against 1.2 µs for glibc's powf: not kept.) O(n)
  void many(const double* r, float* w, std::size_t n) const {
    for (std::size_t k = 0; k < n; ++k) w[k] = (*this)(r[k]);
  }
  // max(min(r, 1)^beta, smallest positive float) in float32, for r >= 0. O(1)
  float operator()(double r) const {
    const float x = static_cast<float>(std::min(r, 1.0));
    float w;
    switch (kind_) {
      case One:
        w = x;
        break;
      case Zero:
        w = 1.0f;
        break;
      default:  // a ratio below the smallest normal float would lose its digits (or become 0) as a float
        w = x >= std::numeric_limits<float>::min()
                ? std::pow(x, beta_)
                : static_cast<float>(std::pow(std::min(r, 1.0), static_cast<double>(beta_)));
    }
    return std::max(w, std::numeric_limits<float>::denorm_min());
  }

 private:
  enum Kind { Any, One, Zero };
  float beta_;
  Kind kind_;
};

}  // namespace fastreplay
