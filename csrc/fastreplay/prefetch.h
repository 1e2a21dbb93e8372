// Background sampling: C++ threads that produce batches ahead of the consumer into a bounded queue.
//
// Contract:
// - `produce` is called concurrently by `threads` workers (it must be thread-safe, as ReplayCore::sample is) and
//   returns one finished item; at most `depth` finished items wait in the queue, so with the items being handed
//   out one worker may be one item ahead of that. With one worker, items come out in the order they were
//   produced, so a seeded buffer yields the same batches as the same number of sample() calls.
// - next() blocks until an item is ready. If a worker's produce threw, next() rethrows that exception (once
//   the items produced before it are consumed) and the prefetcher stops.
// - close() (also run by the destructor) stops and joins every worker and discards queued items; it is
//   idempotent. Workers never call back into the consumer's runtime (no Python), so joining cannot deadlock.
// - If a worker thread cannot be started, the constructor stops and joins the ones already running, then throws
//   std::runtime_error naming the thread.
// - fork(): the workers exist only in the parent. In a child, next() and try_next() throw std::runtime_error,
//   closed() is true, and close() and the destructor abandon (leak) the threads, the queue and the condition
//   variables instead of joining or destroying what the parent's threads may have been using.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <string>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "fastreplay/common.h"
#include "fastreplay/fork.h"

namespace fastreplay {

// Raised by next() after close().
class PrefetcherClosed : public std::runtime_error {
 public:
  PrefetcherClosed() : std::runtime_error("the prefetcher is closed") {}
};

template <class Item>
class Prefetcher {
 public:
  using Produce = std::function<Item()>;
  using Discard = std::function<void(Item)>;

  Prefetcher(Produce produce, Discard discard, std::size_t depth, std::size_t threads)
      : produce_(std::move(produce)), discard_(std::move(discard)), depth_(depth) {
    check_sizes(static_cast<std::int64_t>(depth), static_cast<std::int64_t>(threads));
    s_->workers.reserve(threads);
    for (std::size_t t = 0; t < threads; ++t) {
      try {
        s_->workers.emplace_back([this] { run(); });
      } catch (const std::system_error& e) {
        close();  // a partly built object gets no destructor: the running workers must be joined here
        throw std::runtime_error("prefetch: could not start worker thread " + std::to_string(t + 1) + " of " +
                                 std::to_string(threads) + ": " + e.what());
      }
    }
  }
  ~Prefetcher() { close(); }

  static constexpr std::int64_t kMaxThreads = 64;
  // Throws ValueError unless depth >= 1 and threads is in [1, kMaxThreads]. O(1)
  static void check_sizes(std::int64_t depth, std::int64_t threads) {
    if (depth <= 0) throw_invalid("prefetch: depth must be positive, got " + std::to_string(depth));
    if (threads <= 0 || threads > kMaxThreads)
      throw_invalid("prefetch: threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                    std::to_string(threads));
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // A ready item without waiting, if there is one (the consumer's fast path). O(1)
  bool try_next(Item& item) {
    check_process();
    std::unique_lock<std::mutex> lock(s_->mu);
    if (s_->queue.empty()) return false;
    item = pop(lock);
    return true;
  }

  // The next item, waiting for a worker if needed. Throws a worker's exception, or PrefetcherClosed.
  Item next() {
    check_process();
    Sync& s = *s_;
    std::unique_lock<std::mutex> lock(s.mu);
    if (s.queue.empty() && idle_workers_ > 0) s.space.notify_all();
    s.ready.wait(lock, [&] { return !s.queue.empty() || error_ || stop_; });
    if (!s.queue.empty()) return pop(lock);
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      stop_ = true;
      s.space.notify_all();
      std::rethrow_exception(e);
    }
    throw PrefetcherClosed();
  }

  // Stop and join the workers; queued items are discarded. Idempotent. In a forked child: abandon everything.
  void close() {
    if (!s_) return;
    if (fork_.forked()) {
      // The parent's workers may have held the mutex or waited on the condition variables when it forked:
      // locking, joining or destroying any of it could block forever. Leak it instead (once per fork).
      s_.release();
      return;
    }
    Sync& s = *s_;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      stop_ = true;
    }
    s.space.notify_all();
    s.ready.notify_all();
    for (auto& w : s.workers)
      if (w.joinable()) w.join();
    s.workers.clear();
    std::lock_guard<std::mutex> lock(s.mu);
    for (Item& item : s.queue) discard_(item);
    s.queue.clear();
  }

  bool closed() const {
    if (!s_ || fork_.forked()) return true;
    std::lock_guard<std::mutex> lock(s_->mu);
    return stop_ && s_->queue.empty();
  }
  std::size_t ready_count() const {
    if (!s_ || fork_.forked()) return 0;
    std::lock_guard<std::mutex> lock(s_->mu);
    return s_->queue.size();
  }

 private:
  // Waking a sleeping thread costs a system call and, on a VM, an inter-processor interrupt: about 10 us
  // measured here, several times the cost of sampling a small batch. So the consumer does not wake a worker
  // for every item it takes: idle workers poll for free space every kPoll, and the consumer wakes them only
  // when it drains the queue. A worker that produces faster than the consumer takes sleeps between polls.
  // The poll interval doubles, from kPoll up to kMaxPoll, while the queue stays full, and starts again at kPoll
  // after each item: a consumer that takes an item every few milliseconds (a trainer that learns every 10
  // environment steps) would otherwise pay for 20,000 wake-ups a second, a fifth of a core measured here, taken
  // from the consumer on a 2-core machine. A slower poll costs the consumer nothing while items are queued, and
  // it wakes the workers itself when it drains the queue. (A worker that slept until the consumer woke it
  // after each item was tried and measured worse: the kernel tends to run a thread woken by another on the
  // waker's core, where it waits behind the busy consumer, so on a loaded machine the consumer found the queue
  // empty in most calls: 21% of a 2 ms step waiting, against 5% with these polls and 3% with a fixed 50 us poll,
  // which costs 4x the CPU.)
  static constexpr std::chrono::microseconds kPoll{50};
  static constexpr std::chrono::microseconds kMaxPoll{1600};

  // What the workers share with the consumer, on the heap so that a forked child can abandon it (see close()).
  struct Sync {
    std::mutex mu;
    std::condition_variable ready, space;
    std::deque<Item> queue;
    std::vector<std::thread> workers;
  };

  void check_process() const {
    if (fork_.forked())
      throw std::runtime_error(
          "prefetch: this prefetcher was created in the parent of a fork(); its worker threads do not exist in "
          "this process. Create a new prefetcher here (buffer.prefetch(...))");
    if (!s_) throw PrefetcherClosed();
  }

  Item pop(std::unique_lock<std::mutex>& lock) {
    Item item = s_->queue.front();
    s_->queue.pop_front();
    const bool wake = s_->queue.empty() && idle_workers_ > 0;
    lock.unlock();
    if (wake) s_->space.notify_all();
    return item;
  }

  void run() {
    Sync& s = *s_;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(s.mu);
        // A slot is reserved before producing, so that `depth` bounds finished plus in-production items.
        ++idle_workers_;
        for (auto poll = kPoll; !(stop_ || s.queue.size() + in_production_ < depth_);)
          if (s.space.wait_for(lock, poll) == std::cv_status::timeout) poll = std::min(poll * 2, kMaxPoll);
        --idle_workers_;
        if (stop_) return;
        ++in_production_;
      }
      Item item{};
      std::exception_ptr err;
      try {
        item = produce_();
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(s.mu);
      --in_production_;
      if (err) {
        if (!error_) error_ = err;
        stop_ = true;  // other workers stop; the consumer drains what is queued, then sees the error
        s.space.notify_all();
      } else if (stop_) {
        discard_(item);
      } else {
        s.queue.push_back(item);
      }
      s.ready.notify_one();
      if (err) return;
    }
  }

  Produce produce_;
  Discard discard_;
  const std::size_t depth_;
  const ForkWatch fork_;
  std::unique_ptr<Sync> s_ = std::make_unique<Sync>();  // null only after a forked child abandoned it
  std::size_t in_production_ = 0;
  std::size_t idle_workers_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace fastreplay
