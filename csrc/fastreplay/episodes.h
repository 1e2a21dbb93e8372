// The episode index (docs/episodes.md): lanes, episode starts, finals, and the assembly of episodic batch rows.
//
// A buffer built for K lanes takes exactly K rows per add, row k from lane k; capacity is a multiple of K, so the
// lane of ticket t is t % K and the lane's previous and next steps are tickets t - K and t + K. For every stored
// slot the index keeps `start`: the ticket of the first step of its episode, or kNoEpisode for a next-step reset
// row (stored, never sampled). With next-observation dedup, the observation that follows an episode's last step
// (its final observation) is kept in a slot-indexed `finals` column per observation key, written only at ends.
//
// Writers are serialised (one add at a time, under add_mutex()); samplers run concurrently with them and with
// each other. A sampled row reads several slots (frame history, the n-step window, the next frame): in a quiet
// gather (no add ran, ring.h's global check) every ticket below the committed count is stable and validity is
// arithmetic; otherwise each slot read is checked against the sequence number its ticket must have, before and
// after the copies, and a row that changed is drawn again.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/copy.h"
#include "fastreplay/fork.h"
#include "fastreplay/memory.h"
#include "fastreplay/ring.h"
#include "fastreplay/storage.h"

namespace fastreplay {

// How an episodic buffer's input fields, columns and batch fields relate. Built by the bindings from the Python
// layer's layouts (fastreplay/_episodes.py); indices refer to input fields, stored columns and batch fields.
struct EpisodeSpec {
  std::size_t lanes = 1;
  bool dedup = false;
  std::size_t stack = 1;
  bool zero_pad = false;
  bool next_step = false;
  std::size_t n_step = 1;
  double gamma = 0.99;

  std::vector<std::size_t> in_row_bytes;  // per input field
  std::vector<std::size_t> col_input;     // per column: the input field it is copied from
  std::vector<std::size_t> col_offset;    // per column: byte offset in that input row (newest frame of a stack)
  // Per observation key j: its column, the input field of its next observation and the offset of the newest frame
  // there, and (next_obs="store") the next observation's column.
  std::vector<std::size_t> obs_col, next_input, next_offset, next_col;
  std::size_t reward_col = 0, done_col = 0;
  bool reward_f64 = false;
  bool has_truncated = false;
  std::size_t trunc_col = 0;
  std::size_t done_input = 0, trunc_input = 0;

  enum Kind : std::uint8_t { Plain, Obs, NextObs, Reward, Done, Truncated, Discount };
  struct Out {
    Kind kind;
    std::size_t src;  // column (Plain), key (Obs, NextObs)
  };
  std::vector<Out> outs;  // per batch field
};

class EpisodeIndex {
 public:
  static constexpr std::uint64_t kNoEpisode = ~std::uint64_t(0);
  // What assemble() found for one row.
  enum Result { kOk, kInvalid, kTorn };

  // `memory`, if not empty: the start column (capacity uint64), then one finals column per observation key (dedup
  // only), e.g. memory-mapped files. Columns are the ring's stored columns.
  EpisodeIndex(EpisodeSpec spec, const Ring& ring, const std::vector<Column>& columns,
               const std::vector<std::shared_ptr<std::uint8_t>>& memory)
      : spec_(std::move(spec)), ring_(ring), cols_(columns), cap_(ring.capacity()), lanes_(spec_.lanes, Lane{}) {
    if (spec_.lanes == 0 || cap_ % spec_.lanes != 0) throw_invalid("capacity must be a multiple of num_envs");
    if (spec_.stack == 0 || spec_.n_step == 0) throw_invalid("frame_stack and n_step must be >= 1");
    std::size_t m = 0;
    start_mem_ = memory.empty() ? allocate_zeroed(checked_mul(cap_, 8)) : memory[m++];
    start_ = reinterpret_cast<std::uint64_t*>(start_mem_.get());
    flags_ = allocate_zeroed(cap_);  // derived from the done/truncated columns: rebuilt by restore()
    if (spec_.dedup) {
      for (std::size_t j = 0; j < spec_.obs_col.size(); ++j) {
        const std::size_t rb = cols_[spec_.obs_col[j]].row_bytes();
        finals_.push_back(memory.empty() ? allocate_zeroed(checked_mul(cap_, rb), true) : memory.at(m++));
      }
    }
    n_step_.store(spec_.n_step);
    gamma_.store(spec_.gamma);
    for (std::size_t c : spec_.obs_col) large_ = large_ || cols_[c].row_bytes() > 256;
    obs_out_.assign(spec_.obs_col.size(), spec_.outs.size());
    for (std::size_t f = 0; f < spec_.outs.size(); ++f)
      if (spec_.outs[f].kind == EpisodeSpec::Obs) obs_out_[spec_.outs[f].src] = f;
  }

  // Ask for the lines that assembling the row of `slot` reads first (metadata, small observations), a few rows
  // ahead: rows are latency-bound, and this keeps several misses in flight. A hint only. O(1)
  __attribute__((always_inline)) void prefetch(std::size_t slot, std::size_t n) const {
    // always_inline: a function that only prefetches has no side effects as far as GCC's IPA pure-const analysis
    // sees, so a call to it that is not inlined early is deleted as dead code, prefetches and all (GCC 12).
    const std::size_t k_lanes = spec_.lanes;
    __builtin_prefetch(start_ + slot);
    std::size_t last = slot + (n - 1) * k_lanes;  // the window's last slot, at most
    if (last >= cap_) last %= cap_;
    prefetch_span(flags_.get(), 1, slot, last);
    prefetch_span(cols_[spec_.reward_col].data(), cols_[spec_.reward_col].stride(), slot, last);
    if (spec_.stack > 1 && large_) return;
    for (std::size_t j = 0; j < spec_.obs_col.size(); ++j) {
      const Column& c = cols_[spec_.obs_col[j]];
      if (c.row_bytes() > 256) continue;
      __builtin_prefetch(c.row(slot));
      // the next observation of a full window (with n = 1: of the step itself)
      if (spec_.dedup)
        __builtin_prefetch(c.row(last + k_lanes < cap_ ? last + k_lanes : (last + k_lanes) % cap_));
      else
        __builtin_prefetch(cols_[spec_.next_col[j]].row(last));
    }
  }

  const EpisodeSpec& spec() const { return spec_; }
  std::size_t lanes() const { return spec_.lanes; }
  std::size_t n_step() const { return n_step_.load(std::memory_order_relaxed); }
  double gamma() const { return gamma_.load(std::memory_order_relaxed); }
  // Take effect from the next sample; a sample running meanwhile uses the old or the new value.
  void set_n_step(std::size_t n) {
    if (n == 0) throw_invalid("n_step must be >= 1, got 0");
    n_step_.store(n, std::memory_order_relaxed);
  }
  void set_gamma(double g) {
    if (!(g >= 0.0 && g <= 1.0)) throw_invalid("gamma must be in [0, 1], got " + format_real(g));
    gamma_.store(g, std::memory_order_relaxed);
  }
  ForkSafeMutex& add_mutex() const { return add_mu_; }

  std::uint64_t* start_data() const { return start_; }
  const std::uint8_t* flags_data() const { return flags_.get(); }
  std::uint8_t* finals_data(std::size_t j) const { return finals_.at(j).get(); }
  std::size_t finals_count() const { return finals_.size(); }
  std::uint64_t start(std::size_t slot) const { return __atomic_load_n(start_ + slot, __ATOMIC_RELAXED); }
  bool is_step(std::size_t slot) const { return start(slot) != kNoEpisode; }
  bool end_at(std::size_t slot) const { return flags(slot) != 0; }

  // --- writer side (under add_mutex, slots of tickets t0 .. t0 + K - 1 claimed) -------------------------------
  // Copy the K input rows into the columns, record each row's episode start and, at ends, its final observation.
  void write(std::uint64_t t0, const void* const* src) {
    const std::size_t k_lanes = spec_.lanes;
    // t0 is a multiple of K and so is the capacity: the K slots of an add are contiguous, never wrapped.
    const std::size_t s0 = slot_of(t0);
    for (std::size_t c = 0; c < cols_.size(); ++c) {
      const std::size_t rb = cols_[c].row_bytes();
      const std::size_t stride = spec_.in_row_bytes[spec_.col_input[c]];
      const auto* s = static_cast<const std::uint8_t*>(src[spec_.col_input[c]]) + spec_.col_offset[c];
      if (stride == rb) {
        cols_[c].store_rows(s0, s, k_lanes);
      } else {  // the newest frame of each stacked input row
        for (std::size_t k = 0; k < k_lanes; ++k) store_shared(cols_[c].row(s0 + k), s + k * stride, rb);
      }
    }
    const auto* done = static_cast<const std::uint8_t*>(src[spec_.done_input]);
    const auto* trunc = spec_.has_truncated ? static_cast<const std::uint8_t*>(src[spec_.trunc_input]) : nullptr;
    for (std::size_t k = 0; k < k_lanes; ++k) {
      const std::uint64_t t = t0 + k;
      const std::size_t slot = slot_of(t);
      Lane& lane = lanes_[k];
      std::uint64_t st;
      if (lane.state == Lane::kEnded && spec_.next_step) {
        st = kNoEpisode;
        lane.state = Lane::kNew;
      } else if (lane.state != Lane::kIn) {
        st = t;
        lane = {Lane::kIn, t};
      } else {
        st = lane.start;
      }
      __atomic_store_n(start_ + slot, st, __ATOMIC_RELAXED);
      const auto f = static_cast<std::uint8_t>((done[k] ? kTerminated : 0) | (trunc && trunc[k] ? kTruncated : 0));
      __atomic_store_n(flags_.get() + slot, f, __ATOMIC_RELAXED);
      const bool end = f != 0;
      if (st != kNoEpisode && end) {
        lane.state = Lane::kEnded;
        for (std::size_t j = 0; j < finals_.size(); ++j) {
          const std::size_t rb = cols_[spec_.obs_col[j]].row_bytes();
          const auto* s = static_cast<const std::uint8_t*>(src[spec_.next_input[j]]) +
                          k * spec_.in_row_bytes[spec_.next_input[j]] + spec_.next_offset[j];
          store_shared(finals_[j].get() + slot * rb, s, rb);
        }
      }
    }
  }

  // Every lane starts a new episode (clear, or a new epoch).
  void reset_lanes() { std::fill(lanes_.begin(), lanes_.end(), Lane{}); }

  // After a checkpoint restore or a reopen: check the stored starts (they come from a file: ValueError for one no
  // add could have written) and rebuild each lane's state from its newest row. Nothing else may run. O(size)
  void restore() {
    const auto st = ring_.state();
    const std::uint64_t c = st.cursor, base = st.base, k_lanes = spec_.lanes;
    const std::uint64_t lo = std::max<std::uint64_t>(base, c > cap_ ? c - cap_ : 0);
    if ((c - base) % k_lanes != 0) throw_invalid("restore: the cursor is not a whole number of adds of num_envs rows");
    for (std::uint64_t t = lo; t < c; ++t) {  // the flags follow from the stored done/truncated columns
      const std::size_t sl = slot_of(t);
      const bool term = cols_[spec_.done_col].row(sl)[0] != 0;
      const bool trunc = spec_.has_truncated && cols_[spec_.trunc_col].row(sl)[0] != 0;
      flags_.get()[sl] = static_cast<std::uint8_t>((term ? kTerminated : 0) | (trunc ? kTruncated : 0));
    }
    for (std::uint64_t t = lo; t < c; ++t) {
      const std::uint64_t s = start(slot_of(t));
      if (s != kNoEpisode && (s > t || s < base || (t - s) % k_lanes != 0))
        throw_invalid("restore: slot " + std::to_string(slot_of(t)) + " has an impossible episode start " +
                      std::to_string(s));
    }
    reset_lanes();
    if (c - base < k_lanes) return;
    for (std::size_t k = 0; k < k_lanes; ++k) {
      const std::uint64_t t = c - k_lanes + k;
      const std::size_t slot = slot_of(t);
      const std::uint64_t s = start(slot);
      if (s == kNoEpisode)
        lanes_[k] = {Lane::kNew, 0};
      else if (end_at(slot))
        lanes_[k] = {Lane::kEnded, 0};
      else
        lanes_[k] = {Lane::kIn, s};
    }
  }

  // Slots repaired after a crash (memory-mapped storage): they become non-steps.
  void mark_not_steps(const std::vector<std::size_t>& slots) {
    for (std::size_t s : slots) __atomic_store_n(start_ + s, kNoEpisode, __ATOMIC_RELAXED);
  }

  // --- reader side ------------------------------------------------------------------------------------------
  // Per-call values of a gather: the committed count, the epoch, n and the powers of gamma.
  struct View {
    std::uint64_t committed, base, lo;
    std::size_t n;
    std::vector<double> gpow;  // gamma**m for m = 0 .. n
  };
  View view() const {
    View v;
    v.n = std::min(n_step(), cap_ / spec_.lanes);  // a window never holds more steps than a lane stores
    const double g = gamma();
    v.gpow.resize(v.n + 1);
    for (std::size_t m = 0; m <= v.n; ++m) v.gpow[m] = std::pow(g, static_cast<double>(m));
    refresh(v);
    return v;
  }
  void refresh(View& v) const {
    v.committed = ring_.committed();
    v.base = ring_.base();
    v.lo = std::max<std::uint64_t>(v.base, v.committed > cap_ ? v.committed - cap_ : 0);
  }

  // Fill row i of the batch arrays `out` (per batch field; null: check only) for the step in `slot`.
  // Checked=false: a quiet gather (no writer ran since v was taken); the caller verifies quietness afterwards and
  // copies Plain fields itself. Checked=true: every slot read is verified; Plain fields are copied here too.
  // `gen` receives the slot's generation. Returns kInvalid if the slot holds no sampleable step, kTorn if a writer
  // changed a slot it read.
  template <bool Checked>
  Result assemble(std::size_t slot, const View& v, std::uint8_t* const* out, std::size_t i, std::uint64_t* gen) const {
    Touched touched;
    std::uint64_t t;
    if (Checked) {
      const std::uint64_t s = ring_.seq_acquire(slot);
      if ((s & 1) || s < 2 * (v.base / cap_) + 2) return kTorn;
      t = (s / 2 - 1) * cap_ + slot;
      touched.add(slot, s);
    } else {
      if (slot >= v.committed) return kInvalid;
      t = slot + cap_ * ((v.committed - 1 - slot) / cap_);
      if (t < v.base) return kInvalid;
    }
    const std::uint64_t k_lanes = spec_.lanes;
    auto touch = [&](std::uint64_t x) {  // ticket x's slot must still hold it
      if (!Checked) return true;
      const std::size_t sl = slot_of(x);
      const std::uint64_t want = 2 * (x / cap_) + 2;
      if (ring_.seq_acquire(sl) != want) return false;
      touched.add(sl, want);
      return true;
    };
    const std::uint64_t st = start(slot);
    if (st == kNoEpisode || st > t) return Checked ? finish_invalid(touched) : kInvalid;
    const std::uint8_t f_t = flags(slot);
    const bool term_t = f_t & kTerminated, trunc_t = f_t & kTruncated;
    // Rule 2: the next observation exists.
    if (!(term_t || trunc_t) && spec_.dedup && t + k_lanes >= v.committed) return Checked ? finish_invalid(touched) : kInvalid;
    // Rule 3: every frame of the stack is stored.
    const std::size_t S = spec_.stack;
    if (S > 1) {
      const std::uint64_t back = (S - 1) * k_lanes;
      const std::uint64_t first = std::max<std::uint64_t>(st, t >= back ? t - back : 0);
      if (first < v.lo) return Checked ? finish_invalid(touched) : kInvalid;
    }
    // The n-step window.
    std::size_t m = 1;
    std::uint64_t e = t;
    std::size_t se = slot;  // slot of e, advanced without a division per step
    bool term_e = term_t, trunc_e = trunc_t;
    double ret = reward(slot);
    while (m < v.n && !(term_e || trunc_e)) {
      const std::uint64_t nx = e + k_lanes;
      if (nx >= v.committed) break;
      if (!touch(nx)) return kTorn;
      std::size_t ns = se + k_lanes;
      if (ns >= cap_) ns -= cap_;
      const std::uint8_t fn = flags(ns);
      const bool tn = fn & kTerminated, rn = fn & kTruncated;
      if (spec_.dedup && !(tn || rn) && nx + k_lanes >= v.committed) break;
      ret += v.gpow[m] * reward(ns);
      ++m;
      e = nx;
      se = ns;
      term_e = tn;
      trunc_e = rn;
    }
    const bool end_e = term_e || trunc_e;
    std::uint64_t after = 0;  // ticket of the lane's step after e (dedup, not an end)
    if (spec_.dedup && !end_e) {
      after = e + k_lanes;
      if (!touch(after)) return kTorn;
    }
    if (out) {
      for (std::size_t f = 0; f < spec_.outs.size(); ++f) {
        const EpisodeSpec::Out& o = spec_.outs[f];
        switch (o.kind) {
          case EpisodeSpec::Plain: {
            if (!Checked) break;  // the caller gathers Plain fields in bulk
            const Column& c = cols_[o.src];
            load_shared(out[f] + i * c.row_bytes(), c.row(slot), c.row_bytes());
            break;
          }
          case EpisodeSpec::Obs: {
            const Column& c = cols_[spec_.obs_col[o.src]];
            const std::size_t rb = c.row_bytes();
            std::uint8_t* dst = out[f] + i * rb * S;
            for (std::size_t q = 0; q < S; ++q) {
              const std::uint64_t back = (S - 1 - q) * k_lanes;
              if (!frame(c, t, back, st, dst + q * rb, touch)) return kTorn;
            }
            break;
          }
          case EpisodeSpec::NextObs: {
            const std::size_t j = o.src;
            const Column& c = cols_[spec_.obs_col[j]];
            const std::size_t rb = c.row_bytes();
            std::uint8_t* dst = out[f] + i * rb * S;
            // Frame q of the next stack is frame q + m of the step's own stack (same episode, same padding): when
            // that one is already in the batch, copy it from there (cache-hot) instead of from storage again.
            const std::size_t of = obs_out_[j];
            const std::uint8_t* own = of < f ? out[of] + i * rb * S : nullptr;
            for (std::size_t q = 0; q + 1 < S; ++q) {
              if (own && q + m < S) {
                std::memcpy(dst + q * rb, own + (q + m) * rb, rb);
                continue;
              }
              const std::uint64_t back = (S - 2 - q) * k_lanes;
              if (!frame(c, e, back, st, dst + q * rb, touch)) return kTorn;
            }
            std::uint8_t* last = dst + (S - 1) * rb;
            if (!spec_.dedup)
              load_shared(last, cols_[spec_.next_col[j]].row(se), rb);
            else if (end_e)
              load_shared(last, finals_[j].get() + se * rb, rb);
            else
              load_shared(last, c.row(slot_of(after)), rb);
            break;
          }
          case EpisodeSpec::Reward:
            if (spec_.reward_f64) {
              std::memcpy(out[f] + i * 8, &ret, 8);
            } else {
              const float r = static_cast<float>(ret);
              std::memcpy(out[f] + i * 4, &r, 4);
            }
            break;
          case EpisodeSpec::Done:
            out[f][i] = term_e;
            break;
          case EpisodeSpec::Truncated:
            out[f][i] = trunc_e;
            break;
          case EpisodeSpec::Discount: {
            const float d = term_e ? 0.0f : static_cast<float>(v.gpow[m]);
            std::memcpy(out[f] + i * 4, &d, 4);
            break;
          }
        }
      }
    }
    if (Checked && !touched_ok(touched)) return kTorn;
    if (gen) *gen = t / cap_ + 1;
    return kOk;
  }

 private:
  struct Lane {
    enum State : std::uint8_t { kNew, kIn, kEnded };
    State state = kNew;
    std::uint64_t start = 0;
  };
  // Slots read by one checked row and the sequence numbers they had: re-read after the copies.
  struct Touched {
    struct Entry {
      std::size_t slot;
      std::uint64_t seq;
    };
    std::size_t n = 0;
    Entry small[16];
    std::vector<Entry> more;
    void add(std::size_t slot, std::uint64_t seq) {
      if (n < 16)
        small[n] = {slot, seq};
      else
        more.push_back({slot, seq});
      ++n;
    }
  };
  bool touched_ok(const Touched& t) const {
    if (t.n == 0) return true;
    fence(std::memory_order_acquire);
    for (std::size_t k = 0; k < t.n; ++k) {
      const Touched::Entry& e = k < 16 ? t.small[k] : t.more[k - 16];
      if (ring_.seq_relaxed(e.slot) != e.seq) return false;
    }
    return true;
  }
  // In checked mode a row judged not sampleable may have been judged on torn values: invalid only if it held.
  Result finish_invalid(const Touched& t) const { return touched_ok(t) ? kInvalid : kTorn; }

  std::size_t slot_of(std::uint64_t t) const { return static_cast<std::size_t>(t % cap_); }
  // Every line of a column (at base, `stride` bytes per row) from row `first` to row `last` (both ends only, if
  // the window wraps).
  __attribute__((always_inline)) void prefetch_span(const std::uint8_t* base, std::size_t stride, std::size_t first,
                                                    std::size_t last) const {
    const std::uint8_t* a = base + first * stride;
    const std::uint8_t* b = base + last * stride;
    if (b < a) {
      __builtin_prefetch(a);
      __builtin_prefetch(b);
      return;
    }
    for (const std::uint8_t* p = a; p < b + 64; p += 64) __builtin_prefetch(p);
  }
  // A slot's end flags (kTerminated | kTruncated): one byte column, so the n-step window reads one line per
  // few steps instead of one per flag column.
  std::uint8_t flags(std::size_t slot) const { return __atomic_load_n(flags_.get() + slot, __ATOMIC_RELAXED); }
  static constexpr std::uint8_t kTerminated = 1, kTruncated = 2;
  double reward(std::size_t slot) const {
    const std::uint8_t* p = cols_[spec_.reward_col].row(slot);
    if (spec_.reward_f64) {
      double r;
      load_shared(&r, p, 8);
      return r;
    }
    float r;
    load_shared(&r, p, 4);
    return r;
  }
  // The frame `back` tickets before ticket t of column c, padded before the episode start st.
  template <class Touch>
  bool frame(const Column& c, std::uint64_t t, std::uint64_t back, std::uint64_t st, std::uint8_t* dst,
             Touch& touch) const {
    const std::size_t rb = c.row_bytes();
    std::uint64_t x;
    if (t >= back && t - back >= st) {
      x = t - back;
    } else if (spec_.zero_pad) {
      std::memset(dst, 0, rb);
      return true;
    } else {
      x = st;
    }
    if (x != t && !touch(x)) return false;
    load_shared(dst, c.row(slot_of(x)), rb);
    return true;
  }

  EpisodeSpec spec_;
  const Ring& ring_;
  const std::vector<Column>& cols_;
  const std::size_t cap_;
  std::shared_ptr<std::uint8_t> start_mem_;
  std::uint64_t* start_ = nullptr;
  std::shared_ptr<std::uint8_t> flags_;  // per slot: kTerminated | kTruncated
  std::vector<std::shared_ptr<std::uint8_t>> finals_;
  std::vector<Lane> lanes_;
  std::vector<std::size_t> obs_out_;  // per observation key: its Obs batch field (outs.size() if none)
  bool large_ = false;                 // some observation key has frames of more than 256 bytes
  std::atomic<std::size_t> n_step_{1};
  std::atomic<double> gamma_{0.99};
  mutable ForkSafeMutex add_mu_;
};

}  // namespace fastreplay
