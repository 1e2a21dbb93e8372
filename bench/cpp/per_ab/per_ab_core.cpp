// One side of bench/cpp/per_ab/per_ab.cpp: a PrioritizedCore of CartPole rows and its training loop, built against
// one checkout's headers. Compiled twice, with -Dfastreplay=<a namespace of its own> and -DSIDE=a or b, so that two
// versions of the core live in one process; see per_ab.cpp.
#include <chrono>
#include <cstdlib>
#include <memory>
#include <vector>

#include "fastreplay/prioritized.h"

#define FR_JOIN2(a, b) a##_##b
#define FR_JOIN(a, b) FR_JOIN2(a, b)
#define FR_SIDE(name) FR_JOIN(SIDE, name)

namespace {

using namespace fastreplay;

// (name, row bytes): also builds against the headers of commits before FieldSpec had an alignment.
const std::vector<FieldSpec> kFields = {{"obs", 16}, {"action", 8}, {"reward", 4}, {"next_obs", 16}, {"done", 1}};

struct State {
  std::unique_ptr<PrioritizedCore> core;
  std::vector<std::int64_t> idx;
  std::vector<float> weights;
  std::vector<std::uint64_t> gens;
  std::vector<std::vector<std::uint8_t>> outs;
  std::vector<std::uint8_t*> out;
  std::vector<double> td;
};
State* g_state = nullptr;
constexpr std::size_t kBatch = 256;

}  // namespace

// A full buffer of `cap` rows. flat = false: every priority drawn uniformly from [0, 1), and the loop's new
// priorities too; flat = true: every leaf at the initial priority 1 and the new priorities in [1, 2) (each update
// raises a leaf that ties for its block's min).
extern "C" void FR_SIDE(setup)(std::size_t cap, bool flat) {
  State* s = g_state = new State;
  s->core.reset(new PrioritizedCore(cap, kFields, 1, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime));
  std::vector<std::uint8_t> data(cap * 16, 1);
  const void* src[5] = {data.data(), data.data(), data.data(), data.data(), data.data()};
  s->core->add(src, cap);
  Rng r(3);
  if (!flat) {
    std::vector<std::int64_t> all(cap);
    std::vector<double> pr(cap);
    for (std::size_t i = 0; i < cap; i++) all[i] = static_cast<std::int64_t>(i), pr[i] = r.uniform();
    s->core->update_priorities(all.data(), pr.data(), cap, nullptr, false);
  }
  s->idx.resize(kBatch);
  s->weights.resize(kBatch);
  s->gens.resize(kBatch);
  s->td.resize(kBatch);
  for (const FieldSpec& f : kFields) s->outs.emplace_back(kBatch * f.row_bytes);
  for (auto& v : s->outs) s->out.push_back(v.data());
  for (auto& t : s->td) t = (flat ? 1.0 : 0.0) + r.uniform();
}

// `iters` rounds of sample(256) then update_priorities of the drawn rows; returns the mean microseconds per round
// of the part `what` times: 0 both, 1 the sample, 2 the update.
extern "C" double FR_SIDE(run)(int iters, int what) {
  State* s = g_state;
  double total = 0.0;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    s->core->sample(kBatch, 0.4, s->idx.data(), s->weights.data(), s->gens.data(), s->out.data());
    const auto t1 = std::chrono::steady_clock::now();
    s->core->update_priorities(s->idx.data(), s->td.data(), kBatch, s->gens.data(), false);
    const auto t2 = std::chrono::steady_clock::now();
    const auto from = what == 2 ? t1 : t0, to = what == 1 ? t1 : t2;
    total += std::chrono::duration<double, std::micro>(to - from).count();
  }
  return total / iters;
}
