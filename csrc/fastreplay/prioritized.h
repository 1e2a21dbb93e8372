// Proportional prioritized replay (Schaul et al. 2015) on the ring: sum/min trees, stratified sampling, weights.
//
// Contract (in addition to ReplayCore's):
// - A priority p is stored as the leaf (p + eps)^alpha; slot i is drawn with probability leaf_i / sum(leaves).
// - Every leaf is at most leaf_limit() = 2^1022 / capacity, so the sum of all leaves (every node of the tree, in
//   any order of additions) stays below 2^1022 < DBL_MAX, finite. Construction (the initial priority 1), set_alpha
//   (every stored priority and the one new transitions get), update_priorities and restore_priorities reject with
//   ValueError any input whose leaf would pass it, before anything is written.
// - New transitions enter with the maximum priority: over all time (default), or over the transitions stored now.
// - sample(n, beta) cuts [0, total) into n equal strata and draws one point uniformly in each. The importance
//   weight of row i is (N * P(i))^-beta normalised by the largest weight over all stored transitions,
//   (N * P_min)^-beta, which simplifies to (leaf_min / leaf_i)^beta: always in (0, 1].
// - Tree writes (add's new leaves, update_priorities, set_alpha) are serialised by one mutex, held for O(log N)
//   per row; sampling reads the tree without any lock. A concurrent sample sees every node old or new; each
//   drawn slot had a nonzero leaf when its descent passed it, and is re-drawn if its slot is being written.
//   Once writers stop, the root equals the sum of the leaves. fork() waits for a tree write in progress (the
//   mutex is a ForkSafeMutex), so a forked child finds consistent trees and an unlocked mutex.
// - priority(slot) and max_all_time() read plain values without the lock: call them only while no add,
//   update_priorities, restore_priorities or clear runs (checkpoints and inspection); max_priority() locks.
// - Stale indices: update_priorities with generations skips (or rejects) rows whose slot was rewritten since
//   it was sampled.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fastreplay/fork.h"
#include "fastreplay/max_tree.h"
#include "fastreplay/powers.h"
#include "fastreplay/replay.h"
#include "fastreplay/shared.h"
#include "fastreplay/sum_min_tree.h"

namespace fastreplay {

class PrioritizedCore : public ReplayCore {
 public:
  enum class MaxMode { AllTime, Stored };

  // `blocks` (optional, shared.h): all memory, shared with other processes; a core attached to another process's
  // blocks takes alpha and the priorities from them (its own `alpha` is ignored).
  PrioritizedCore(std::size_t capacity, const std::vector<FieldSpec>& fields, std::uint64_t seed, double alpha,
                  double eps, MaxMode mode, const std::vector<std::shared_ptr<std::uint8_t>>& memory = {},
                  const EpisodeSpec* episodes = nullptr, Blocks* blocks = nullptr, Layout layout = Layout::Auto,
                  const std::vector<std::size_t>& strides = {})
      : ReplayCore(capacity, fields, seed, memory, episodes, blocks, layout, strides),
        tree_(capacity, blocks),
        raw_mem_(take_zeroed(blocks, checked_mul(capacity, sizeof(double)))),
        raw_(reinterpret_cast<double*>(raw_mem_.get())),
        state_mem_(take_zeroed(blocks, sizeof(State))),
        st_(reinterpret_cast<State*>(state_mem_.get())),
        mode_(mode),
        eps_(eps) {
    if (mode_ == MaxMode::Stored) max_tree_.reset(new MaxTree(capacity, blocks));
    if (blocks && blocks->shared()) shared_mu_.reset(new SharedMutex(st_->mutex));
    if (fresh_blocks(blocks)) {
      // The caller validates alpha and eps (fastreplay/_args.py); here they are preconditions.
      FR_DEBUG_ASSERT(eps >= 0.0 && std::isfinite(eps) && alpha >= 0.0 && std::isfinite(alpha));
      st_->alpha = alpha;
      st_->max_all_time = 1.0;
      if (shared_mu_) SharedMutex::create(st_->mutex);
    }
    if (sequences()) sequences()->set_prioritized(st_->alpha, eps);  // sequence priorities (sequences.h)
    // New transitions enter with priority 1 until a larger one is set: its leaf must respect the bound.
    const double leaf = leaf_value(1.0);
    if (!(leaf <= leaf_limit()))
      throw_invalid("PrioritizedReplayBuffer: alpha=" + format_g(st_->alpha) + " and eps=" + format_g(eps) +
                    " give the leaf (p + eps)**alpha = " + format_g(leaf) + " for the initial priority p=1" +
                    limit_text());
  }

  // The largest leaf (p + eps)^alpha accepted: 2^1022 / capacity, so the sum of all leaves stays finite. O(1)
  double leaf_limit() const { return std::ldexp(1.0, 1022) / static_cast<double>(capacity()); }

  double alpha() const { return st_->alpha; }
  double eps() const { return eps_; }
  double max_priority() const {
    Guard lock(*this);
    return current_max();
  }
  const SumMinTree& tree() const { return tree_; }
  // Priority last given to a slot (before eps and alpha). Reads without the lock (see the contract).
  double priority(std::size_t slot) const { return raw_[slot]; }

  // Change alpha: every leaf is recomputed from its stored priority and the trees rebuilt. O(capacity)
  void set_alpha(double alpha) {
    FR_DEBUG_ASSERT(alpha >= 0.0 && std::isfinite(alpha));
    Guard lock(*this);
    {  // the largest priority stored or given to new transitions must keep its leaf within the bound
      double p = current_max();
      for (std::size_t s = 0; s < this->size(); ++s) p = std::max(p, raw_[s]);
      const double leaf = LeafPower(alpha)(p + eps_);
      if (!(leaf <= leaf_limit()))
        throw_invalid("PrioritizedReplayBuffer.alpha: alpha=" + format_g(alpha) +
                      " gives the leaf (p + eps)**alpha = " + format_g(leaf) + " for the priority p=" + format_g(p) + " (eps=" + format_g(eps_) + ")" +
                      limit_text());
    }
    st_->alpha = alpha;
    const std::size_t size = this->size();
    set_leaves_from_raw(size);
    tree_.rebuild();
    if (sequences()) sequences()->set_alpha(alpha);
  }

  // Throws ValueError unless beta (the importance-sampling exponent) is finite and >= 0. O(1)
  static void check_beta(const char* fn, double beta) {
    if (!(beta >= 0.0) || !std::isfinite(beta))
      throw_invalid(std::string(fn) + ": beta must be finite and >= 0, got " + format_real(beta));
  }

  // Stratified sample of n slots with importance weights. idx[n], weights[n] (float32), gens[n] (may be null),
  // out[f]. Throws if empty or beta < 0. O(n log capacity + n * row bytes)
  void sample(std::size_t n, double beta, std::int64_t* idx, float* weights, std::uint64_t* gens,
              std::uint8_t* const* out) {
    check_beta("sample", beta);
    check_not_empty("sample");
    Rng rng(seed(), next_stream());
    // Scratch for the descent. sample() runs on many threads at once without a lock, so it cannot be a member;
    // thread_local keeps one allocation per thread (grown to the largest batch, shared by every core on that
    // thread, which is safe since it lives only within this call) instead of one per call.
    thread_local std::vector<double> u;
    thread_local std::vector<std::size_t> nodes;
    u.resize(n);
    nodes.resize(n);
    const double total = tree_.total();
    if (!(total > 0.0))
      throw_invalid("sample: every stored transition has priority 0 (possible only with eps=0), so none can be drawn");
    const double seg = total / static_cast<double>(n);
    for (std::size_t k = 0; k < n; ++k) u[k] = (static_cast<double>(k) + rng.uniform()) * seg;
    tree_.find_prefix_many(u.data(), n, idx, nodes.data());
    const std::size_t cap = capacity();
    // (No prefetch of the generations here: the gather reads them as one more column, their misses in flight
    // with the rows'. Prefetching them first cost 0.3-0.7 µs a batch of 256 at 10^6, bench/results/per.md.)
    for (std::size_t k = 0; k < n; ++k) {  // only reachable under concurrent writes: a leaf emptied mid-descent
      if (static_cast<std::size_t>(idx[k]) >= cap || tree_.leaf(static_cast<std::size_t>(idx[k])) <= 0.0) idx[k] = redraw(k, n, rng);
    }
    if (ep_) {  // steps not sampleable yet keep their leaf: drawn again, in their stratum first
      Fallback fb(n);
      const std::function<double(std::size_t)> leaf = [&](std::size_t s) { return tree_.leaf(s); };
      gather_episodes(idx, n, gens, out, [&](std::size_t k) {
        if (fb.exhausted()) return fb.pick(*this, rng, &leaf);
        return redraw(k, n, rng);
      });
    } else {
      gather_consistent(idx, n, gens, out, [&](std::size_t k) { return redraw(k, n, rng); });
    }
    // Weights are float32, so the power is taken in float (powf, < 1 ulp): 4x cheaper than double pow; none at
    // all for beta 0 or 1 (powers.h). Clamped to the smallest positive float32, so a weight too small for float32
    // stays in (0, 1].
    const double pmin = tree_.min();
    double* ratio = u.data();  // the descent's points are spent: their space holds the ratios p_min / p_i
    for (std::size_t k = 0; k < n; ++k) {
      const double p = tree_.leaf(static_cast<std::size_t>(idx[k]));
      ratio[k] = p > 0.0 && pmin < std::numeric_limits<double>::infinity() ? std::min(pmin / p, 1.0) : 1.0;
    }
    WeightPower(beta).many(ratio, weights, n);  // a ratio of 1 gives the weight 1 for every beta
  }

  // Set priorities: leaf(idx[k]) = (prio[k] + eps)^alpha, the last of duplicate indices winning. With gens, a
  // row whose slot now holds a different transition is skipped (or, with raise_stale, the call is rejected).
  // Everything is validated before anything is written. Returns the number of rows skipped as stale.
  // O(n log n + n log capacity)
  std::size_t update_priorities(const std::int64_t* idx, const double* prio, std::size_t n, const std::uint64_t* gens,
                                bool raise_stale) {
    check_indices("update_priorities", idx, n);
    double pmax = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      if (!std::isfinite(prio[k]) || prio[k] < 0.0)
        throw_invalid("update_priorities: priorities must be finite and >= 0, got " + std::to_string(prio[k]) +
                      " at position " + std::to_string(k));
      pmax = std::max(pmax, prio[k]);
    }
    Guard lock(*this);
    if (n && !(leaf_value(pmax) <= leaf_limit())) {  // under the lock: alpha cannot change before the writes
      std::size_t k = 0;
      while (leaf_value(prio[k]) <= leaf_limit()) ++k;  // the first one too large (the leaf grows with p)
      throw_invalid("update_priorities: priority " + format_g(prio[k]) + " at position " + std::to_string(k) +
                    " gives the leaf (p + eps)**alpha = " + format_g(leaf_value(prio[k])) + " (alpha=" +
                    format_g(st_->alpha) + ", eps=" + format_g(eps_) + ")" + limit_text());
    }
    std::size_t stale = 0;
    idx_buf_.clear();
    val_buf_.clear();
    for (std::size_t k = 0; k < n; ++k) {
      const auto slot = static_cast<std::size_t>(idx[k]);
      __builtin_prefetch(raw_ + slot, 1);  // written below, as are its tree lines: their misses overlap
      tree_.prefetch_for_set(slot);
      const std::uint64_t seq = ring_.seq_acquire(slot);
      if (gens && ((seq & 1) || seq / 2 != gens[k])) {  // odd: being rewritten right now
        if (raise_stale)
          throw_invalid("update_priorities: index " + std::to_string(idx[k]) + " at position " + std::to_string(k) +
                        " is stale: its slot was overwritten after it was sampled (generation " +
                        std::to_string(gens[k]) + ", now " + std::to_string(ring_.generation(slot)) + ")");
        ++stale;
        continue;
      }
      idx_buf_.push_back(idx[k]);
      val_buf_.push_back(prio[k]);
    }
    double max_all_time = st_->max_all_time;
    for (std::size_t k = 0; k < idx_buf_.size(); ++k) {
      const auto slot = static_cast<std::size_t>(idx_buf_[k]);
      raw_[slot] = val_buf_[k];
      if (max_tree_) max_tree_->set(slot, val_buf_[k]);
      max_all_time = std::max(max_all_time, val_buf_[k]);
      val_buf_[k] += eps_;
    }
    st_->max_all_time = max_all_time;
    LeafPower(st_->alpha).many(val_buf_.data(), val_buf_.size());  // the same values as leaf_value, in batches
    if (ep_)
      for (std::size_t k = 0; k < idx_buf_.size(); ++k)
        if (!is_step(static_cast<std::size_t>(idx_buf_[k]))) val_buf_[k] = 0.0;
    tree_.set_many(idx_buf_.data(), val_buf_.data(), idx_buf_.size(), scratch_);
    return stale;
  }

  // The all-time maximum priority. Reads without the lock (see the contract).
  double max_all_time() const { return st_->max_all_time; }
  // Checkpoint support: priorities of the first n slots (the stored ones; the rest are empty) and the all-time
  // maximum; leaves and trees are rebuilt. Not safe concurrently with other calls. O(capacity)
  void restore_priorities(const double* raw, std::size_t n, double max_all_time) {
    if (n > capacity()) throw_invalid("restore: more priorities than slots");
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(raw[i]) || raw[i] < 0.0) throw_invalid("restore: priorities must be finite and >= 0");
    if (!std::isfinite(max_all_time) || max_all_time < 0.0) throw_invalid("restore: bad maximum priority");
    const double pmax = std::max(max_all_time, n ? *std::max_element(raw, raw + n) : 0.0);
    if (!(leaf_value(pmax) <= leaf_limit()))
      throw_invalid("restore: priority " + format_g(pmax) + " gives the leaf (p + eps)**alpha = " +
                    format_g(leaf_value(pmax)) + limit_text());
    Guard lock(*this);
    std::fill(raw_, raw_ + capacity(), 0.0);
    std::copy(raw, raw + n, raw_);
    st_->max_all_time = max_all_time;
    if (max_tree_) max_tree_->reset();
    if (max_tree_)
      for (std::size_t s = 0; s < n; ++s) max_tree_->set(s, raw_[s]);
    set_leaves_from_raw(n);
    tree_.rebuild();
  }

  void clear() override {
    Guard lock(*this);
    ReplayCore::clear();
    tree_.reset();
    std::fill(raw_, raw_ + capacity(), 0.0);
    st_->max_all_time = 1.0;
    if (max_tree_) max_tree_->reset();
  }

 protected:
  void on_published(std::uint64_t first, std::size_t m, const std::vector<std::uint8_t>& obsolete) override {
    const std::size_t cap = capacity();
    Guard lock(*this);
    const double p = current_max();
    const double leaf = new_leaf(p);
    if (obsolete.empty()) {
      const Ring::Runs r = ring_.runs(first, m);
      std::fill(raw_ + r.slot, raw_ + r.slot + r.head, p);
      std::fill(raw_, raw_ + r.tail, p);
      if (max_tree_)
        for (std::size_t k = 0; k < m; ++k) max_tree_->set((r.slot + k) % cap, p);
      if (m == 1) {
        tree_.set(r.slot, leaf);
      } else {
        tree_.set_range(r.slot, r.slot + r.head, leaf);
        tree_.set_range(0, r.tail, leaf);
      }
      if (ep_ && ep_->spec().next_step)  // reset rows are never drawn
        for (std::size_t k = 0; k < m; ++k)
          if (!is_step((r.slot + k) % cap)) tree_.set((r.slot + k) % cap, 0.0);
      return;
    }
    for (std::size_t k = 0; k < m; ++k) {
      if (obsolete[k]) continue;
      const std::size_t slot = static_cast<std::size_t>((first + k) % cap);
      raw_[slot] = p;
      if (max_tree_) max_tree_->set(slot, p);
      tree_.set(slot, leaf);
    }
  }

 private:
  double leaf_value(double p) const { return LeafPower(st_->alpha)(p + eps_); }
  // leaf_value(p) for the priority of new transitions, remembered (it changes only with the maximum or alpha):
  // add() of one row would otherwise pay a whole power for it. Caller holds the tree lock.
  double new_leaf(double p) {
    if (!(p == new_leaf_p_ && st_->alpha == new_leaf_alpha_)) {
      new_leaf_ = leaf_value(p);
      new_leaf_p_ = p;
      new_leaf_alpha_ = st_->alpha;
    }
    return new_leaf_;
  }
  // Every leaf from the raw priorities: (raw_[s] + eps)^alpha for the first n slots (the stored ones), but 0 for a
  // next-step reset row (never sampled), and 0 for the rest; the inner nodes are left to rebuild(). The powers are
  // taken in batches (LeafPower::many: the same bits as leaf_value one at a time). O(capacity)
  void set_leaves_from_raw(std::size_t n) {
    const LeafPower power(st_->alpha);
    double x[1024];
    for (std::size_t s0 = 0; s0 < n; s0 += 1024) {
      const std::size_t m = std::min<std::size_t>(1024, n - s0);
      for (std::size_t k = 0; k < m; ++k) x[k] = raw_[s0 + k] + eps_;
      power.many(x, m);
      for (std::size_t k = 0; k < m; ++k) tree_.set_leaf_only(s0 + k, is_step(s0 + k) ? x[k] : 0.0);
    }
    for (std::size_t s = n; s < capacity(); ++s) tree_.set_leaf_only(s, 0.0);
  }
  // Numbers in messages as C's and Python's "%g" print them, so the reference can give the same text.
  static std::string format_g(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
  }
  std::string limit_text() const {
    return ", above the limit 2**1022 / capacity = " + format_g(leaf_limit()) +
           " that keeps the sum of all leaves finite";
  }
  // Caller holds the tree lock.
  double current_max() const {
    if (mode_ == MaxMode::AllTime) return st_->max_all_time;
    return this->size() ? max_tree_->max() : 1.0;
  }
  std::int64_t redraw(std::size_t k, std::size_t n, Rng& rng) {
    for (unsigned tries = 0;; ++tries) {
      const double total = tree_.total();
      if (!(total > 0.0)) throw_invalid("sample: every stored transition now has priority 0, so none can be drawn");
      const double u = (static_cast<double>(k) + rng.uniform()) * total / static_cast<double>(n);
      const std::int64_t s = tree_.find_prefix(u);
      if (static_cast<std::size_t>(s) < capacity() && tree_.leaf(static_cast<std::size_t>(s)) > 0.0) return s;
      if (tries > 64) std::this_thread::yield();
    }
  }

  // What the tree lock guards, besides the trees: alpha and the all-time maximum, shared with the other
  // processes of a shared buffer, as is the mutex (used only then).
  struct State {
    alignas(8) unsigned char mutex[SharedMutex::kBytes];
    double alpha;
    double max_all_time;
  };
  // Holds the tree lock: the process-shared mutex of a shared buffer, else a ForkSafeMutex (fork() waits for it,
  // so a forked child finds the trees consistent, fork.h). A process that died holding the shared one may have
  // left the inner nodes half-updated: they are rebuilt from the leaves.
  class Guard {
   public:
    explicit Guard(const PrioritizedCore& c) : c_(c) {
      if (!c_.shared_mu_) {
        c_.mu_.lock();
      } else if (c_.shared_mu_->lock_recover()) {
        const_cast<SumMinTree&>(c_.tree_).rebuild();
      }
    }
    ~Guard() {
      if (c_.shared_mu_)
        c_.shared_mu_->unlock();
      else
        c_.mu_.unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const PrioritizedCore& c_;
  };

  SumMinTree tree_;
  std::unique_ptr<MaxTree> max_tree_;  // only for MaxMode::Stored
  std::shared_ptr<std::uint8_t> raw_mem_;
  double* raw_;  // priority per slot, as given (before eps and alpha)
  std::shared_ptr<std::uint8_t> state_mem_;
  State* st_;
  MaxMode mode_;
  double eps_;
  mutable ForkSafeMutex mu_;
  std::unique_ptr<SharedMutex> shared_mu_;  // shared buffers only
  // new_leaf's memory (this process's: alpha and the maximum may be changed by another process of a shared buffer,
  // which is why both are compared): the leaf new_leaf_ of the priority new_leaf_p_ at alpha new_leaf_alpha_.
  double new_leaf_p_ = std::numeric_limits<double>::quiet_NaN(), new_leaf_alpha_ = 0.0, new_leaf_ = 0.0;
  std::vector<std::int64_t> idx_buf_;
  std::vector<double> val_buf_;
  std::vector<std::size_t> scratch_;
};

}  // namespace fastreplay
