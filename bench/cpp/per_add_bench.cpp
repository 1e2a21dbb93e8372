// Where a prioritized batched add spends its time: ReplayCore::add of 10^6 CartPole rows in chunks of 10,000, into a
// fresh buffer (first touch of its memory) and again into the full one (a second lap, memory already mapped),
// uniform and prioritized, with the prioritized part (on_published: the raw priorities, the new leaves at the
// maximum priority and their repair) timed on its own.
//
//   g++ -O2 -std=c++17 -DNDEBUG -I csrc bench/cpp/per_add_bench.cpp -o /tmp/per_add_bench -lpthread
//   /tmp/per_add_bench
//
// Each line is one repetition (a new pair of buffers); the first repetitions of a process get memory that the
// kernel (and, in a VM, the host) has not handed out before, whose first touch costs the most.
#include <chrono>
#include <cstdio>
#include <vector>

#include "fastreplay/prioritized.h"

using namespace fastreplay;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The prioritized core with its add hook timed.
struct TimedCore : PrioritizedCore {
  using PrioritizedCore::PrioritizedCore;
  double hook_s = 0;
  void on_published(std::uint64_t first, std::size_t m, const std::vector<std::uint8_t>& obsolete) override {
    const double t = now();
    PrioritizedCore::on_published(first, m, obsolete);
    hook_s += now() - t;
  }
};

}  // namespace

int main() {
  const std::size_t cap = 1000000, chunk = 10000;
  const std::vector<FieldSpec> fields = {{"obs", 16}, {"action", 8}, {"reward", 4}, {"next_obs", 16}, {"done", 1}};
  std::vector<std::uint8_t> data(chunk * 16, 1);
  const void* src[5] = {data.data(), data.data(), data.data(), data.data(), data.data()};
  std::printf("%-4s %28s %28s %22s\n", "rep", "fresh: PER (hook) / uniform", "lap: PER (hook) / uniform",
              "fresh PER/uni, lap PER/uni");
  for (int rep = 0; rep < 5; ++rep) {
    double t[2][2] = {}, hook[2] = {};
    for (int per = 1; per >= 0; --per) {  // alternate which one gets the fresher memory
      std::unique_ptr<ReplayCore> c;
      TimedCore* tc = nullptr;
      if (per)
        c.reset(tc = new TimedCore(cap, fields, 1, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime));
      else
        c.reset(new ReplayCore(cap, fields, 1));
      for (int lap = 0; lap < 2; ++lap) {
        if (tc) tc->hook_s = 0;
        const double t0 = now();
        for (std::size_t i = 0; i < cap / chunk; ++i) c->add(src, chunk);
        t[per][lap] = now() - t0;
        if (tc) hook[lap] = tc->hook_s;
      }
    }
    std::printf("%-4d %10.1f (%5.1f) / %6.1f ms %10.1f (%5.1f) / %6.1f ms %11.2f, %.2f\n", rep, 1e3 * t[1][0],
                1e3 * hook[0], 1e3 * t[0][0], 1e3 * t[1][1], 1e3 * hook[1], 1e3 * t[0][1], t[0][0] / t[1][0],
                t[0][1] / t[1][1]);
  }
}
