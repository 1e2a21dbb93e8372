// The uniform replay core: columnar storage on a lock-free ring, uniform sampling and consistent batched gather.
//
// Contract:
// - add(), sample() and get() may be called from any number of threads at once (they never take a lock).
//   A row handed out by sample()/get() is always one whole transition, never a mix of two, never a slot being
//   written (see ring.h for the protocol). clear() must not run concurrently with anything else.
// - Single-threaded, a fixed seed gives the same sequence of batches: every sample() call draws from its own
//   generator stream (seed, call number), so concurrent callers never share generator state.
// - Storage memory never moves: views of it stay valid for the life of the core (their rows are overwritten as
//   the ring wraps).
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/copy.h"
#include "fastreplay/episodes.h"
#include "fastreplay/gather.h"
#include "fastreplay/ring.h"
#include "fastreplay/rng.h"
#include "fastreplay/sequences.h"
#include "fastreplay/storage.h"

namespace fastreplay {

class ReplayCore {
 public:
  // `memory` (optional): one block per field of capacity rows, then (episodic buffers) the episode index's blocks
  // (see EpisodeIndex), then one of capacity sequence numbers (8 bytes each), e.g. memory-mapped files; by default
  // all memory is allocated here. `strides` (optional, with `memory`): the bytes between two rows of each field's
  // block (a slice of a record block, see storage.h); empty: contiguous rows. `episodes` (optional) makes the
  // buffer episodic (docs/episodes.md). `blocks` (optional, exclusive with `memory`; plain buffers only) gives all
  // of the core's memory, shared memory in particular (shared.h): the ring's, the generator's call counter, then
  // the columns. `layout`: how the core lays out the columns it allocates (storage.h; ignored with `memory`).
  ReplayCore(std::size_t capacity, const std::vector<FieldSpec>& fields, std::uint64_t seed,
             const std::vector<std::shared_ptr<std::uint8_t>>& memory = {}, const EpisodeSpec* episodes = nullptr,
             Blocks* blocks = nullptr, Layout layout = Layout::Auto, const std::vector<std::size_t>& strides = {})
      : ring_(check_capacity(capacity), memory.empty() ? nullptr : memory.back(), blocks),
        seed_(seed),
        calls_mem_(take_zeroed(blocks, 2 * kCacheLine)),  // the counter alone on a cache line
        calls_(*reinterpret_cast<std::atomic<std::uint64_t>*>(
            (reinterpret_cast<std::uintptr_t>(calls_mem_.get()) + kCacheLine - 1) / kCacheLine * kCacheLine)) {
    if (fields.empty()) throw_invalid("a buffer needs at least one field");
    if (!memory.empty() && memory.size() != fields.size() + 1 + episode_blocks(episodes))
      throw_invalid("one memory block per field, then the episode index's, then seq");
    if (!strides.empty() && strides.size() != fields.size()) throw_invalid("one stride per field");
    if (blocks && (episodes || !memory.empty())) throw_invalid("shared storage holds plain buffers only");
    if (memory.empty()) {
      columns_ = allocate_columns(fields, plan_storage(fields, layout), capacity, blocks);
    } else {
      columns_.reserve(fields.size());
      for (std::size_t f = 0; f < fields.size(); ++f)
        columns_.emplace_back(fields[f], memory[f], strides.empty() ? 0 : strides[f]);
    }
    refs_ = column_refs(columns_);
    refs_seq_ = refs_;
    refs_seq_.push_back({ring_.seq_column(), 8, 8, 8});
    if (episodes) {
      std::vector<std::shared_ptr<std::uint8_t>> em;
      if (!memory.empty()) em.assign(memory.begin() + static_cast<std::ptrdiff_t>(fields.size()), memory.end() - 1);
      ep_.reset(new EpisodeIndex(*episodes, ring_, columns_, em));
      for (std::size_t f = 0; f < episodes->outs.size(); ++f)
        if (episodes->outs[f].kind == EpisodeSpec::Plain) plain_.push_back({f, column_ref(columns_[episodes->outs[f].src])});
      std::vector<std::pair<std::size_t, const Column*>> plain_cols;  // sequences.h: Plain fields, by column
      for (std::size_t f = 0; f < episodes->outs.size(); ++f)
        if (episodes->outs[f].kind == EpisodeSpec::Plain) plain_cols.push_back({f, &columns_[episodes->outs[f].src]});
      seqs_.reset(new Sequences(*ep_, ring_, columns_, std::move(plain_cols)));
    }
  }
  // Memory blocks the episode index of `spec` takes: its start column, and one finals column per observation key.
  static std::size_t episode_blocks(const EpisodeSpec* spec) {
    return spec ? 1 + (spec->dedup ? spec->obs_col.size() : 0) : 0;
  }
  // The episode index; null for a plain buffer.
  EpisodeIndex* episodes() const { return ep_.get(); }
  // The sequence indexes over the episode index (sequences.h); null for a plain buffer.
  Sequences* sequences() const { return seqs_.get(); }
  // Whether a slot can hold a sampleable step (false only for next-step reset rows of an episodic buffer).
  bool is_step(std::size_t slot) const { return !ep_ || ep_->is_step(slot); }
  virtual ~ReplayCore() = default;
  ReplayCore(const ReplayCore&) = delete;
  ReplayCore& operator=(const ReplayCore&) = delete;

  std::size_t capacity() const { return ring_.capacity(); }
  std::size_t size() const { return ring_.size(); }
  const Column& column(std::size_t f) const { return columns_[f]; }
  const Ring& ring() const { return ring_; }
  std::uint64_t seed() const { return seed_; }
  // Generator stream of the next sample call (exposed so a caller can save and restore it).
  std::uint64_t stream() const { return calls_.load(std::memory_order_relaxed); }
  void set_stream(std::uint64_t s) { calls_.store(s, std::memory_order_relaxed); }
  std::uint64_t next_stream() { return calls_.fetch_add(1, std::memory_order_relaxed); }

  // Append n rows; src[f] points at n contiguous rows of field f. Wraps around the ring inside the call; when
  // n > capacity only the last capacity rows are kept. O(n * row bytes)
  void add(const void* const* src, std::size_t n) {
    if (ep_) return add_episodic(src, n);
    if (n == 0) return;
    const std::size_t cap = capacity();
    const std::uint64_t t0 = ring_.begin_write(n);
    const std::size_t skip = n > cap ? n - cap : 0;
    const std::uint64_t first = t0 + skip;
    const std::size_t m = n - skip;

    std::vector<std::uint8_t> obsolete;  // stays empty unless a faster writer lapped us (very rare)
    for (std::size_t k = 0; k < m; ++k) {
      if (!ring_.claim(first + k)) {
        if (obsolete.empty()) obsolete.assign(m, 0);
        obsolete[k] = 1;
      }
    }
    if (obsolete.empty()) {
      const Ring::Runs r = ring_.runs(first, m);
      for (std::size_t f = 0; f < columns_.size(); ++f) {
        const std::size_t rb = columns_[f].row_bytes();
        const auto* s = static_cast<const std::uint8_t*>(src[f]) + skip * rb;
        columns_[f].store_rows(r.slot, s, r.head);
        if (r.tail) columns_[f].store_rows(0, s + r.head * rb, r.tail);
      }
    } else {
      for (std::size_t k = 0; k < m; ++k) {
        if (obsolete[k]) continue;
        const std::size_t slot = static_cast<std::size_t>((first + k) % cap);
        for (std::size_t f = 0; f < columns_.size(); ++f) {
          const std::size_t rb = columns_[f].row_bytes();
          store_shared(columns_[f].row(slot), static_cast<const std::uint8_t*>(src[f]) + (skip + k) * rb, rb);
        }
      }
    }
    for (std::size_t k = 0; k < m; ++k)
      if (obsolete.empty() || !obsolete[k]) ring_.publish(first + k);
    on_published(first, m, obsolete);
    ring_.end_write(n);
  }

  // Draw n slots uniformly from the stored transitions and gather their rows: idx[n] (int64), out[f] (n rows of
  // field f), gens[n] (generation of each row, may be null). Throws if the buffer is empty. O(n * row bytes)
  void sample(std::size_t n, std::int64_t* idx, std::uint64_t* gens, std::uint8_t* const* out) {
    check_not_empty("sample");
    const std::size_t size = ring_.size();
    Rng rng(seed_, next_stream());
    if (ep_) {
      for (std::size_t i = 0; i < n; ++i) idx[i] = static_cast<std::int64_t>(rng.bounded(size));
      Fallback fb(n);
      gather_episodes(idx, n, gens, out, [&](std::size_t) {
        if (fb.exhausted()) return fb.pick(*this, rng);
        return static_cast<std::int64_t>(rng.bounded(std::max<std::size_t>(ring_.size(), 1)));
      });
      return;
    }
    // Each row is asked for as soon as its index is drawn, so the first misses overlap the drawing.
    for (std::size_t i = 0; i < n; ++i) {
      idx[i] = static_cast<std::int64_t>(rng.bounded(size));
      for (const ColumnRef& c : refs_)
        if (c.row_bytes <= detail::kSmallRow) detail::prefetch_rows(c, idx + i, 1);
    }
    gather_consistent(idx, n, gens, out, [&](std::size_t) {
      return static_cast<std::int64_t>(rng.bounded(std::max<std::size_t>(ring_.reserved_size(), 1)));
    });
  }

  // Gather the rows at the given slots. Every index must be in [0, size()). O(n * row bytes)
  void get(const std::int64_t* idx, std::size_t n, std::uint64_t* gens, std::uint8_t* const* out) {
    check_indices("get", idx, n);
    std::vector<std::int64_t> own(idx, idx + n);
    if (ep_) return gather_episodes(own.data(), n, gens, out, nullptr);
    gather_consistent(own.data(), n, gens, out, [&](std::size_t i) { return own[i]; });
  }

  // Throws ValueError if nothing is stored: sampling needs at least one transition. O(1)
  void check_not_empty(const char* fn) const {
    if (ring_.size() == 0) throw_invalid(std::string(fn) + ": the buffer is empty; add transitions first");
  }

  // Throws IndexError naming the first index outside [0, capacity): any slot, stored or not. O(n)
  void check_slots(const char* fn, const std::int64_t* idx, std::size_t n) const {
    const auto cap = static_cast<std::int64_t>(capacity());
    for (std::size_t i = 0; i < n; ++i)
      if (idx[i] < 0 || idx[i] >= cap)
        throw_index(std::string(fn) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                    " is out of range for capacity " + std::to_string(cap));
  }

  // Throws IndexError naming the first index outside [0, reserved size): slots written (or, under concurrent
  // adds, being written) in this epoch. Without concurrent adds that is [0, size()).
  void check_indices(const char* fn, const std::int64_t* idx, std::size_t n) const {
    const auto size = static_cast<std::int64_t>(ring_.reserved_size());
    for (std::size_t i = 0; i < n; ++i) {
      if (idx[i] < 0 || idx[i] >= size) {
        throw_index(std::string(fn) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                    " is out of range for a buffer holding " + std::to_string(size) + " transitions");
      }
    }
  }

  // Checkpoint support (not safe concurrently with other calls): restore the ring's bookkeeping; seq null means
  // the sequence numbers were already read into raw_seq() (see Ring::restore). O(capacity)
  void restore_ring(const Ring::State& st, const std::uint64_t* seq) {
    ring_.restore(st, seq);
    if (ep_) ep_->restore();
    if (seqs_) seqs_->reset();
  }
  std::uint64_t* raw_seq() { return ring_.raw_seq(); }
  // Reopen persisted storage (see Ring::reopen); rows torn by a crash, and rows reserved below the recovered cursor
  // but never written, are replaced by a copy of the newest whole row, so every stored row is still one real
  // transition. Returns how many were repaired. O(capacity)
  std::size_t reopen(std::uint64_t base) {
    std::vector<std::size_t> torn;
    ring_.reopen(base, torn, ep_ ? ep_->lanes() : 1);  // episodic: a crash mid-add leaves the lanes aligned
    if (ep_) {  // a repaired row is no step; then every lane continues from its newest row
      ep_->mark_not_steps(torn);
      ep_->restore();
      seqs_->reset();
    }
    if (torn.empty()) return 0;
    std::vector<std::uint8_t> is_torn(capacity(), 0);
    for (std::size_t s : torn) is_torn[s] = 1;
    const std::size_t n = size();
    std::size_t donor = capacity();
    for (std::size_t k = 0; k < n; ++k) {  // newest whole row, walking back from the cursor
      const std::size_t s = (ring_.next_index() + capacity() - 1 - k) % capacity();
      if (s < n && !is_torn[s]) {
        donor = s;
        break;
      }
    }
    for (std::size_t s : torn) {
      for (auto& c : columns_) {
        if (donor < capacity())
          std::memcpy(c.row(s), c.row(donor), c.row_bytes());
        else
          std::memset(c.row(s), 0, c.row_bytes());
      }
    }
    return torn.size();
  }

  // Empty the buffer (memory is kept). Not safe concurrently with other calls. O(1)
  virtual void clear() {
    ring_.clear();
    if (ep_) ep_->reset_lanes();
    if (seqs_) seqs_->clear();
  }

 protected:
  // Hook for prioritized replay: called once the m rows from ticket `first` are published (obsolete[k] set, if
  // obsolete is not empty, for the rows skipped because a newer lap owns their slot).
  virtual void on_published(std::uint64_t, std::size_t, const std::vector<std::uint8_t>&) {}

  // Gather rows for idx[0..n) so that each row is one whole published transition. If no writer ran during the
  // copy (the common case) one global check covers the whole batch; otherwise each row is re-checked against its
  // slot's sequence number and, if torn or not readable, idx[i] = redraw(i) and the row is copied again.
  template <class Redraw>
  void gather_consistent(std::int64_t* idx, std::size_t n, std::uint64_t* gens, std::uint8_t* const* out,
                         Redraw&& redraw) {
    const Ring::Quiet q = ring_.quiet_begin();
    if (q.quiet) {
      if (gens && refs_.size() < kMaxGatherFields) {
        // The sequence numbers gathered as one more column, their misses in flight with the rows' (at 1e6 rows
        // the seq array is 8 MB: reading it after the gather cost 0.4 us a batch of 256); generation = seq / 2.
        std::uint8_t* outs[kMaxGatherFields + 1];
        std::copy(out, out + refs_.size(), outs);
        outs[refs_.size()] = reinterpret_cast<std::uint8_t*>(gens);
        gather_batch(refs_seq_.data(), refs_seq_.size(), idx, n, outs);
        for (std::size_t i = 0; i < n; ++i) gens[i] /= 2;
      } else {
        gather_batch(refs_.data(), refs_.size(), idx, n, out);
        if (gens)
          for (std::size_t i = 0; i < n; ++i) gens[i] = ring_.generation(static_cast<std::size_t>(idx[i]));
      }
      if (ring_.quiet_end(q)) return;
    }
    for (std::size_t i = 0; i < n; ++i) {
      for (unsigned tries = 0;; ++tries) {
        const auto slot = static_cast<std::size_t>(idx[i]);
        const std::uint64_t s1 = ring_.seq_acquire(slot);
        if (ring_.readable(s1)) {
          for (std::size_t f = 0; f < columns_.size(); ++f) {
            const std::size_t rb = columns_[f].row_bytes();
            load_shared(out[f] + i * rb, columns_[f].row(slot), rb);
          }
          if (ring_.seq_recheck(slot) == s1) {
            if (gens) gens[i] = s1 / 2;
            break;
          }
        }
        if (tries > 64) std::this_thread::yield();
        idx[i] = redraw(i);
      }
    }
  }

  // --- episodic buffers ------------------------------------------------------------------------------------
  // One add of exactly K rows (one per lane), serialised with other adds; src[f] points at the K rows of input
  // field f. The row count was checked by the caller's message too; here it is a precondition that throws.
  void add_episodic(const void* const* src, std::size_t n) {
    const std::size_t k = ep_->lanes();
    if (n != k)
      throw_invalid("add: a buffer with num_envs=" + std::to_string(k) + " takes exactly " + std::to_string(k) +
                    " rows per add (one per lane), got " + std::to_string(n));
    std::lock_guard<ForkSafeMutex> lock(ep_->add_mutex());
    const std::uint64_t t0 = ring_.begin_write(k);
    for (std::size_t i = 0; i < k; ++i) {  // writers are serialised: no newer lap can own these slots
      const bool claimed = ring_.claim(t0 + i);
      FR_DEBUG_ASSERT(claimed);
      (void)claimed;
    }
    ep_->write(t0, src);
    for (std::size_t i = 0; i < k; ++i) ring_.publish(t0 + i);
    on_published(t0, k, {});  // no row obsolete
    ring_.end_write(k);
    seqs_->on_add(t0, k);  // after the publication: a new item's steps are committed
  }

  // When rejection keeps failing (few sampleable steps), draws come from an explicit list of sampleable slots,
  // rebuilt each time the attempts run out again; an empty list raises the "nothing sampleable" error.
  struct Fallback {
    explicit Fallback(std::size_t batch) : limit(4096 + 8 * batch) {}
    std::size_t limit, attempts = 0;
    std::vector<std::int64_t> slots;
    std::vector<double> cum;  // prioritized: running sums of the slots' leaves
    bool exhausted() { return ++attempts > limit; }
    // A sampleable slot: uniformly, or (leaf given) in proportion to leaf(slot).
    std::int64_t pick(const ReplayCore& core, Rng& rng, const std::function<double(std::size_t)>* leaf = nullptr) {
      if (slots.empty() || attempts % limit == 0) {
        slots = core.sampleable_slots();
        if (slots.empty()) throw_invalid(kNothingSampleable);
        cum.clear();
        if (leaf) {
          double acc = 0.0;
          for (std::int64_t s : slots) cum.push_back(acc += (*leaf)(static_cast<std::size_t>(s)));
          if (!(acc > 0.0)) throw_invalid("sample: every sampleable step has priority 0, so none can be drawn");
        }
      }
      if (cum.empty()) return slots[rng.bounded(slots.size())];
      const double u = rng.uniform() * cum.back();
      const auto it = std::upper_bound(cum.begin(), cum.end(), u);
      return slots[std::min<std::size_t>(static_cast<std::size_t>(it - cum.begin()), slots.size() - 1)];
    }
  };
  static constexpr const char* kNothingSampleable =
      "sample: no stored step can be sampled yet: a step needs its next observation (with next_obs='dedup', the "
      "lane's next step) and every frame of its stack";

  // The stored slots that hold a sampleable step now. O(size)
  std::vector<std::int64_t> sampleable_slots() const {
    std::vector<std::int64_t> out;
    EpisodeIndex::View v = ep_->view();
    const std::size_t size = ring_.size();
    for (std::size_t s = 0; s < size; ++s) {
      for (;;) {
        const auto r = ep_->assemble<true>(s, v, nullptr, 0, nullptr);
        if (r == EpisodeIndex::kTorn) {
          ep_->refresh(v);
          std::this_thread::yield();
          continue;
        }
        if (r == EpisodeIndex::kOk) out.push_back(static_cast<std::int64_t>(s));
        break;
      }
    }
    return out;
  }

  // Episodic gather of idx[0..n): every row assembled from the episode index (docs/episodes.md). A slot that holds
  // no sampleable step, or changed under a writer, is replaced by redraw(i); with redraw null (get) the first
  // slot that is not sampleable raises ValueError and a changed one is read again.
  template <class Redraw>
  void gather_episodes(std::int64_t* idx, std::size_t n, std::uint64_t* gens, std::uint8_t* const* out,
                       Redraw&& redraw) {
    EpisodeIndex::View v = ep_->view();
    auto bad = [&](std::size_t i) {
      throw_invalid("get: slot " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                    " holds no sampleable step");
    };
    const Ring::Quiet q = ring_.quiet_begin();
    if (q.quiet) {
      ep_->refresh(v);
      constexpr std::size_t kAhead = 8;
      for (std::size_t i = 0; i < std::min(n, kAhead); ++i) ep_->prefetch(static_cast<std::size_t>(idx[i]), v.n);
      for (std::size_t i = 0; i < n; ++i) {
        if (i + kAhead < n) ep_->prefetch(static_cast<std::size_t>(idx[i + kAhead]), v.n);
        for (;;) {
          const auto r = ep_->assemble<false>(static_cast<std::size_t>(idx[i]), v, out, i, gens ? gens + i : nullptr);
          if (r == EpisodeIndex::kOk) break;
          if (!ring_.quiet_end(q)) goto checked;  // a writer started: its rows may look invalid for now
          if (!call(redraw, i, idx)) bad(i);
        }
      }
      for (const auto& p : plain_) gather_batch(&p.second, 1, idx, n, out + p.first);
      if (ring_.quiet_end(q)) return;
    }
  checked:
    for (std::size_t i = 0; i < n; ++i) {
      for (unsigned tries = 0;; ++tries) {
        ep_->refresh(v);
        const auto r = ep_->assemble<true>(static_cast<std::size_t>(idx[i]), v, out, i, gens ? gens + i : nullptr);
        if (r == EpisodeIndex::kOk) break;
        if (tries > 64) std::this_thread::yield();
        if (r == EpisodeIndex::kTorn && std::is_same<std::decay_t<Redraw>, std::nullptr_t>::value) continue;
        if (!call(redraw, i, idx)) bad(i);
      }
    }
  }
  template <class Redraw>
  static bool call(Redraw& redraw, std::size_t i, std::int64_t* idx) {
    if constexpr (std::is_same<std::decay_t<Redraw>, std::nullptr_t>::value) {
      (void)redraw, (void)i, (void)idx;
      return false;
    } else {
      idx[i] = redraw(i);
      return true;
    }
  }

  Ring ring_;
  std::vector<Column> columns_;
  std::vector<ColumnRef> refs_;
  std::vector<ColumnRef> refs_seq_;  // refs_, then the ring's sequence numbers (gathered as generations)
  static constexpr std::size_t kMaxGatherFields = 63;
  std::unique_ptr<EpisodeIndex> ep_;
  std::vector<std::pair<std::size_t, ColumnRef>> plain_;  // episodic: (batch field, column) of Plain fields
  std::unique_ptr<Sequences> seqs_;                        // episodic: sequence indexes (sequences.h)

 private:
  static std::size_t check_capacity(std::size_t capacity) {
    if (capacity == 0) throw_invalid("capacity must be positive, got 0");
    return capacity;
  }
  const std::uint64_t seed_;
  std::shared_ptr<std::uint8_t> calls_mem_;  // owns calls_ (zeroed: 0; slack for the alignment)
  std::atomic<std::uint64_t>& calls_;
};

}  // namespace fastreplay
