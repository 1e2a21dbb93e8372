// Multi-task replay, the top level: K tasks share one buffer, each with its own quota of slots and its own core
// (ring, trees, episode index) over its slice of the columns. This file holds the two rules that span tasks: how
// many rows each task gives a batch, and the two-level importance weights of prioritized tasks.
//
// Contract:
// - Slots: task t owns the global slots [offset_t, offset_t + quota_t); a task's core numbers them from 0.
// - Batch counts: n rows over tasks with weights w_t >= 0 (sum W > 0) are stratified: with one uniform U, the points
//   (k + U) / n * W (k < n) fall into the tasks' cumulative weight intervals, so task t gets floor or ceil of
//   n * w_t / W rows, exactly n in all, each count unbiased. Equal weights over K tasks give n / K each when K
//   divides n. Rows come grouped by task, tasks in increasing order.
// - Weights: a row of task t drawn with probability P(t) * p_i / S_t (P(t) = w_t / W, S_t the task's total leaf
//   mass) gets (N P(i))^-beta normalised by the largest such weight over every stored row of the tasks that can be
//   drawn (global), i.e. ((min_s P(s) m_s / S_s) / (P(t) p_i / S_t))^beta with m_s the task's smallest leaf; or,
//   per task, (m_t / p_i)^beta, each task's own PER weight.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "fastreplay/common.h"

namespace fastreplay {

// Stratified per-task counts (see the contract): counts[t] for n rows, weights w[K], `u` uniform in [0, 1).
// Precondition: every w >= 0 and finite, their sum > 0. O(n + K)
inline void stratified_counts(const double* w, std::size_t k, std::size_t n, double u, std::size_t* counts) {
  double total = 0.0;
  for (std::size_t t = 0; t < k; ++t) total += w[t];
  std::fill(counts, counts + k, std::size_t(0));
  std::size_t last = k - 1;  // the last task with weight: rounding must never carry a row past it
  while (last > 0 && w[last] == 0.0) --last;
  std::size_t t = 0;
  double upper = w[0];
  for (std::size_t j = 0; j < n; ++j) {
    const double x = (static_cast<double>(j) + u) / static_cast<double>(n) * total;
    while (t < last && (x >= upper || w[t] == 0.0)) upper += w[++t];
    ++counts[t];
  }
}

// Global normalisation of per-task PER weights (see the contract): the factor f_t^beta that turns task t's own
// weight (m_t / p_i)^beta into the global one, for the tasks with count > 0. prob[t] = P(t), mass[t] = S_t,
// minleaf[t] = m_t (0 or +inf for a task that holds nothing drawable: it is left out of the minimum).
// Returns f_t = (min_s P(s) m_s / S_s) / (P(t) m_t / S_t) in (0, 1]. O(K)
inline void global_weight_factors(const double* prob, const double* mass, const double* minleaf, std::size_t k,
                                  double* factor) {
  double lo = std::numeric_limits<double>::infinity();
  for (std::size_t t = 0; t < k; ++t) {
    if (prob[t] > 0.0 && mass[t] > 0.0 && minleaf[t] > 0.0 && std::isfinite(minleaf[t]))
      lo = std::min(lo, prob[t] * minleaf[t] / mass[t]);
  }
  for (std::size_t t = 0; t < k; ++t) {
    const double own = prob[t] * minleaf[t] / mass[t];
    factor[t] = own > 0.0 && std::isfinite(own) && std::isfinite(lo) ? std::min(lo / own, 1.0) : 1.0;
  }
}

}  // namespace fastreplay
