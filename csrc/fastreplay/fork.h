// Fork safety of the core: mutexes that a fork()ed child finds unlocked, and a test for "am I in a forked child".
//
// fork() copies only the calling thread. A mutex another thread held at that moment stays locked in the child
// forever, and a std::thread, condition variable or queue shared with a worker thread refers to a thread that does
// not exist there. Two tools (POSIX; without pthread_atfork they degrade to a plain mutex and "never forked"):
// - ForkSafeMutex: a std::mutex that fork() acquires before it copies the process (a pthread_atfork prepare
//   handler takes every live one, in creation order) and releases in both processes afterwards. The child thus
//   finds it unlocked and the data it guards consistent. Use it only for mutexes held briefly, never while
//   waiting for another thread or while holding another ForkSafeMutex: fork() waits for each holder.
// - ForkWatch: remembers the fork generation of its process when built; forked() is true in any child forked
//   since. Objects that own threads check it and, in a child, refuse to work, and skip the joins and destructors
//   that would wait for the parent's threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FASTREPLAY_ATFORK 1
#else
#define FASTREPLAY_ATFORK 0
#endif

namespace fastreplay {

class ForkSafeMutex;

namespace fork_detail {

// Incremented in every forked child (atfork child handler). Relaxed: only this process's own fork changes it.
inline std::atomic<std::uint64_t>& generation() {
  static std::atomic<std::uint64_t> g{0};
  return g;
}

// The live ForkSafeMutexes, in creation order, and the mutex that guards the list (itself taken first by fork()).
struct Registry {
  std::mutex mu;
  std::vector<ForkSafeMutex*> live;
};
inline Registry& registry();

}  // namespace fork_detail

class ForkSafeMutex {
 public:
  ForkSafeMutex();
  ~ForkSafeMutex();
  ForkSafeMutex(const ForkSafeMutex&) = delete;
  ForkSafeMutex& operator=(const ForkSafeMutex&) = delete;
  void lock() { mu_.lock(); }
  void unlock() { mu_.unlock(); }
  bool try_lock() { return mu_.try_lock(); }

 private:
  std::mutex mu_;
};

namespace fork_detail {

inline void prepare() {
  Registry& r = registry();
  r.mu.lock();
  for (ForkSafeMutex* m : r.live) m->lock();
}
inline void release_all() {  // parent and child: the forking thread holds every lock, and releases them
  Registry& r = registry();
  for (auto it = r.live.rbegin(); it != r.live.rend(); ++it) (*it)->unlock();
  r.mu.unlock();
}
inline void child() {
  generation().fetch_add(1, std::memory_order_relaxed);
  release_all();
}

// The registry, with the atfork handlers installed the first time anything registers (once per process; a
// forked child inherits them).
inline Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: fork() may run during static destruction
#if FASTREPLAY_ATFORK
    pthread_atfork(&prepare, &release_all, &child);
#endif
    return reg;
  }();
  return *r;
}

}  // namespace fork_detail

inline ForkSafeMutex::ForkSafeMutex() {
  fork_detail::Registry& r = fork_detail::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.live.push_back(this);
}
inline ForkSafeMutex::~ForkSafeMutex() {
  fork_detail::Registry& r = fork_detail::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.live.erase(std::find(r.live.begin(), r.live.end(), this));
}

// True in a child forked after this object was built. O(1), one relaxed load.
class ForkWatch {
 public:
  ForkWatch() : generation_((fork_detail::registry(), fork_detail::generation().load(std::memory_order_relaxed))) {}
  bool forked() const { return fork_detail::generation().load(std::memory_order_relaxed) != generation_; }

 private:
  std::uint64_t generation_;
};

}  // namespace fastreplay
