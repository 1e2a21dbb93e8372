// SumMinTree's line kernels in SSE2 (part of every x86-64): a line is four pairs of doubles. See line.h.
#pragma once

#include <emmintrin.h>

#include <atomic>
#include <cstddef>

// Included by line.h only, after its shared helpers.
namespace fastreplay {
namespace detail {
namespace line_sse2 {

inline constexpr const char* kName = "sse2";

struct Line {
  __m128d v0, v1, v2, v3;  // named members, not an array, so that GCC -O2 keeps them in registers
};

inline Line read_shared(const std::atomic<double>* src) {
  Line r;
  r.v0 = _mm_set_pd(load_relaxed(src[1]), load_relaxed(src[0]));
  r.v1 = _mm_set_pd(load_relaxed(src[3]), load_relaxed(src[2]));
  r.v2 = _mm_set_pd(load_relaxed(src[5]), load_relaxed(src[4]));
  r.v3 = _mm_set_pd(load_relaxed(src[7]), load_relaxed(src[6]));
  return r;
}

inline Line read_own(const std::atomic<double>* src) {
  const double* p = reinterpret_cast<const double*>(src);
  Line r;
  r.v0 = _mm_load_pd(p);
  r.v1 = _mm_load_pd(p + 2);
  r.v2 = _mm_load_pd(p + 4);
  r.v3 = _mm_load_pd(p + 6);
  return r;
}

inline void write(std::atomic<double>* dst, const Line& line) {
  store_relaxed(dst[0], _mm_cvtsd_f64(line.v0));
  store_relaxed(dst[1], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v0, line.v0)));
  store_relaxed(dst[2], _mm_cvtsd_f64(line.v1));
  store_relaxed(dst[3], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v1, line.v1)));
  store_relaxed(dst[4], _mm_cvtsd_f64(line.v2));
  store_relaxed(dst[5], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v2, line.v2)));
  store_relaxed(dst[6], _mm_cvtsd_f64(line.v3));
  store_relaxed(dst[7], _mm_cvtsd_f64(_mm_unpackhi_pd(line.v3, line.v3)));
}

inline Line scan(const Line& c) {
  Line p;
  const __m128d zero = _mm_setzero_pd();
  p.v0 = _mm_add_pd(c.v0, _mm_unpacklo_pd(zero, c.v0));  // [c0, c0 + c1]
  p.v1 = _mm_add_pd(c.v1, _mm_unpacklo_pd(zero, c.v1));  // [c2, c2 + c3]
  p.v2 = _mm_add_pd(c.v2, _mm_unpacklo_pd(zero, c.v2));
  p.v3 = _mm_add_pd(c.v3, _mm_unpacklo_pd(zero, c.v3));
  p.v1 = _mm_add_pd(p.v1, _mm_unpackhi_pd(p.v0, p.v0));  // [p1 + c2, p1 + (c2 + c3)]
  p.v2 = _mm_add_pd(p.v2, _mm_unpackhi_pd(p.v1, p.v1));
  p.v3 = _mm_add_pd(p.v3, _mm_unpackhi_pd(p.v2, p.v2));
  return p;
}

inline double last(const Line& p) { return _mm_cvtsd_f64(_mm_unpackhi_pd(p.v3, p.v3)); }

inline double smallest(const Line& c, bool leaves) {
  Line w = c;
  if (leaves) {  // zeros become +inf: a lane keeps its value where it is > 0
    const __m128d zero = _mm_setzero_pd(), inf = _mm_set1_pd(kLineInf);
    const __m128d g0 = _mm_cmpgt_pd(c.v0, zero), g1 = _mm_cmpgt_pd(c.v1, zero), g2 = _mm_cmpgt_pd(c.v2, zero),
                  g3 = _mm_cmpgt_pd(c.v3, zero);
    w.v0 = _mm_or_pd(_mm_and_pd(g0, c.v0), _mm_andnot_pd(g0, inf));
    w.v1 = _mm_or_pd(_mm_and_pd(g1, c.v1), _mm_andnot_pd(g1, inf));
    w.v2 = _mm_or_pd(_mm_and_pd(g2, c.v2), _mm_andnot_pd(g2, inf));
    w.v3 = _mm_or_pd(_mm_and_pd(g3, c.v3), _mm_andnot_pd(g3, inf));
  }
  const __m128d m = _mm_min_pd(_mm_min_pd(w.v0, w.v1), _mm_min_pd(w.v2, w.v3));
  return _mm_cvtsd_f64(_mm_min_sd(m, _mm_unpackhi_pd(m, m)));
}

// top = p[7]'s bit pattern minus one; a comparison that holds is all ones (-1) in its lane, so the lanes' sum is -j.
inline std::size_t child(const Line& p, double u) {
  const __m128i bits = _mm_add_epi64(_mm_castpd_si128(p.v3), _mm_set_epi64x(-1, 0));
  const __m128d t = _mm_min_pd(_mm_set1_pd(u), _mm_castsi128_pd(_mm_unpackhi_epi64(bits, bits)));
  __m128i c = _mm_add_epi64(
      _mm_add_epi64(_mm_castpd_si128(_mm_cmple_pd(p.v0, t)), _mm_castpd_si128(_mm_cmple_pd(p.v1, t))),
      _mm_add_epi64(_mm_castpd_si128(_mm_cmple_pd(p.v2, t)), _mm_castpd_si128(_mm_cmple_pd(p.v3, t))));
  c = _mm_add_epi64(c, _mm_unpackhi_epi64(c, c));
  return static_cast<std::size_t>(-_mm_cvtsi128_si64(c));
}

}  // namespace line_sse2
}  // namespace detail
}  // namespace fastreplay
