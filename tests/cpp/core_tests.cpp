// C++ tests of the core without Python: ring wrap-around, gather, prioritized trees and multi-threaded stress
// (writers and samplers at once, every sampled row checked for self-consistency). Built with
// -DFASTREPLAY_TESTS=ON and run by .ci/run under ThreadSanitizer and under AddressSanitizer + UBSan.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "fastreplay/batch.h"
#include "fastreplay/pool.h"
#include "fastreplay/prefetch.h"
#include "fastreplay/prioritized.h"
#include "fastreplay/replay.h"
#include "fastreplay/shared.h"

using namespace fastreplay;

#include "check.h"  // CHECK, g_failures

#include "rate_limiter_check.h"  // test_rate_limiter (uses CHECK)

// A self-describing row: field a = {k, k+1}, field b = 3k (int64), field c = k & 0xff repeated over 40 bytes.
struct Rows {
  std::vector<std::int64_t> a, b;
  std::vector<std::uint8_t> c;
  explicit Rows(std::size_t n, std::int64_t start) : a(2 * n), b(n), c(40 * n) {
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t k = start + static_cast<std::int64_t>(i);
      a[2 * i] = k;
      a[2 * i + 1] = k + 1;
      b[i] = 3 * k;
      std::memset(&c[40 * i], static_cast<int>(k & 0xff), 40);
    }
  }
  std::vector<const void*> ptrs() const { return {a.data(), b.data(), c.data()}; }
};
static const std::vector<FieldSpec> kFields = {{"a", 16}, {"b", 8}, {"c", 40}};

struct Out {
  std::vector<std::int64_t> idx, a, b;
  std::vector<std::uint64_t> gens;
  std::vector<float> w;
  std::vector<std::uint8_t> c;
  std::vector<std::uint8_t*> rows;
  explicit Out(std::size_t n) : idx(n), a(2 * n), b(n), gens(n), w(n), c(40 * n) {
    rows = {reinterpret_cast<std::uint8_t*>(a.data()), reinterpret_cast<std::uint8_t*>(b.data()), c.data()};
  }
  // Number of rows that are not one whole transition.
  std::size_t torn(std::size_t n) const {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t k = a[2 * i];
      bool ok = a[2 * i + 1] == k + 1 && b[i] == 3 * k;
      for (int j = 0; j < 40; ++j) ok = ok && c[40 * i + j] == static_cast<std::uint8_t>(k & 0xff);
      bad += !ok;
    }
    return bad;
  }
};

// Row groups (storage.h): small rows packed by decreasing alignment into a record padded to a power of two up to 64
// bytes, or to a multiple of 64; large rows and lone small rows keep a column; Layout::Columnar packs nothing.
static void test_storage_plan() {
  // CartPole: obs f32[4], action i64, reward f32, next_obs f32[4], done bool: 45 bytes -> a 64-byte record,
  // action first (alignment 8), then obs, reward, next_obs (4), done (1).
  const std::vector<FieldSpec> cp = {{"obs", 16, 4}, {"action", 8, 8}, {"reward", 4, 4}, {"next_obs", 16, 4},
                                     {"done", 1, 1}};
  StoragePlan p = plan_storage(cp, Layout::Auto);
  CHECK(p.block_row.size() == 1 && p.block_row[0] == 64);
  CHECK(p.fields[1].offset == 0 && p.fields[0].offset == 8 && p.fields[2].offset == 24 && p.fields[3].offset == 28);
  CHECK(p.fields[4].offset == 44);
  for (const Placement& pl : p.fields) CHECK(pl.block == 0 && pl.stride == 64);
  // Atari: two 28,224-byte frames stay columns; action, reward, done share a 16-byte record.
  const std::vector<FieldSpec> at = {{"obs", 28224, 1}, {"action", 8, 8}, {"reward", 4, 4}, {"next_obs", 28224, 1},
                                     {"done", 1, 1}};
  p = plan_storage(at, Layout::Auto);
  CHECK(p.block_row.size() == 3 && p.block_row[0] == 16);
  CHECK(p.fields[0].stride == 28224 && p.fields[3].stride == 28224 && p.fields[0].block != p.fields[3].block);
  CHECK(p.fields[1].stride == 16 && p.fields[2].offset == 8 && p.fields[4].offset == 12);
  // A record past one line is padded to whole lines; a lone small field is a column; columnar packs nothing.
  p = plan_storage({{"a", 200, 4}, {"b", 100, 4}, {"img", 300, 1}}, Layout::Auto);
  CHECK(p.fields[0].stride == 320 && p.fields[1].offset == 200 && p.fields[2].stride == 300);
  p = plan_storage({{"a", 8, 8}, {"img", 1000, 1}}, Layout::Auto);
  CHECK(p.fields[0].stride == 8 && p.fields[1].stride == 1000 && p.block_row.size() == 2);
  p = plan_storage(cp, Layout::Columnar);
  for (std::size_t f = 0; f < cp.size(); ++f) CHECK(p.fields[f].stride == cp[f].row_bytes && p.fields[f].offset == 0);
  // Packed columns hold what was added, 64-byte aligned records.
  ReplayCore core(5, cp, 1);
  CHECK(!core.column(0).contiguous() && core.column(1).stride() == 64);
  CHECK(reinterpret_cast<std::uintptr_t>(core.column(1).data()) % 64 == 0);
  float obs[3][4], nxt[3][4], rew[3];
  std::int64_t act[3];
  std::uint8_t done[3];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) obs[i][j] = static_cast<float>(10 * i + j), nxt[i][j] = -obs[i][j];
    act[i] = 100 + i, rew[i] = 0.5f * static_cast<float>(i), done[i] = i == 2;
  }
  const void* src[5] = {obs, act, rew, nxt, done};
  core.add(src, 3);
  for (std::size_t s = 0; s < 3; ++s) {
    CHECK(std::memcmp(core.column(0).row(s), obs[s], 16) == 0 && std::memcmp(core.column(3).row(s), nxt[s], 16) == 0);
    CHECK(std::memcmp(core.column(1).row(s), &act[s], 8) == 0 && core.column(4).row(s)[0] == done[s]);
  }
}

static void test_ring_wraparound() {
  ReplayCore core(7, kFields, 1);
  std::int64_t start = 0;
  for (std::size_t n : {3u, 5u, 1u, 9u, 20u, 2u}) {
    Rows r(n, start);
    auto p = r.ptrs();
    core.add(p.data(), n);
    start += static_cast<std::int64_t>(n);
  }
  CHECK(core.size() == 7);
  CHECK(core.ring().next_index() == static_cast<std::size_t>(start % 7));
  for (std::size_t slot = 0; slot < 7; ++slot) {  // slot s holds the newest k with k % 7 == s
    std::int64_t k = start - 1;
    while (k % 7 != static_cast<std::int64_t>(slot)) --k;
    std::int64_t v;
    std::memcpy(&v, core.column(0).row(slot), 8);
    CHECK(v == k);
  }
  Out o(64);
  core.sample(64, o.idx.data(), o.gens.data(), o.rows.data());
  CHECK(o.torn(64) == 0);
  for (std::size_t i = 0; i < 64; ++i) CHECK(o.a[2 * i] % 7 == o.idx[i] && o.a[2 * i] >= start - 7);
  core.clear();
  CHECK(core.size() == 0);
  bool threw = false;
  try {
    core.sample(1, o.idx.data(), nullptr, o.rows.data());
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
}

static void test_get_checks_indices() {
  ReplayCore core(10, kFields, 1);
  Rows r(4, 100);
  auto p = r.ptrs();
  core.add(p.data(), 4);
  Out o(2);
  std::int64_t good[2] = {3, 0}, bad[2] = {1, 4};
  core.get(good, 2, o.gens.data(), o.rows.data());
  CHECK(o.a[0] == 103 && o.a[2] == 100 && o.gens[0] == 1);
  bool threw = false;
  try {
    core.get(bad, 2, nullptr, o.rows.data());
  } catch (const std::out_of_range&) {
    threw = true;
  }
  CHECK(threw);
}

static void test_prioritized_basics() {
  PrioritizedCore per(100, kFields, 2, 1.0, 0.0, PrioritizedCore::MaxMode::AllTime);
  Rows r(100, 0);
  auto p = r.ptrs();
  per.add(p.data(), 100);
  std::vector<std::int64_t> idx(100);
  std::vector<double> pr(100);
  std::iota(idx.begin(), idx.end(), 0);
  for (int i = 0; i < 100; ++i) pr[i] = i % 2 ? 0.0 : 1.0 + i;  // odd slots never sampled
  per.update_priorities(idx.data(), pr.data(), 100, nullptr, false);
  double sum = 0;
  for (double v : pr) sum += v;
  CHECK(std::fabs(per.tree().total() - sum) <= 1e-12 * sum);
  Out o(256);
  per.sample(256, 0.5, o.idx.data(), o.w.data(), o.gens.data(), o.rows.data());
  CHECK(o.torn(256) == 0);
  for (std::size_t i = 0; i < 256; ++i) {
    CHECK(o.idx[i] % 2 == 0);
    CHECK(o.a[2 * i] == o.idx[i]);
    const double expect = std::pow(1.0 / (1.0 + static_cast<double>(o.idx[i])), 0.5);
    CHECK(std::fabs(o.w[i] - expect) <= 1e-6);
  }
}

static void test_pool_reuse() {
  BlockPool pool(1 << 20);
  void* a = pool.acquire(1000);
  pool.release(a, 1000);
  void* b = pool.acquire(1000);
  CHECK(a == b);
  pool.release(b, 1000);
}

// Batch memory: every array on its own cache line, none overlapping, the block back in the pool when done.
static void test_batch_block() {
  const std::vector<std::size_t> row_bytes = {16, 8, 40};
  auto pool = std::make_shared<BlockPool>(1 << 20);
  for (bool weights : {false, true}) {
    const BatchLayout L(5, row_bytes, weights);
    std::vector<std::pair<std::size_t, std::size_t>> spans = {{L.indices, 5 * 8}, {L.generations, 5 * 8}};
    if (weights) spans.push_back({L.weights, 5 * 4});
    for (std::size_t f = 0; f < row_bytes.size(); ++f) spans.push_back({L.fields[f], 5 * row_bytes[f]});
    std::sort(spans.begin(), spans.end());
    for (std::size_t k = 0; k < spans.size(); ++k) {
      CHECK(spans[k].first % kCacheLine == 0);
      CHECK(spans[k].first + spans[k].second <= (k + 1 < spans.size() ? spans[k + 1].first : L.bytes));
    }
    void* first = nullptr;
    {
      BatchBlock b(pool, L);
      first = b.block;
      CHECK((b.weights != nullptr) == weights);
      CHECK(reinterpret_cast<std::uint8_t*>(b.rows[2]) == b.block + L.fields[2]);
      std::memset(b.block, 0xab, L.bytes);  // the whole layout is inside the block (ASan checks)
    }
    BatchBlock again(pool, L);
    CHECK(again.block == first);  // reused from the pool
  }
  bool threw = false;
  try {
    BatchLayout absurd(std::size_t(1) << 62, row_bytes, true);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  CHECK(threw);
}

// Once everyone stopped: every stored slot holds a whole transition, and a prioritized root equals the sum of
// its leaves.
template <class Core>
static void check_settled(Core& core) {
  Out o(core.size());
  std::vector<std::int64_t> all(core.size());
  std::iota(all.begin(), all.end(), 0);
  core.get(all.data(), all.size(), o.gens.data(), o.rows.data());
  CHECK(o.torn(all.size()) == 0);
  if constexpr (std::is_same_v<Core, PrioritizedCore>) {
    double sum = 0;
    for (std::size_t s = 0; s < core.capacity(); ++s) sum += core.tree().leaf(s);
    CHECK(std::fabs(core.tree().total() - sum) <= 1e-9 * sum);
  }
}

// Writers add self-describing rows while samplers sample; no sampled row may be torn. With prioritized=true,
// samplers also update priorities, and the root must equal the sum of leaves once everyone stops.
template <class Core>
static void stress(Core& core, int writers, int samplers, double seconds, bool prioritized);
// The same with writers on one core and samplers on another (two cores over one shared region: two processes).
template <class Core>
static void stress(Core& core, Core& sampled_core, int writers, int samplers, double seconds, bool prioritized);

template <class Core>
static void stress(Core& core, int writers, int samplers, double seconds, bool prioritized) {
  stress(core, core, writers, samplers, seconds, prioritized);
}

template <class Core>
static void stress(Core& core, Core& sampled_core, int writers, int samplers, double seconds, bool prioritized) {
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> next{0};
  std::atomic<std::size_t> torn{0}, sampled{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::size_t n = 1 + static_cast<std::size_t>(w) * 3;  // writers use different batch sizes
      while (!stop.load()) {
        const std::int64_t start = next.fetch_add(static_cast<std::int64_t>(n));
        Rows r(n, start);
        auto p = r.ptrs();
        core.add(p.data(), n);
      }
    });
  }
  for (int s = 0; s < samplers; ++s) {
    threads.emplace_back([&] {
      Core& core = sampled_core;
      Out o(64);
      std::vector<double> pr(64, 0.5);
      while (!stop.load()) {
        if (core.size() == 0) continue;
        if constexpr (std::is_same_v<Core, PrioritizedCore>) {
          core.sample(64, 0.4, o.idx.data(), o.w.data(), o.gens.data(), o.rows.data());
          for (std::size_t i = 0; i < 64; ++i) pr[i] = static_cast<double>(o.a[2 * i] % 17) + 0.1;
          core.update_priorities(o.idx.data(), pr.data(), 64, o.gens.data(), false);
        } else {
          core.sample(64, o.idx.data(), o.gens.data(), o.rows.data());
        }
        torn += o.torn(64);
        sampled += 64;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  std::printf("  stress %s: %d writers, %d samplers, %zu rows added, %zu sampled, %zu torn\n",
              prioritized ? "prioritized" : "uniform", writers, samplers, static_cast<std::size_t>(next.load()),
              sampled.load(), torn.load());
  CHECK(torn.load() == 0);
  CHECK(sampled.load() > 0);
  check_settled(core);
  if (&sampled_core != &core) check_settled(sampled_core);
}

// Shared storage (shared.h): a core built in a shared region and a second core attached to it (as another process
// would) see one buffer: what one adds the other samples, priorities and alpha included; then the stress test with
// writers on the first and samplers on the second. Attaching with another layout, or to a missing name, throws.
template <class Core>
static void test_shared(bool prioritized, double seconds) {
  const std::string name = "/fastreplay-core-tests-" + std::to_string(::getpid()) + (prioritized ? "-per" : "-uni");
  SharedName owner(name);
  auto build = [&](SharedRegion& region) -> std::unique_ptr<Core> {
    if constexpr (std::is_same_v<Core, PrioritizedCore>)
      return std::unique_ptr<Core>(new Core(300, kFields, 11, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime, {},
                                            nullptr, &region));
    else
      return std::unique_ptr<Core>(new Core(300, kFields, 11, {}, nullptr, &region));
  };
  SharedRegion ra(name, true, 42);
  std::unique_ptr<Core> a = build(ra);
  ra.finish(11);
  bool threw = false;
  try {
    SharedRegion bad(name, false, 43);  // another fingerprint
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    SharedRegion missing(name + "-missing", false, 42);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);
  SharedRegion rb(name, false, 42);
  CHECK(rb.seed() == 11);
  std::unique_ptr<Core> b = build(rb);
  rb.finish(rb.seed());
  {
    Rows r(5, 100);
    auto p = r.ptrs();
    a->add(p.data(), 5);
    CHECK(b->size() == 5 && b->ring().total_added() == 5);
    Out o(5);
    std::vector<std::int64_t> all = {0, 1, 2, 3, 4};
    b->get(all.data(), 5, o.gens.data(), o.rows.data());
    CHECK(o.torn(5) == 0 && o.a[0] == 100 && o.a[8] == 104);
    CHECK(a->next_stream() == 0 && b->next_stream() == 1);  // one generator counter
    if constexpr (std::is_same_v<Core, PrioritizedCore>) {
      std::int64_t idx = 2;
      double pr = 7.0;
      b->update_priorities(&idx, &pr, 1, nullptr, false);
      CHECK(a->priority(2) == 7.0 && a->max_priority() == 7.0);
      CHECK(std::fabs(a->tree().total() - b->tree().total()) == 0.0);
      a->set_alpha(0.5);
      CHECK(b->alpha() == 0.5);
    }
  }
  stress(*a, *b, 2, 2, seconds, prioritized);
}

// Prefetch workers sample while a writer adds and the consumer updates priorities; then a worker error
// propagates, and close() joins everything with items still queued.
static void test_prefetcher(double seconds) {
  PrioritizedCore core(300, kFields, 6, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime);
  {
    Rows r(300, 0);
    auto p = r.ptrs();
    core.add(p.data(), 300);
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::int64_t k = 300;
    while (!stop.load()) {
      Rows r(5, k);
      auto p = r.ptrs();
      core.add(p.data(), 5);
      k += 5;
    }
  });
  std::size_t consumed = 0, torn = 0;
  {
    // As the bindings do it: each item is a pooled BatchBlock, freed on the consumer's thread.
    auto pool = std::make_shared<BlockPool>();
    const BatchLayout L(32, {16, 8, 40}, true);
    Prefetcher<BatchBlock*> pf(
        [&] {
          auto* b = new BatchBlock(pool, L);
          core.sample(32, 0.4, b->indices, b->weights, b->generations, b->rows.data());
          return b;
        },
        [](BatchBlock* b) { delete b; }, 3, 2);
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    std::vector<double> pr(32, 1.5);
    Out o(32);
    while (std::chrono::steady_clock::now() < end) {
      BatchBlock* b = pf.next();
      std::memcpy(o.a.data(), b->rows[0], 32 * 16);
      std::memcpy(o.b.data(), b->rows[1], 32 * 8);
      std::memcpy(o.c.data(), b->rows[2], 32 * 40);
      torn += o.torn(32);
      core.update_priorities(b->indices, pr.data(), 32, b->generations, false);
      delete b;
      ++consumed;
    }
  }  // destructor closes with items possibly queued
  stop = true;
  writer.join();
  std::printf("  prefetcher: %zu batches consumed, %zu torn rows\n", consumed, torn);
  CHECK(consumed > 0 && torn == 0);

  ReplayCore empty(10, kFields, 1);
  Prefetcher<int> failing([&] {
    Out o(4);
    empty.sample(4, o.idx.data(), nullptr, o.rows.data());  // throws: empty buffer
    return 1;
  }, [](int) {}, 2, 1);
  bool threw = false, closed = false;
  try {
    failing.next();
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  try {
    failing.next();
  } catch (const PrefetcherClosed&) {
    closed = true;
  }
  CHECK(threw && closed);
}

// D1: several writers whose rows in flight exceed the capacity (capacity 8, adds of 5 and of 12 rows) must all
// finish; the claim of a slot that a newer lap is writing used to wait for it, an ABBA deadlock. A watchdog turns
// a hang into a failure. Afterwards every slot holds a whole transition; for the prioritized core, root == sum.
template <class Core>
static void test_writers_overlap_laps(Core& core, int writers, std::size_t rows, double seconds) {
  std::atomic<bool> done{false}, stop{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 10 * (20 + seconds) && !done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!done.load()) {
      std::fprintf(stderr, "writers_overlap_laps: %d writers of %zu rows on capacity %zu hung (D1)\n", writers, rows,
                   core.capacity());
      std::_Exit(3);
    }
  });
  std::atomic<std::int64_t> next{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const std::size_t n = w % 2 ? rows : core.capacity() + 4;  // half the writers add more than the capacity
      while (!stop.load(std::memory_order_relaxed)) {
        Rows r(n, next.fetch_add(static_cast<std::int64_t>(n)));
        auto p = r.ptrs();
        core.add(p.data(), n);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  done = true;
  watchdog.join();
  CHECK(core.size() == core.capacity());
  check_settled(core);
  std::printf("  writers overlapping laps: %d writers on capacity %zu, %lld rows added\n", writers, core.capacity(),
              static_cast<long long>(next.load()));
}

// Prefetchers built and destroyed at once, some with items never consumed, join cleanly. (The constructor's
// failure path, D4, is tested from Python with an LD_PRELOAD shim that makes pthread_create fail.)
static void test_prefetcher_construct_destroy() {
  for (int i = 0; i < 50; ++i) {
    Prefetcher<int> pf([] { return 1; }, [](int) {}, 2, 4);
    if (i % 2) CHECK(pf.next() == 1);
  }
}


// The episodic layout of the stress tests: input fields obs(8 B), next_obs(8 B), reward(f64), done(u8); columns obs,
// reward, done; frame_stack 3 with reset padding, n_step 3 (gamma 0.5), next-obs dedup; batch fields obs stack,
// next obs stack, reward, done, discount.
static std::vector<FieldSpec> stress_columns() { return {{"obs", 8}, {"reward", 8}, {"done", 1}}; }
static EpisodeSpec stress_spec(std::size_t lanes) {
  EpisodeSpec e;
  e.lanes = lanes;
  e.dedup = true;
  e.stack = 3;
  e.n_step = 3;
  e.gamma = 0.5;
  e.in_row_bytes = {8, 8, 8, 1};
  e.col_input = {0, 2, 3};
  e.col_offset = {0, 0, 0};
  e.obs_col = {0};
  e.next_input = {1};
  e.next_offset = {0};
  e.next_col = {0};
  e.reward_col = 1;
  e.reward_f64 = true;
  e.done_col = 2;
  e.done_input = 3;
  using K = EpisodeSpec;
  e.outs = {{K::Obs, 0}, {K::NextObs, 0}, {K::Reward, 0}, {K::Done, 0}, {K::Discount, 0}};
  return e;
}

// One vector step of the stress tests' writer (at most 4 lanes): lane k's frame encodes (k, step), its reward is
// the step, and every 7th step ends the episode.
static void add_stress_step(ReplayCore& core, std::size_t lanes, std::int64_t step) {
  std::int64_t obs[4], nxt[4];
  double rew[4];
  std::uint8_t done[4];
  for (std::size_t k = 0; k < lanes; ++k) {
    obs[k] = static_cast<std::int64_t>(k) * 1000000000 + step;
    nxt[k] = obs[k] + 1;
    rew[k] = static_cast<double>(step);
    done[k] = step % 7 == 6;
  }
  const void* src[4] = {obs, nxt, rew, done};
  core.add(src, lanes);
}

// Episodic buffer (episodes.h) under a writer and samplers: 4 lanes, frames encode (lane, step), episodes of 7
// steps (the 7th terminates), frame_stack 3 with reset padding, n_step 3, next-obs dedup. Every sampled row must be
// one lane's own history: the stack, the next stack's newest frame and the n-step reward agree with its step.
static void test_episodes_stress(bool prioritized, double seconds) {
  const std::size_t lanes = 4, cap = 64;
  const std::vector<FieldSpec> cols = stress_columns();
  const EpisodeSpec e = stress_spec(lanes);
  std::unique_ptr<ReplayCore> core;
  PrioritizedCore* per = nullptr;
  if (prioritized) {
    per = new PrioritizedCore(cap, cols, 11, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime, {}, &e);
    core.reset(per);
  } else {
    core.reset(new ReplayCore(cap, cols, 11, {}, &e));
  }
  std::atomic<bool> stop{false};
  std::atomic<long> rows_checked{0};
  std::thread writer([&] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (std::int64_t step = 0; std::chrono::steady_clock::now() < until; ++step) add_stress_step(*core, lanes, step);
    stop = true;
  });
  auto sampler = [&] {
    const std::size_t B = 16;
    std::vector<std::int64_t> idx(B), o(B * 3), nx(B * 3);
    std::vector<double> r(B);
    std::vector<std::uint8_t> d(B);
    std::vector<float> disc(B), w(B);
    std::vector<std::uint64_t> g(B);
    std::uint8_t* out[5] = {reinterpret_cast<std::uint8_t*>(o.data()), reinterpret_cast<std::uint8_t*>(nx.data()),
                            reinterpret_cast<std::uint8_t*>(r.data()), d.data(),
                            reinterpret_cast<std::uint8_t*>(disc.data())};
    while (!stop) {
      if (core->size() < cap) continue;
      if (per)
        per->sample(B, 0.4, idx.data(), w.data(), g.data(), out);
      else
        core->sample(B, idx.data(), g.data(), out);
      for (std::size_t i = 0; i < B; ++i) {
        const std::int64_t lane = o[i * 3 + 2] / 1000000000, step = o[i * 3 + 2] % 1000000000;
        const std::int64_t first = step - step % 7;
        for (int q = 0; q < 3; ++q) CHECK(o[i * 3 + q] == lane * 1000000000 + std::max(first, step - 2 + q));
        const std::int64_t taken = nx[i * 3 + 2] % 1000000000 - step;
        CHECK(nx[i * 3 + 2] / 1000000000 == lane);
        CHECK(taken >= 1 && taken <= std::min<std::int64_t>(3, 7 - step % 7));
        double want = 0.0;
        for (std::int64_t j = 0; j < taken; ++j) want += std::pow(0.5, static_cast<double>(j)) * static_cast<double>(step + j);
        CHECK(std::fabs(r[i] - want) < 1e-9);
        CHECK(d[i] == (step + taken - first == 7));
        rows_checked.fetch_add(1);
      }
    }
  };
  std::thread s1(sampler), s2(sampler);
  writer.join();
  s1.join();
  s2.join();
  CHECK(rows_checked.load() > 0);
}

// Sequences (sequences.h) over the same episodic layout under a writer, samplers of sequences and (prioritized) a
// priority updater: every sequence is consecutive steps of one lane and one episode, starts at a multiple of the
// period, and each step's stack and n-step reward agree with its step; padding is zero.
static void test_sequences_stress(bool prioritized, double seconds) {
  const std::size_t lanes = 4, cap = 64, L = 5, period = 2;
  const std::vector<FieldSpec> cols = stress_columns();
  const EpisodeSpec e = stress_spec(lanes);
  std::unique_ptr<ReplayCore> core;
  if (prioritized)
    core.reset(new PrioritizedCore(cap, cols, 12, 0.9, 1e-6, PrioritizedCore::MaxMode::AllTime, {}, &e));
  else
    core.reset(new ReplayCore(cap, cols, 12, {}, &e));
  Sequences& seqs = *core->sequences();
  std::atomic<bool> stop{false};
  std::atomic<long> checked{0};
  auto add_steps = [&](std::int64_t from, std::int64_t to) {
    for (std::int64_t step = from; step < to; ++step) add_stress_step(*core, lanes, step);
  };
  add_steps(0, 40);
  std::thread writer([&] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (std::int64_t step = 40; std::chrono::steady_clock::now() < until; step += 10) add_steps(step, step + 10);
    stop = true;
  });
  auto sampler = [&](SequenceEnd end, std::uint64_t stream) {
    const std::size_t B = 8;
    std::vector<std::int64_t> o(B * L * 3), nx(B * L * 3), slots(B * L), starts(B), lens(B), items(B);
    std::vector<double> r(B * L);
    std::vector<std::uint8_t> d(B * L), mask(B * L), first(B * L);
    std::vector<float> disc(B * L), w(B);
    std::vector<std::uint64_t> g(B);
    Rng rng(5, stream);
    std::vector<double> td(B * L, 1.0);
    while (!stop) {
      auto x = seqs.index(period, end == SequenceEnd::Drop ? L : 1);
      if (seqs.admissible(*x, L, B) < B) continue;
      SequenceOut out;
      out.batch = B;
      out.length = L;
      out.fields = {reinterpret_cast<std::uint8_t*>(o.data()), reinterpret_cast<std::uint8_t*>(nx.data()),
                    reinterpret_cast<std::uint8_t*>(r.data()), d.data(), reinterpret_cast<std::uint8_t*>(disc.data())};
      out.row_bytes = {24, 24, 8, 1, 4};
      out.mask = mask.data();
      out.is_first = first.data();
      out.slots = slots.data();
      out.starts = starts.data();
      out.generations = g.data();
      out.lengths = lens.data();
      out.items = items.data();
      out.weights = w.data();
      const std::size_t T = seqs.sample(*x, {L, period, end, 0.4}, rng, out);
      CHECK(T >= 1 && T <= L);
      for (std::size_t b = 0; b < B; ++b) {
        const auto m = static_cast<std::size_t>(lens[b]);
        CHECK(m >= 1 && m <= T);
        if (end == SequenceEnd::Drop) CHECK(m == L);
        const std::int64_t lane = o[(b * T) * 3 + 2] / 1000000000, s0 = o[(b * T) * 3 + 2] % 1000000000;
        CHECK((s0 % 7) % static_cast<std::int64_t>(period) == 0);
        for (std::size_t i = 0; i < T; ++i) {
          const std::size_t row = b * T + i;
          CHECK(mask[row] == (i < m));
          if (i >= m) {
            CHECK(o[row * 3 + 2] == 0 && r[row] == 0.0 && slots[row] == -1);
            continue;
          }
          const std::int64_t step = s0 + static_cast<std::int64_t>(i);
          CHECK(o[row * 3 + 2] == lane * 1000000000 + step);
          CHECK(step - step % 7 == s0 - s0 % 7);  // one episode
          CHECK(first[row] == (step % 7 == 0));
          const std::int64_t taken = nx[row * 3 + 2] % 1000000000 - step;
          CHECK(taken >= 1 && taken <= std::min<std::int64_t>(3, 7 - step % 7));
          double want = 0.0;
          for (std::int64_t j = 0; j < taken; ++j) want += std::pow(0.5, static_cast<double>(j)) * static_cast<double>(step + j);
          CHECK(std::fabs(r[row] - want) < 1e-9);
        }
        checked.fetch_add(1);
      }
      if (prioritized)
        seqs.update_priorities(*x, items.data(), starts.data(), g.data(), td.data(), mask.data(), B, T, 0.9);
    }
  };
  std::thread s1(sampler, SequenceEnd::Truncate, 1), s2(sampler, SequenceEnd::Drop, 2), s3(sampler, SequenceEnd::Pad, 3);
  writer.join();
  s1.join();
  s2.join();
  s3.join();
  std::printf("  sequences%s: %ld sequences checked\n", prioritized ? " prioritized" : "", checked.load());
  CHECK(checked.load() > 0);
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  test_storage_plan();
  test_ring_wraparound();
  test_get_checks_indices();
  test_prioritized_basics();
  test_pool_reuse();
  test_batch_block();
  {
    ReplayCore core(1000, kFields, 3);  // small capacity: writers lap samplers constantly
    stress(core, 2, 2, seconds, false);
  }
  {
    ReplayCore core(37, kFields, 4);  // tiny: writers also lap each other
    stress(core, 3, 1, seconds / 2, false);
  }
  {
    ReplayCore core(1000, kFields, 3, {}, nullptr, nullptr, Layout::Columnar);  // the other layout (kFields pack)
    stress(core, 2, 2, seconds / 2, false);
  }
  {
    PrioritizedCore core(500, kFields, 5, 0.6, 1e-6, PrioritizedCore::MaxMode::AllTime);
    stress(core, 2, 2, seconds, true);
  }
  test_prefetcher(seconds / 2);
  test_prefetcher_construct_destroy();
  for (int writers : {4, 16}) {
    ReplayCore core(8, kFields, 7);
    test_writers_overlap_laps(core, writers, 5, seconds / 2);
  }
  {
    ReplayCore core(64, kFields, 8);
    test_writers_overlap_laps(core, 16, 40, seconds / 2);
  }
  {
    PrioritizedCore core(8, kFields, 9, 0.6, 1e-6, PrioritizedCore::MaxMode::Stored);
    test_writers_overlap_laps(core, 8, 3, seconds / 2);
  }
  test_episodes_stress(false, seconds / 2);
  test_episodes_stress(true, seconds / 2);
  test_sequences_stress(false, seconds / 2);
  test_sequences_stress(true, seconds / 2);
  test_shared<ReplayCore>(false, seconds / 2);
  test_shared<PrioritizedCore>(true, seconds / 2);
  test_rate_limiter(seconds / 2);
  if (g_failures) {
    std::printf("core_tests: %d checks failed\n", g_failures);
    return 1;
  }
  std::printf("core_tests: all checks passed\n");
  return 0;
}
