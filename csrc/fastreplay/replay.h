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
#include <memory>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/copy.h"
#include "fastreplay/gather.h"
#include "fastreplay/ring.h"
#include "fastreplay/rng.h"
#include "fastreplay/storage.h"

namespace fastreplay {

class ReplayCore {
 public:
  // `memory` (optional): one block per field of capacity rows, then one of capacity sequence numbers (8 bytes
  // each), e.g. memory-mapped files; by default all memory is allocated here.
  ReplayCore(std::size_t capacity, const std::vector<FieldSpec>& fields, std::uint64_t seed,
             const std::vector<std::shared_ptr<std::uint8_t>>& memory = {})
      : ring_(check_capacity(capacity), memory.empty() ? nullptr : memory.back()), seed_(seed) {
    if (fields.empty()) throw_invalid("a buffer needs at least one field");
    if (!memory.empty() && memory.size() != fields.size() + 1) throw_invalid("one memory block per field, then seq");
    columns_.reserve(fields.size());
    for (std::size_t f = 0; f < fields.size(); ++f) {
      if (memory.empty())
        columns_.emplace_back(fields[f], capacity);
      else
        columns_.emplace_back(fields[f], memory[f]);
    }
    for (const auto& c : columns_) refs_.push_back({c.data(), c.row_bytes()});
  }
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
        store_shared(columns_[f].row(r.slot), s, r.head * rb);
        if (r.tail) store_shared(columns_[f].row(0), s + r.head * rb, r.tail * rb);
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
    for (std::size_t i = 0; i < n; ++i) idx[i] = static_cast<std::int64_t>(rng.bounded(size));
    gather_consistent(idx, n, gens, out, [&](std::size_t) {
      return static_cast<std::int64_t>(rng.bounded(std::max<std::size_t>(ring_.reserved_size(), 1)));
    });
  }

  // Gather the rows at the given slots. Every index must be in [0, size()). O(n * row bytes)
  void get(const std::int64_t* idx, std::size_t n, std::uint64_t* gens, std::uint8_t* const* out) {
    check_indices("get", idx, n);
    std::vector<std::int64_t> own(idx, idx + n);
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
  void restore_ring(const Ring::State& st, const std::uint64_t* seq) { ring_.restore(st, seq); }
  std::uint64_t* raw_seq() { return ring_.raw_seq(); }
  // Reopen persisted storage (see Ring::reopen); rows torn by a crash, and rows reserved below the recovered cursor
  // but never written, are replaced by a copy of the newest whole row, so every stored row is still one real
  // transition. Returns how many were repaired. O(capacity)
  std::size_t reopen(std::uint64_t base) {
    std::vector<std::size_t> torn;
    ring_.reopen(base, torn);
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
  virtual void clear() { ring_.clear(); }

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
      gather_batch(refs_.data(), refs_.size(), idx, n, out);
      if (gens)
        for (std::size_t i = 0; i < n; ++i) gens[i] = ring_.generation(static_cast<std::size_t>(idx[i]));
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

  Ring ring_;
  std::vector<Column> columns_;
  std::vector<ColumnRef> refs_;

 private:
  static std::size_t check_capacity(std::size_t capacity) {
    if (capacity == 0) throw_invalid("capacity must be positive, got 0");
    return capacity;
  }
  const std::uint64_t seed_;
  alignas(kCacheLine) std::atomic<std::uint64_t> calls_{0};
};

}  // namespace fastreplay
