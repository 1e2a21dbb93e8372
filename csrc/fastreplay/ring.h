// The ring's slot bookkeeping: lock-free reservation by an atomic cursor and per-slot seqlock publication.
//
// Every transition ever added has a ticket t (0, 1, 2, ...); it lives in slot t % capacity during lap t / capacity.
// seq[slot] is even when the slot is stable and odd while a writer copies into it; a stable slot holding the
// transition of lap L has seq == 2L + 2, so seq / 2 is the slot's generation (0 = never written).
//
//   writer:  t = cursor.fetch_add(n)            reserve tickets (several writers never share a ticket)
//            CAS seq[slot]: even < 2L+1 -> 2L+1  claim; a slot already holding a newer lap is skipped
//            copy the row, seq[slot] = 2L+2     publish (release)
//   reader:  s1 = seq[slot] (acquire), copy, fence(acquire), s2 = seq[slot]; the row is whole iff s1 == s2, s1 even.
//
// Readers also get a cheaper global check: `begun` and `done` count writes (whole add calls) started and
// finished. If done == begun before a gather and begun is unchanged after it, no writer touched storage during the
// gather and no per-slot check is needed; otherwise the reader falls back to the per-slot protocol.
//
// clear() starts a new epoch: the cursor jumps to the next multiple of capacity, so tickets, laps and generations
// keep growing and an index sampled before clear() is recognisably stale after it. clear() must not run
// concurrently with add or sample.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/memory.h"

namespace fastreplay {

class Ring {
 public:
  // Sequence numbers start at 0 (never written); zeroed memory is a valid array of atomics at 0 on every
  // platform we build for (lock-free 64-bit atomics have the layout of the plain integer), and so are the counters.
  // `memory`, if given, holds the capacity sequence numbers (e.g. a mapped file); otherwise they and the counters
  // come from `blocks` (shared memory: the counters first, then the sequence numbers) or are allocated here.
  explicit Ring(std::size_t capacity, std::shared_ptr<std::uint8_t> memory = nullptr, Blocks* blocks = nullptr)
      : capacity_(capacity),
        counters_mem_(take_zeroed(blocks, sizeof(Counters) + kCacheLine)),
        c_(reinterpret_cast<Counters*>((reinterpret_cast<std::uintptr_t>(counters_mem_.get()) + kCacheLine - 1) /
                                       kCacheLine * kCacheLine)),
        memory_(memory ? std::move(memory)
                       : take_zeroed(blocks, checked_mul(capacity, sizeof(std::atomic<std::uint64_t>)))),
        seq_(reinterpret_cast<std::atomic<std::uint64_t>*>(memory_.get())) {
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "64-bit atomics must be lock-free");
    static_assert(sizeof(std::atomic<std::uint64_t>) == 8, "sequence numbers are stored as 8 bytes");
  }

  // Reopen persisted sequence numbers (memory-mapped storage) in epoch `base`: the cursor follows from the
  // newest ticket found. Slots caught mid-write by a crash (odd seq) are reported through `torn`, and so are the
  // slots of tickets below that cursor that were reserved but never written (several writers: a later ticket was
  // published before an earlier one was claimed). Both are published at their ticket's lap; the caller must repair
  // their rows. The numbers come from a file, so impossible ones throw std::invalid_argument. `align` (a divisor of
  // capacity): the cursor is rounded up to base + a multiple of it, so that an add of `align` rows cut short by a
  // crash still ends on a whole add; the tickets added that way are holes like any other.
  // Not safe concurrently with anything. O(capacity)
  void reopen(std::uint64_t base, std::vector<std::size_t>& torn, std::uint64_t align = 1) {
    if (base % capacity_ != 0) throw_invalid("reopen: base must be a multiple of capacity");
    if (base > kMaxTicket) throw_invalid("reopen: base " + std::to_string(base) + " is beyond any reachable ticket");
    const std::uint64_t max_seq = 2 * (kMaxTicket / capacity_ + 1);
    std::uint64_t cursor = base;
    for (std::size_t i = 0; i < capacity_; ++i) {
      std::uint64_t s = seq_[i].load(std::memory_order_relaxed);
      if (s > max_seq)
        throw_invalid("reopen: slot " + std::to_string(i) + " holds an impossible sequence number " + std::to_string(s));
      if (s & 1) {
        torn.push_back(i);
        seq_[i].store(++s, std::memory_order_relaxed);
      }
      if (s >= 2) cursor = std::max<std::uint64_t>(cursor, (s / 2 - 1) * capacity_ + i + 1);
    }
    if (align > 1 && capacity_ % align == 0) cursor = base + (cursor - base + align - 1) / align * align;
    // Every ticket in the last lap below the cursor must have been published in its slot; one that was not is a
    // hole (its slot holds an older lap, or nothing): the same as a torn row.
    const std::uint64_t lo = std::max<std::uint64_t>(base, cursor >= capacity_ ? cursor - capacity_ : 0);
    bool holes = false;
    for (std::uint64_t t = lo; t < cursor; ++t) {
      const auto slot = static_cast<std::size_t>(t % capacity_);
      const std::uint64_t want = 2 * (t / capacity_) + 2;
      if (seq_[slot].load(std::memory_order_relaxed) < want) {
        torn.push_back(slot);
        seq_[slot].store(want, std::memory_order_relaxed);
        holes = true;
      }
    }
    if (holes) {  // a torn slot of an older lap is also a hole: report it once
      std::sort(torn.begin(), torn.end());
      torn.erase(std::unique(torn.begin(), torn.end()), torn.end());
    }
    load_counters(base, cursor);
  }

  std::size_t capacity() const { return capacity_; }

  // Number of published transitions of the current epoch (<= capacity). O(1)
  std::size_t size() const {
    const std::uint64_t c = c_->committed.load(std::memory_order_acquire);
    const std::uint64_t b = c_->base.load(std::memory_order_relaxed);
    return static_cast<std::size_t>(std::min<std::uint64_t>(c - b, capacity_));
  }
  // Tickets reserved in this epoch, clamped to capacity: the slots a sampler may draw (some possibly in flight).
  std::size_t reserved_size() const {
    const std::uint64_t c = c_->cursor.load(std::memory_order_acquire);
    const std::uint64_t b = c_->base.load(std::memory_order_relaxed);
    return static_cast<std::size_t>(std::min<std::uint64_t>(c - b, capacity_));
  }
  // The slots of m consecutive tickets first, first + 1, ... (m <= capacity): `head` slots from `slot`, then, after
  // the wrap, `tail` slots from slot 0.
  struct Runs {
    std::size_t slot, head, tail;
  };
  Runs runs(std::uint64_t first, std::size_t m) const {
    const auto slot = static_cast<std::size_t>(first % capacity_);
    const std::size_t head = std::min(m, capacity_ - slot);
    return {slot, head, m - head};
  }
  // Slot the next add writes to.
  std::size_t next_index() const { return static_cast<std::size_t>(c_->cursor.load(std::memory_order_acquire) % capacity_); }
  std::uint64_t total_added() const { return c_->committed.load(std::memory_order_acquire) - c_->base.load(std::memory_order_relaxed); }

  // --- writer side -------------------------------------------------------------------------------------------
  // Start a write of n rows; returns the first ticket. Must be paired with end_write(n).
  std::uint64_t begin_write(std::size_t n) {
    c_->begun.fetch_add(1, std::memory_order_relaxed);
    fence(std::memory_order_release);
    return c_->cursor.fetch_add(n, std::memory_order_acq_rel);
  }
  // Claim the slot of ticket t for writing; false if a newer lap already owns it (the row is obsolete: skip it).
  bool claim(std::uint64_t t) {
    const std::size_t slot = static_cast<std::size_t>(t % capacity_);
    const std::uint64_t writing = 2 * (t / capacity_) + 1;
    std::uint64_t s = seq_[slot].load(std::memory_order_acquire);
    for (unsigned spins = 0;; ++spins) {
      if (s & 1) {
        // A writer of a newer lap is copying into this slot: our row is obsolete. Waiting for it instead would
        // deadlock once the rows in flight exceed the capacity (it may be waiting for a slot we hold).
        if (s > writing) return false;
        // A writer of an older lap is still copying: wait. Waits only ever go to older laps, so they cannot
        // form a cycle.
        if (spins > 64) std::this_thread::yield();
        s = seq_[slot].load(std::memory_order_acquire);
        continue;
      }
      if (s > writing) return false;
      if (seq_[slot].compare_exchange_weak(s, writing, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    fence(std::memory_order_release);
    return true;
  }
  void publish(std::uint64_t t) {
    seq_[t % capacity_].store(2 * (t / capacity_) + 2, std::memory_order_release);
  }
  void end_write(std::size_t n) {
    c_->committed.fetch_add(n, std::memory_order_acq_rel);
    c_->done.fetch_add(1, std::memory_order_release);
  }

  // In-place rewrite of part of a published row (update_field): make slot `slot`, holding `seq` (even), odd while
  // the caller writes, so that a writer of a newer lap waits and a reader that sees it retries; false (nothing
  // held) if the slot no longer holds `seq`. release() restores `seq`: the row keeps its ticket and generation.
  bool hold(std::size_t slot, std::uint64_t seq) {
    std::uint64_t s = seq;
    if ((seq & 1) || !seq_[slot].compare_exchange_strong(s, seq + 1, std::memory_order_acq_rel)) return false;
    fence(std::memory_order_release);
    return true;
  }
  void release(std::size_t slot, std::uint64_t seq) { seq_[slot].store(seq, std::memory_order_release); }

  // --- reader side -------------------------------------------------------------------------------------------
  // Token for the global check: `quiet` is true only if no write was in progress when it was taken.
  struct Quiet {
    std::uint64_t begun;
    bool quiet;
  };
  Quiet quiet_begin() const {
    const std::uint64_t d = c_->done.load(std::memory_order_acquire);
    const std::uint64_t b = c_->begun.load(std::memory_order_acquire);
    return {b, b == d};
  }
  // True if no write started since quiet_begin (call after the copies).
  bool quiet_end(const Quiet& q) const {
    fence(std::memory_order_acquire);
    return q.quiet && c_->begun.load(std::memory_order_relaxed) == q.begun;
  }

  // Tickets published by finished writes, and the first ticket of the epoch.
  std::uint64_t committed() const { return c_->committed.load(std::memory_order_acquire); }
  std::uint64_t base() const { return c_->base.load(std::memory_order_relaxed); }
  std::uint64_t seq_relaxed(std::size_t slot) const { return seq_[slot].load(std::memory_order_relaxed); }
  std::uint64_t seq_acquire(std::size_t slot) const { return seq_[slot].load(std::memory_order_acquire); }
  std::uint64_t seq_recheck(std::size_t slot) const {
    fence(std::memory_order_acquire);
    return seq_[slot].load(std::memory_order_relaxed);
  }
  // A seq value denotes a whole transition of the current epoch.
  bool readable(std::uint64_t s) const {
    return !(s & 1) && s >= 2 * (c_->base.load(std::memory_order_relaxed) / capacity_) + 2;
  }
  // Generation of a slot (seq / 2); 0 if never written.
  std::uint64_t generation(std::size_t slot) const { return seq_[slot].load(std::memory_order_acquire) / 2; }

  // Bookkeeping for checkpoints. Neither call is safe concurrently with add or sample.
  struct State {
    std::uint64_t cursor, base;
  };
  State state() const { return {c_->cursor.load(), c_->base.load()}; }
  std::uint64_t seq(std::size_t slot) const { return seq_[slot].load(std::memory_order_relaxed); }
  // Restore a saved state; seq holds capacity sequence numbers, or is null when they were already read into this
  // ring's own memory (raw_seq). Throws if they are not a state this ring could have reached (a checksummed file
  // edited by hand): cursor and seq only ever serve as counters, never offsets. In epoch `base`, slot i < size
  // holds a lap of this epoch no newer than that of the last ticket below the cursor in that slot,
  // 2 * ((cursor - 1 - i) / capacity + 1); a slot i >= size holds a lap of an earlier epoch (0 in the first).
  void restore(const State& st, const std::uint64_t* seq) {
    if (st.base % capacity_ != 0 || st.cursor < st.base || st.cursor > kMaxTicket)
      throw_invalid("restore: inconsistent cursor " + std::to_string(st.cursor) + " and base " + std::to_string(st.base));
    const std::uint64_t size = std::min<std::uint64_t>(st.cursor - st.base, capacity_);
    const std::uint64_t min_seq = 2 * (st.base / capacity_) + 2;
    for (std::size_t i = 0; i < capacity_; ++i) {
      const std::uint64_t v = seq ? seq[i] : seq_[i].load(std::memory_order_relaxed);
      const std::string slot = "restore: slot " + std::to_string(i);
      if (v & 1) throw_invalid(slot + " was saved in the middle of a write");
      if (i < size) {
        if (v < min_seq) throw_invalid(slot + " is stored but unwritten");
        if (v > 2 * ((st.cursor - 1 - i) / capacity_ + 1))
          throw_invalid(slot + " has generation " + std::to_string(v / 2) + ", beyond the cursor " +
                        std::to_string(st.cursor));
      } else if (v >= min_seq) {
        throw_invalid(slot + " is not stored (size " + std::to_string(size) + ") but has generation " +
                      std::to_string(v / 2) + " of the current epoch");
      }
    }
    if (seq)
      for (std::size_t i = 0; i < capacity_; ++i) seq_[i].store(seq[i], std::memory_order_relaxed);
    load_counters(st.base, st.cursor);
  }
  // The sequence numbers as plain integers (same layout), for reading a checkpoint straight into them before
  // restore(state, nullptr) checks them. Nothing else may use it.
  std::uint64_t* raw_seq() { return reinterpret_cast<std::uint64_t*>(seq_); }
  // The sequence numbers as a column of 8-byte rows, for a gather that reads them with the rows (replay.h).
  const std::uint8_t* seq_column() const { return reinterpret_cast<const std::uint8_t*>(seq_); }

  // Start a new, empty epoch. Not safe concurrently with add or sample.
  void clear() {
    const std::uint64_t c = c_->cursor.load(std::memory_order_acquire);
    const std::uint64_t nb = (c + capacity_ - 1) / capacity_ * capacity_;
    load_counters(nb, nb);
  }

 private:
  // The one path that sets the counters from outside the writer protocol (reopen, restore, clear), with nothing
  // else running: epoch `base`, every ticket below `cursor` reserved and published, and no write in progress.
  void load_counters(std::uint64_t base, std::uint64_t cursor) {
    c_->base.store(base);
    c_->cursor.store(cursor);
    c_->committed.store(cursor);
    c_->begun.store(c_->done.load());
  }

  // Tickets and sequence numbers stay below this (2^62; a billion adds a second would take 146 years to reach
  // it), so no arithmetic on a value read from a file can overflow.
  static constexpr std::uint64_t kMaxTicket = std::uint64_t(1) << 62;

  // The counters, each on its own cache line. Writers move the first four; load_counters sets them all at once.
  struct Counters {
    alignas(kCacheLine) std::atomic<std::uint64_t> cursor;     // next ticket to reserve
    alignas(kCacheLine) std::atomic<std::uint64_t> committed;  // tickets published by finished writes
    alignas(kCacheLine) std::atomic<std::uint64_t> begun;      // add calls started (the global check)
    alignas(kCacheLine) std::atomic<std::uint64_t> done;       // add calls finished; begun == done: none running
    alignas(kCacheLine) std::atomic<std::uint64_t> base;       // first ticket of the current epoch
  };

  const std::size_t capacity_;
  std::shared_ptr<std::uint8_t> counters_mem_;  // owns c_ (zeroed: every counter 0; slack for the alignment)
  Counters* c_;
  std::shared_ptr<std::uint8_t> memory_;
  std::atomic<std::uint64_t>* seq_;
};

}  // namespace fastreplay
