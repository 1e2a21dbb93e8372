// Sequence replay over the episode index (docs/sequences.md): admissible start steps of fixed-length sequences,
// kept per (period, need) in ticket order, uniform or prioritized sampling of them, and the gather of whole
// sequences [B, T, ...] through EpisodeIndex::assemble (frame stacks, n-step windows and lanes as for single steps).
//
// Items. A stored step s of lane k, in an episode that starts at ticket st, is the start of an item of
// (period P, need m) when its phase (s - st) / K is a multiple of P and the m steps s, s + K, ..., s + (m - 1)K
// are stored in the same episode. The item is pushed when its m-th step is written (under the add mutex, after
// the add is published), so items are pushed in ticket order of that step and therefore of their start: the live
// items form one window [head, tail) of a ring of `capacity` entries (live starts are stored steps, at most
// capacity of them), and items whose start was overwritten are always a prefix, popped at each add. Sampling a
// start is one random read of that ring (or one descent of its sum tree): the time does not grow with the number
// of episodes or the capacity, and no boundary is recomputed.
//
// A live item can still fail to be a sampleable start (docs/episodes.md): the oldest frames of its stack were
// overwritten (at most (S - 1)K items after head), or with next_obs="dedup" its m-th step is the lane's newest
// step and waits for its next observation (at most K items before tail). Draws reject them and draw again; the
// count of admissible starts (for the "B larger than admissible starts" error) is exact: when B comes within
// that slack of the window's size, the window is scanned (O(B + S K)).
//
// Concurrency: as for single rows. Without a concurrent add (ring.h's global check) everything is arithmetic;
// otherwise every slot a sequence reads is checked against the sequence number its ticket must have, before and
// after the copies, and a sequence any of whose steps changed is drawn again (docs/sequences.md).
//
// Sequence priorities (prioritized buffers): each item's leaf (p + eps)^alpha in a sum/min tree indexed by its
// ring position; new items get the index's largest priority so far (1 at first). update() sets p to the eta-mix
// eta * max + (1 - eta) * mean of |td| over a sequence's trained steps, and skips sequences whose start slot was
// rewritten since they were sampled (a sequence's start is its oldest step, so any step overwritten means the
// start was). Tree writes (push, pop, update, set_alpha) hold the index's mutex; sampling reads without it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/copy.h"
#include "fastreplay/episodes.h"
#include "fastreplay/fork.h"
#include "fastreplay/gather.h"
#include "fastreplay/memory.h"
#include "fastreplay/ring.h"
#include "fastreplay/rng.h"
#include "fastreplay/storage.h"
#include "fastreplay/sum_min_tree.h"

namespace fastreplay {

// How sequences end at an episode's end (or at the lane's newest step).
enum class SequenceEnd { Truncate, Pad, Drop };

// The admissible starts of one (period, need): a ring of start tickets, and (prioritized) their sum/min tree.
class SequenceItems {
 public:
  SequenceItems(std::size_t capacity, std::size_t period, std::size_t need, bool prioritized)
      : period(period), need(need), cap_(capacity), mem_(allocate_zeroed(checked_mul(capacity, 8), true)),
        items_(reinterpret_cast<std::atomic<std::uint64_t>*>(mem_.get())) {
    if (prioritized) {
      tree_.reset(new SumMinTree(capacity));
      raw_mem_ = allocate_zeroed(checked_mul(capacity, 8), true);
      raw_ = reinterpret_cast<double*>(raw_mem_.get());
    }
  }
  const std::size_t period, need;

  std::uint64_t head() const { return head_.load(std::memory_order_acquire); }
  std::uint64_t tail() const { return tail_.load(std::memory_order_acquire); }
  std::uint64_t at(std::uint64_t pos) const { return items_[pos % cap_].load(std::memory_order_relaxed); }
  bool prioritized() const { return tree_ != nullptr; }
  const SumMinTree& tree() const { return *tree_; }
  ForkSafeMutex& mutex() const { return mu_; }
  double raw(std::size_t leaf) const { return raw_[leaf]; }

  // Writer side (under the add mutex). Pop items whose start is below `lo`; then, per written ticket, push.
  void pop_below(std::uint64_t lo, double alpha, double eps) {
    (void)alpha, (void)eps;
    std::uint64_t h = head_.load(std::memory_order_relaxed);
    const std::uint64_t t = tail_.load(std::memory_order_relaxed);
    if (h == t || at(h) >= lo) return;
    std::unique_lock<ForkSafeMutex> lock;
    if (tree_) lock = std::unique_lock<ForkSafeMutex>(mu_);
    while (h < t && at(h) < lo) {
      if (tree_) tree_->set(static_cast<std::size_t>(h % cap_), 0.0);
      ++h;
    }
    head_.store(h, std::memory_order_release);
  }
  void push(std::uint64_t start, double alpha, double eps) {
    const std::uint64_t t = tail_.load(std::memory_order_relaxed);
    const auto leaf = static_cast<std::size_t>(t % cap_);
    items_[leaf].store(start, std::memory_order_relaxed);
    if (tree_) {
      std::lock_guard<ForkSafeMutex> lock(mu_);
      raw_[leaf] = max_;
      tree_->set(leaf, std::pow(max_ + eps, alpha));
    }
    tail_.store(t + 1, std::memory_order_release);
  }
  // Every item gone (clear). Nothing else may run.
  void clear() {
    if (tree_) tree_->reset();
    head_.store(tail_.load());
  }

  // Priorities (prioritized only): set leaf `leaf` to priority p unless `still` (checked under the mutex) fails.
  template <class Still>
  bool update(std::size_t leaf, double p, double alpha, double eps, Still&& still) {
    std::lock_guard<ForkSafeMutex> lock(mu_);
    if (!still()) return false;
    raw_[leaf] = p;
    max_ = std::max(max_, p);
    tree_->set(leaf, std::pow(p + eps, alpha));
    return true;
  }
  void set_alpha(double alpha, double eps) {
    std::lock_guard<ForkSafeMutex> lock(mu_);
    const std::uint64_t h = head_.load(), t = tail_.load();
    for (std::uint64_t p = h; p < t; ++p) {
      const auto leaf = static_cast<std::size_t>(p % cap_);
      tree_->set_leaf_only(leaf, std::pow(raw_[leaf] + eps, alpha));
    }
    tree_->rebuild();
  }
  double max_priority() const {
    std::lock_guard<ForkSafeMutex> lock(mu_);
    return max_;
  }

 private:
  const std::size_t cap_;
  std::shared_ptr<std::uint8_t> mem_;
  std::atomic<std::uint64_t>* items_;
  std::atomic<std::uint64_t> head_{0}, tail_{0};
  std::unique_ptr<SumMinTree> tree_;
  std::shared_ptr<std::uint8_t> raw_mem_;
  double* raw_ = nullptr;  // priority of each leaf (before eps and alpha)
  double max_ = 1.0;       // priority of new items: the largest set so far
  mutable ForkSafeMutex mu_;
};

// Where one sequence batch goes: per batch field an array [B, L, *shape] (row b * L + i), and [B, L] / [B] extras.
struct SequenceOut {
  std::size_t batch = 0, length = 0;
  std::vector<std::uint8_t*> fields;  // per batch field
  std::vector<std::size_t> row_bytes;  // per batch field
  std::uint8_t* mask = nullptr;      // bool[B, L]
  std::uint8_t* is_first = nullptr;  // bool[B, L]
  std::int64_t* slots = nullptr;     // int64[B, L], -1 for padding
  std::int64_t* starts = nullptr;    // int64[B]: slot of each start
  std::uint64_t* generations = nullptr;  // uint64[B]: generation of each start slot
  std::int64_t* items = nullptr;     // int64[B]: ring position of each item (prioritized)
  float* weights = nullptr;          // float32[B] (prioritized)
  std::int64_t* lengths = nullptr;   // int64[B]: real steps of each sequence
};

// Every sequence index of one episodic core, and sequence sampling over it.
class Sequences {
 public:
  static constexpr std::size_t kMaxIndexes = 8;  // distinct (period, need) kept; the oldest is dropped beyond

  Sequences(const EpisodeIndex& ep, const Ring& ring, const std::vector<Column>& cols,
            std::vector<std::pair<std::size_t, const Column*>> plain)
      : ep_(ep), ring_(ring), refs_(column_refs(cols)), plain_(std::move(plain)), cap_(ring.capacity()) {}

  // Prioritized cores: sequence priorities use the buffer's alpha and eps.
  void set_prioritized(double alpha, double eps) {
    prioritized_ = true;
    alpha_.store(alpha);
    eps_ = eps;
  }
  void set_alpha(double alpha) {
    alpha_.store(alpha);
    std::lock_guard<ForkSafeMutex> lock(reg_mu_);
    for (auto& x : indexes_) x->set_alpha(alpha, eps_);
  }
  bool prioritized() const { return prioritized_; }

  // Writer side: after an add of tickets t0 .. t0 + K - 1 was published (add mutex held).
  void on_add(std::uint64_t t0, std::size_t k) {
    if (indexes_.empty()) return;  // read under the add mutex, which every change of the list holds
    const std::uint64_t c = ring_.committed(), base = ring_.base();
    const std::uint64_t lo = std::max<std::uint64_t>(base, c > cap_ ? c - cap_ : 0);
    const double a = alpha_.load(std::memory_order_relaxed);
    for (auto& x : indexes_) {
      x->pop_below(lo, a, eps_);
      for (std::uint64_t t = t0; t < t0 + k; ++t) consider(*x, t, lo, a);
    }
  }
  // clear(), restore, reopen: with nothing else running. Indexes are rebuilt at their next use.
  void reset() {
    std::lock_guard<ForkSafeMutex> lock(reg_mu_);
    indexes_.clear();
  }
  void clear() {
    for (auto& x : indexes_) x->clear();
  }

  // The index of (period, need), built on first use from the stored steps (holding the add mutex). O(size) once
  std::shared_ptr<SequenceItems> index(std::size_t period, std::size_t need) {
    {
      std::lock_guard<ForkSafeMutex> lock(reg_mu_);
      for (auto& x : indexes_)
        if (x->period == period && x->need == need) return x;
    }
    std::lock_guard<ForkSafeMutex> add_lock(ep_.add_mutex());  // no add while it is built and registered
    std::lock_guard<ForkSafeMutex> lock(reg_mu_);
    for (auto& x : indexes_)
      if (x->period == period && x->need == need) return x;
    auto x = std::make_shared<SequenceItems>(cap_, period, need, prioritized_);
    const std::uint64_t c = ring_.committed(), base = ring_.base();
    const std::uint64_t lo = std::max<std::uint64_t>(base, c > cap_ ? c - cap_ : 0);
    const double a = alpha_.load();
    for (std::uint64_t t = lo; t < c; ++t) consider(*x, t, lo, a);
    if (indexes_.size() >= kMaxIndexes) indexes_.erase(indexes_.begin());
    indexes_.push_back(x);
    return x;
  }

  struct Args {
    std::size_t length, period;
    SequenceEnd end;
    double beta;
  };
  static std::size_t need_of(const Args& a) { return a.end == SequenceEnd::Drop ? a.length : 1; }

  // The number of admissible starts now (exact when no add runs meanwhile). O(1), or O(B + S K) near `b`.
  std::size_t admissible(const SequenceItems& x, std::size_t length, std::size_t b) const {
    const std::uint64_t h = x.head(), t = x.tail();
    const std::uint64_t u = t > h ? t - h : 0;
    if (u >= b + slack()) return static_cast<std::size_t>(u);
    EpisodeIndex::View v = ep_.view();
    std::size_t n = 0;
    for (std::uint64_t p = h; p < t; ++p) n += valid(x, x.at(p), length, v);
    return n;
  }

  // Sample `o.batch` sequences of up to a.length steps into `o` (GIL released by the caller). Returns T: the
  // longest real sequence (Truncate) or a.length. Throws ValueError if fewer starts are admissible than o.batch.
  std::size_t sample(SequenceItems& x, const Args& a, Rng& rng, SequenceOut& o) {
    const std::size_t n = o.batch, L = a.length;
    std::vector<std::uint64_t> start(n);
    std::vector<std::uint64_t> pos(n);
    std::vector<std::size_t> len(n, 0);
    EpisodeIndex::View v = ep_.view();
    double total = 0.0;
    std::uint64_t h = 0, span = 1;
    auto snapshot = [&]() {
      h = x.head();
      const std::uint64_t t = x.tail();
      span = t > h ? t - h : 1;
      if (x.prioritized()) total = x.tree().total();
    };
    auto draw = [&](std::size_t i, bool stratum) -> void {
      if (x.prioritized()) {
        const double u = stratum ? (static_cast<double>(i) + rng.uniform()) * (total / static_cast<double>(n))
                                 : rng.uniform() * total;
        const std::int64_t leaf = x.tree().find_prefix(std::min(u, std::nextafter(total, 0.0)));
        pos[i] = static_cast<std::uint64_t>(leaf);
        start[i] = x.at(static_cast<std::uint64_t>(leaf));
      } else {
        pos[i] = h + rng.bounded(span);
        start[i] = x.at(pos[i]);
      }
    };
    snapshot();
    if (x.prioritized() && !(total > 0.0))
      throw_invalid("sample_sequences: every admissible start has priority 0, so none can be drawn");
    const Ring::Quiet q = ring_.quiet_begin();
    bool checked = !q.quiet;
    if (!checked) {
      ep_.refresh(v);
      for (std::size_t i = 0; i < n; ++i) draw(i, true);
      for (std::size_t i = 0; i < n && !checked; ++i) {
        if (i == 0) prefetch(start[0], L);
        for (unsigned tries = 0;; ++tries) {
          // the next sequence's lines are asked for step by step while this one is copied (see walk)
          const auto r = fill<false>(start[i], i, L, a.end, v, o, len[i], i + 1 < n ? start[i + 1] : kNoNext);
          if (r == EpisodeIndex::kOk) break;
          if (!ring_.quiet_end(q)) {
            checked = true;
            break;
          }
          if (tries > 4096 + 8 * n) throw_invalid(kNone);
          draw(i, false);
        }
      }
      if (!checked && !ring_.quiet_end(q)) checked = true;
    }
    if (checked) {
      for (std::size_t i = 0; i < n; ++i) {
        for (unsigned tries = 0;; ++tries) {
          ep_.refresh(v);
          const auto r = fill<true>(start[i], i, L, a.end, v, o, len[i]);
          if (r == EpisodeIndex::kOk) break;
          if (tries > 64) std::this_thread::yield();
          if (tries > 1000000) throw_invalid(kNone);
          snapshot();
          draw(i, false);
        }
      }
    }
    std::size_t T = L;
    if (a.end == SequenceEnd::Truncate) T = *std::max_element(len.begin(), len.end());
    const double leaf_min = x.prioritized() ? x.tree().min() : 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto slot = static_cast<std::size_t>(start[i] % cap_);
      o.starts[i] = static_cast<std::int64_t>(slot);
      o.generations[i] = start[i] / cap_ + 1;
      o.lengths[i] = static_cast<std::int64_t>(len[i]);
      if (x.prioritized()) {
        o.items[i] = static_cast<std::int64_t>(pos[i]);
        const double leaf = x.tree().leaf(static_cast<std::size_t>(pos[i]));
        const double w = std::pow(std::min(leaf_min / leaf, 1.0), a.beta);
        o.weights[i] = std::max(static_cast<float>(w), std::numeric_limits<float>::denorm_min());
      }
    }
    if (T < L) compact(o, T);
    return T;
  }

  // The index of (period, need) if it exists (no build). Null after clear, restore or reopen dropped it.
  std::shared_ptr<SequenceItems> find(std::size_t period, std::size_t need) {
    std::lock_guard<ForkSafeMutex> lock(reg_mu_);
    for (auto& x : indexes_)
      if (x->period == period && x->need == need) return x;
    return nullptr;
  }

  // Sequence priorities of n sampled sequences (prioritized): row b, of leaf items[b] and start slot starts[b]
  // sampled at generation gens[b], gets p = eta * max + (1 - eta) * mean of td[b, i] over its trained steps
  // (trained[b * T + i] nonzero). Rows whose start slot was rewritten since (stale) or that have no trained step
  // are skipped. Arguments were validated by the caller (td finite, >= 0; leaves within the bound). Returns the
  // number of stale rows skipped. O(n T + n log capacity)
  std::size_t update_priorities(SequenceItems& x, const std::int64_t* items, const std::int64_t* starts,
                                const std::uint64_t* gens, const double* td, const std::uint8_t* trained,
                                std::size_t n, std::size_t T, double eta) {
    std::size_t stale = 0;
    const double a = alpha_.load(std::memory_order_relaxed);
    for (std::size_t b = 0; b < n; ++b) {
      double mx = 0.0, sum = 0.0;
      std::size_t cnt = 0;
      for (std::size_t i = 0; i < T; ++i) {
        if (!trained[b * T + i]) continue;
        const double d = td[b * T + i];
        mx = cnt ? std::max(mx, d) : d;
        sum += d;
        ++cnt;
      }
      const auto slot = static_cast<std::size_t>(starts[b]);
      const std::uint64_t ticket = (gens[b] - 1) * cap_ + slot;
      const auto leaf = static_cast<std::size_t>(items[b]);
      // Still stored, in this epoch (clear keeps generations), and still that leaf's item.
      auto still = [&]() { return ring_.generation(slot) == gens[b] && ticket >= ring_.base() && x.at(leaf) == ticket; };
      if (cnt == 0) {
        if (!still()) ++stale;
        continue;
      }
      const double p = eta * mx + (1.0 - eta) * (sum / static_cast<double>(cnt));
      if (!x.update(leaf, p, a, eps_, still)) ++stale;
    }
    return stale;
  }
  // Sequence leaves must stay within the buffer's bound (prioritized.h): the leaf of priority p.
  double leaf_of(double p) const { return std::pow(p + eps_, alpha_.load(std::memory_order_relaxed)); }

  static constexpr const char* kNone =
      "sample_sequences: no admissible start could be drawn (the buffer changed under the sampler)";

 private:
  // Steps that may be live items without being admissible starts (see the header comment), and one more lane.
  std::size_t slack() const { return (ep_.spec().stack + 2) * ep_.lanes(); }

  static constexpr std::uint64_t kNoNext = ~std::uint64_t(0);

  // Ask for the lines step i of the sequence from ticket s reads (its rows in every small column, its episode
  // metadata). Spread over the copy of the previous sequence, one step per step copied, these requests never
  // exceed what the core can keep in flight; issued all at once (prefetch below), about 160 of them stalled the
  // copy until lines came back (1e7 steps: 1.7x the 1e5 time). A hint only.
  __attribute__((always_inline)) void prefetch_step(std::uint64_t s, std::size_t i) const {
    const auto slot = static_cast<std::size_t>((s + i * ep_.lanes()) % cap_);
    __builtin_prefetch(ep_.start_data() + slot);
    __builtin_prefetch(ep_.flags_data() + slot);
    for (const ColumnRef& c : refs_) {
      if (c.row_bytes > 256 || c.ahead == 0) continue;
      const std::uint8_t* p = c.base + slot * c.stride;
      for (std::size_t o = 0; o < c.ahead; o += 64) __builtin_prefetch(p + o);
    }
  }

  // Ask for the lines the sequence of up to L steps from ticket s reads, in every stored column (its lane's rows
  // only, where they are a line or more apart), and its episode metadata. A hint: rows are latency-bound.
  __attribute__((always_inline)) void prefetch(std::uint64_t s, std::size_t L) const {  // see EpisodeIndex::prefetch
    const std::size_t K = ep_.lanes(), first = static_cast<std::size_t>(s % cap_);
    const std::size_t steps = std::min(L, (cap_ - 1 - first) / K + 1);  // up to the wrap
    ep_.prefetch(first, steps);
    for (const ColumnRef& c : refs_) {
      if (c.row_bytes > 256 || c.ahead == 0) continue;  // images: the hardware prefetcher streams them; records:
                                                        // their lead member asks for the lines
      const std::uint8_t* a = c.base + first * c.stride;
      const std::size_t step = K * c.stride;
      if (step >= 64) {
        for (std::size_t i = 0; i < steps; ++i)
          for (std::size_t o = 0; o < c.ahead; o += 64) __builtin_prefetch(a + i * step + o);
      } else {
        const std::uint8_t* b = a + (steps - 1) * step + c.ahead;
        for (const std::uint8_t* p = a; p < b; p += 64) __builtin_prefetch(p);
      }
    }
    const std::uint64_t* st = ep_.start_data() + first;
    for (std::size_t i = 0; i < steps * K; i += 8) __builtin_prefetch(st + i);
  }

  // Push ticket t's item of `x` if t completes one. t is stored (>= lo).
  void consider(SequenceItems& x, std::uint64_t t, std::uint64_t lo, double alpha) {
    const std::size_t slot = static_cast<std::size_t>(t % cap_);
    const std::uint64_t st = ep_.start(slot);
    if (st == EpisodeIndex::kNoEpisode || st > t) return;
    const std::uint64_t K = ep_.lanes();
    const std::uint64_t j = (t - st) / K;
    if (j + 1 < x.need) return;
    const std::uint64_t sj = j - (x.need - 1);
    if (sj % x.period != 0) return;
    const std::uint64_t s = t - (x.need - 1) * K;
    if (s < lo) return;
    x.push(s, alpha, eps_);
  }

  // Whether the item starting at ticket s is an admissible start now (checked reads; for the count only).
  bool valid(const SequenceItems& x, std::uint64_t s, std::size_t length, EpisodeIndex::View& v) const {
    (void)length;
    for (;;) {
      std::size_t m = 0;
      ep_.refresh(v);
      const auto r = walk<true>(s, x.need, v, nullptr, 0, 0, m, nullptr);
      if (r == EpisodeIndex::kTorn) {
        std::this_thread::yield();
        continue;
      }
      return r == EpisodeIndex::kOk && m >= x.need;
    }
  }

  // Walk up to `limit` steps from ticket s in its episode, assembling each into row base + i of `out` (null:
  // check only). m: the real steps. kInvalid if s itself is no sampleable stored step; kTorn if a slot changed.
  template <bool Checked>
  // `next`: the start ticket of the sequence copied after this one, whose steps are prefetched along (kNoNext: none).
  EpisodeIndex::Result walk(std::uint64_t s, std::size_t limit, const EpisodeIndex::View& v,
                            std::uint8_t* const* out, std::size_t base, std::size_t L, std::size_t& m,
                            std::int64_t* slots, std::uint64_t* episode = nullptr, std::uint64_t next = kNoNext) const {
    m = 0;
    if (s < v.lo || s >= v.committed) return EpisodeIndex::kInvalid;
    const std::uint64_t K = ep_.lanes();
    const std::size_t s_slot = static_cast<std::size_t>(s % cap_);
    std::uint64_t st = 0;
    std::size_t ahead = 0;  // steps of `next` asked for
    for (std::size_t i = 0; i < limit; ++i) {
      if (next != kNoNext) prefetch_step(next, ahead++);
      const std::uint64_t t = s + i * K;
      if (t >= v.committed) break;
      const auto slot = static_cast<std::size_t>(t % cap_);
      const std::uint64_t want = 2 * (t / cap_) + 2;
      if (Checked && ring_.seq_acquire(slot) != want) return EpisodeIndex::kTorn;
      const std::uint64_t sti = ep_.start(slot);
      if (i == 0) st = sti;
      if (Checked && ring_.seq_recheck(slot) != want) return EpisodeIndex::kTorn;
      if (st == EpisodeIndex::kNoEpisode || sti != st) break;
      const auto r = ep_.assemble<Checked>(slot, v, out, base + i, nullptr);
      if (r == EpisodeIndex::kTorn) return r;
      if (Checked && ring_.seq_recheck(slot) != want) return EpisodeIndex::kTorn;
      if (r == EpisodeIndex::kInvalid) break;
      if (out) {
        if (!Checked)
          for (const auto& p : plain_) {
            const std::size_t rb = p.second->row_bytes();
            load_shared(out[p.first] + (base + i) * rb, p.second->row(slot), rb);
          }
        if (slots) slots[base + i] = static_cast<std::int64_t>(slot);
      }
      ++m;
    }
    if (next != kNoNext)  // this sequence ended early: the rest of the next one's steps at once
      for (; ahead < limit; ++ahead) prefetch_step(next, ahead);
    (void)L, (void)s_slot;
    if (episode) *episode = st;  // read while the start's slot held ticket s (checked: verified around it)
    return m == 0 ? EpisodeIndex::kInvalid : EpisodeIndex::kOk;
  }

  // Sequence b from start ticket s into o; kInvalid if s is not an admissible start (Drop: fewer than L steps).
  template <bool Checked>
  EpisodeIndex::Result fill(std::uint64_t s, std::size_t b, std::size_t L, SequenceEnd end,
                            const EpisodeIndex::View& v, SequenceOut& o, std::size_t& m,
                            std::uint64_t next = kNoNext) const {
    const std::uint64_t K = ep_.lanes();
    if (end == SequenceEnd::Drop) {  // cheap rejection before any copy: the last step must be in the episode
      const std::uint64_t last = s + (L - 1) * K;
      if (s < v.lo || last >= v.committed) return EpisodeIndex::kInvalid;
      const auto ls = static_cast<std::size_t>(last % cap_);
      if (!Checked && ep_.start(ls) != ep_.start(static_cast<std::size_t>(s % cap_))) return EpisodeIndex::kInvalid;
    }
    std::uint64_t st = 0;
    const auto r = walk<Checked>(s, L, v, o.fields.data(), b * L, L, m, o.slots, &st, next);
    if (r != EpisodeIndex::kOk) return r;
    if (end == SequenceEnd::Drop && m < L) return EpisodeIndex::kInvalid;
    for (std::size_t i = 0; i < L; ++i) {
      const bool real = i < m;
      o.mask[b * L + i] = real;
      o.is_first[b * L + i] = real && s + i * K == st;
      if (!real) {
        o.slots[b * L + i] = -1;
        for (std::size_t f = 0; f < o.fields.size(); ++f)
          std::memset(o.fields[f] + (b * L + i) * o.row_bytes[f], 0, o.row_bytes[f]);
      }
    }
    return EpisodeIndex::kOk;
  }

  // Rows [B, L] -> [B, T] in place (T < L): row b's first T steps move to b * T.
  static void compact(SequenceOut& o, std::size_t T) {
    const std::size_t n = o.batch, L = o.length;
    auto move = [&](std::uint8_t* base, std::size_t rb) {
      for (std::size_t b = 1; b < n; ++b) std::memmove(base + b * T * rb, base + b * L * rb, T * rb);
    };
    for (std::size_t f = 0; f < o.fields.size(); ++f) move(o.fields[f], o.row_bytes[f]);
    move(o.mask, 1);
    move(o.is_first, 1);
    move(reinterpret_cast<std::uint8_t*>(o.slots), 8);
  }

  const EpisodeIndex& ep_;
  const Ring& ring_;
  std::vector<ColumnRef> refs_;  // the stored columns as the gather sees them (one prefetching member per record)
  std::vector<std::pair<std::size_t, const Column*>> plain_;  // (batch field, column) of Plain fields
  const std::size_t cap_;
  bool prioritized_ = false;
  std::atomic<double> alpha_{0.0};
  double eps_ = 0.0;
  ForkSafeMutex reg_mu_;
  std::vector<std::shared_ptr<SequenceItems>> indexes_;
};

}  // namespace fastreplay
