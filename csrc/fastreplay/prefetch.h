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
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <string>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fastreplay/common.h"

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
    workers_.reserve(threads);
    for (std::size_t t = 0; t < threads; ++t) workers_.emplace_back([this] { run(); });
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
    std::unique_lock<std::mutex> lock(mu_);
    if (queue_.empty()) return false;
    item = pop(lock);
    return true;
  }

  // The next item, waiting for a worker if needed. Throws a worker's exception, or PrefetcherClosed.
  Item next() {
    std::unique_lock<std::mutex> lock(mu_);
    if (queue_.empty() && idle_workers_ > 0) space_.notify_all();
    ready_.wait(lock, [this] { return !queue_.empty() || error_ || stop_; });
    if (!queue_.empty()) return pop(lock);
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      stop_ = true;
      space_.notify_all();
      std::rethrow_exception(e);
    }
    throw PrefetcherClosed();
  }

  // Stop and join the workers; queued items are discarded. Idempotent.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    space_.notify_all();
    ready_.notify_all();
    for (auto& w : workers_)
      if (w.joinable()) w.join();
    workers_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    for (Item& item : queue_) discard_(item);
    queue_.clear();
  }

  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_ && queue_.empty();
  }
  std::size_t ready_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

 private:
  // Waking a sleeping thread costs a system call and, on a VM, an inter-processor interrupt: about 10 us
  // measured here, several times the cost of sampling a small batch. So the consumer does not wake a worker
  // for every item it takes: idle workers poll for free space every kPoll, and the consumer wakes them only
  // when it drains the queue. A worker that produces faster than the consumer takes sleeps between polls.
  static constexpr std::chrono::microseconds kPoll{50};

  Item pop(std::unique_lock<std::mutex>& lock) {
    Item item = queue_.front();
    queue_.pop_front();
    const bool wake = queue_.empty() && idle_workers_ > 0;
    lock.unlock();
    if (wake) space_.notify_all();
    return item;
  }

  void run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        // A slot is reserved before producing, so that `depth` bounds finished plus in-production items.
        ++idle_workers_;
        while (!(stop_ || queue_.size() + in_production_ < depth_)) space_.wait_for(lock, kPoll);
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
      std::lock_guard<std::mutex> lock(mu_);
      --in_production_;
      if (err) {
        if (!error_) error_ = err;
        stop_ = true;  // other workers stop; the consumer drains what is queued, then sees the error
        space_.notify_all();
      } else if (stop_) {
        discard_(item);
      } else {
        queue_.push_back(item);
      }
      ready_.notify_one();
      if (err) return;
    }
  }

  Produce produce_;
  Discard discard_;
  const std::size_t depth_;
  mutable std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  std::size_t in_production_ = 0;
  std::size_t idle_workers_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

}  // namespace fastreplay
