// Tests of the large-row gather (bulk_copy.h): differential against a row-by-row copy, a stress test of writers
// and samplers on a buffer of large rows (no sampled row torn, also with the copy crew's helpers), the copy crew
// (copy_crew.h), and the pool's huge-page blocks (pool.h). Built
// with -DFASTREPLAY_TESTS=ON and run by .ci/run under ThreadSanitizer and under AddressSanitizer + UBSan.
//
//   bulk_copy_check [seconds]   (the stress test's duration, default 1)
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "fastreplay/bulk_copy.h"
#include "fastreplay/gather.h"
#include "fastreplay/pool.h"
#include "fastreplay/replay.h"

using namespace fastreplay;

#include "check.h"  // CHECK, g_failures

static constexpr std::size_t kGuard = 128;  // bytes checked untouched on each side of an output
static constexpr std::uint8_t kFill = 0xA5;

// One column of `cap` rows of rb random bytes, `stride` bytes apart (rb: a plain column; more: a field of a packed
// record), allocated to its exact size (AddressSanitizer sees any overread).
struct TestColumn {
  std::vector<std::uint8_t> bytes;
  std::size_t rb, stride;
  TestColumn(std::size_t cap, std::size_t row_bytes, std::mt19937_64& rng, std::size_t row_stride = 0)
      : bytes((cap - 1) * (row_stride ? row_stride : row_bytes) + row_bytes),
        rb(row_bytes),
        stride(row_stride ? row_stride : row_bytes) {
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
  }
};

// An output of n rows of rb bytes with guard bytes before and after.
struct Output {
  std::vector<std::uint8_t> mem;
  std::size_t size;
  Output(std::size_t n, std::size_t rb) : mem(n * rb + 2 * kGuard, kFill), size(n * rb) {}
  std::uint8_t* data() { return mem.data() + kGuard; }
  bool guards_intact() const {
    for (std::size_t i = 0; i < kGuard; ++i)
      if (mem[i] != kFill || mem[kGuard + size + i] != kFill) return false;
    return true;
  }
};

static bool rows_equal(const TestColumn& c, const std::vector<std::int64_t>& idx, Output& o) {
  for (std::size_t i = 0; i < idx.size(); ++i)
    if (std::memcmp(o.data() + i * c.rb, c.bytes.data() + static_cast<std::size_t>(idx[i]) * c.stride, c.rb) != 0)
      return false;
  return o.guards_intact();
}

// copy_rows and copy_rows_streams (1 to kMaxStreams streams, several prefetch distances) give the rows of a plain
// row-by-row copy, for row sizes around multiples of 64 and 4096 and odd ones, every batch size from 1 to 40 and a
// few larger ones, with repeated indices and the first and last rows of the column.
static void test_differential() {
  std::mt19937_64 rng(7);
  std::size_t cases = 0;
  for (std::size_t rb : {257u, 300u, 511u, 1000u, 4095u, 4096u, 4097u, 8191u, 12289u, 28224u, 28225u}) {
    const std::size_t cap = 97;
    const std::size_t stride = rb % 2 ? rb + 40 : rb;  // odd sizes also as a member of a wider record
    TestColumn col(cap, rb, rng, stride);
    std::vector<std::size_t> sizes;
    for (std::size_t n = 1; n <= 40; ++n)
      if (!FASTREPLAY_TSAN || n <= 5 || n % 7 == 0) sizes.push_back(n);  // TSan: fewer (see below)
    for (std::size_t n : {64u, 97u, 130u}) sizes.push_back(n);
    for (std::size_t n : sizes) {
      std::vector<std::int64_t> idx(n);
      for (auto& i : idx) i = static_cast<std::int64_t>(rng() % cap);
      idx[0] = 0;
      idx[n - 1] = static_cast<std::int64_t>(cap - 1);
      if (n > 2) idx[1] = idx[2];  // a repeated row
      {
        Output o(n, rb);
        detail::copy_rows(col.bytes.data(), rb, stride, idx.data(), n, o.data());
        CHECK(rows_equal(col, idx, o));
        ++cases;
      }
      for (std::size_t streams = 1; streams <= detail::kMaxStreams + 1; ++streams) {  // kMaxStreams + 1: clamped
        // Under ThreadSanitizer every byte is an atomic access: the streams and distances that matter only
        if (FASTREPLAY_TSAN && streams != 1 && streams != detail::kStreams && streams != detail::kMaxStreams + 1)
          continue;
        for (std::size_t pf : {0u, 64u, 1000u, 1024u, 5000u, 70000u}) {
          if (FASTREPLAY_TSAN && pf != 0 && pf != 1000) continue;
          Output o(n, rb);
          detail::copy_rows_streams(col.bytes.data(), rb, stride, idx.data(), n, o.data(), streams, pf);
          if (!rows_equal(col, idx, o)) {
            std::fprintf(stderr, "  copy_rows_streams differs: rb %zu n %zu streams %zu prefetch %zu\n", rb, n, streams,
                         pf);
            CHECK(false);
          }
          ++cases;
        }
      }
    }
  }
  std::printf("  differential: %zu cases\n", cases);
}

// gather_batch of columns of the given row sizes (cap rows each), for each batch size: every field's rows.
static void check_gathers(std::mt19937_64& rng, std::size_t cap, const std::vector<std::size_t>& sizes,
                          const std::vector<std::size_t>& batch_sizes) {
  std::vector<TestColumn> cols;
  for (std::size_t rb : sizes) cols.emplace_back(cap, rb, rng);
  for (std::size_t n : batch_sizes) {
    std::vector<std::int64_t> idx(n);
    for (auto& i : idx) i = static_cast<std::int64_t>(rng() % cap);
    std::vector<ColumnRef> refs;
    std::vector<Output> outs;
    std::vector<std::uint8_t*> ptrs;
    for (auto& c : cols) {
      refs.push_back({c.bytes.data(), c.rb, c.stride, c.rb});
      outs.emplace_back(n, c.rb);
    }
    for (auto& o : outs) ptrs.push_back(o.data());
    gather_batch(refs.data(), refs.size(), idx.data(), n, ptrs.data());
    for (std::size_t f = 0; f < cols.size(); ++f) CHECK(rows_equal(cols[f], idx, outs[f]));
  }
}

// gather_batch with small and large fields mixed gives every field's rows.
static void test_gather_mixed() {
  std::mt19937_64 rng(8);
  check_gathers(rng, 50, {8, 4099, 1, 28224, 256, 257, 33}, {1, 2, 3, 17, 32, 33, 100});
}

// Writers add self-describing rows (a large field whose every 8-byte word is the row's id k, plus a small field
// 3k) while samplers sample batches large enough for the streamed copy: no sampled row may be torn.
static void test_stress(double seconds, std::size_t batch = 24) {
  constexpr std::size_t kBig = 4104;  // 513 words: not a multiple of the 256-byte chunk
  const std::vector<FieldSpec> fields = {{"obs", kBig}, {"tag", 8}};
  ReplayCore core(61, fields, 3);  // small: writers lap the samplers constantly
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> next{0};
  std::atomic<std::size_t> torn{0}, sampled{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      const std::size_t n = 1 + static_cast<std::size_t>(w) * 4;
      std::vector<std::int64_t> obs(n * kBig / 8), tag(n);
      while (!stop.load()) {
        const std::int64_t start = next.fetch_add(static_cast<std::int64_t>(n));
        for (std::size_t i = 0; i < n; ++i) {
          const std::int64_t k = start + static_cast<std::int64_t>(i);
          for (std::size_t j = 0; j < kBig / 8; ++j) obs[i * kBig / 8 + j] = k;
          tag[i] = 3 * k;
        }
        const void* p[2] = {obs.data(), tag.data()};
        core.add(p, n);
      }
    });
  }
  for (int s = 0; s < 2; ++s) {
    threads.emplace_back([&] {
      const std::size_t n = batch;  // 24 x 4104 bytes: the streamed path; 64 x 4104: past kParallelMin
      std::vector<std::int64_t> idx(n), obs(n * kBig / 8), tag(n);
      std::vector<std::uint64_t> gens(n);
      std::uint8_t* out[2] = {reinterpret_cast<std::uint8_t*>(obs.data()), reinterpret_cast<std::uint8_t*>(tag.data())};
      while (!stop.load()) {
        if (core.size() == 0) continue;
        core.sample(n, idx.data(), gens.data(), out);
        for (std::size_t i = 0; i < n; ++i) {
          const std::int64_t k = tag[i] / 3;
          bool ok = tag[i] == 3 * k;
          for (std::size_t j = 0; j < kBig / 8; ++j) ok = ok && obs[i * kBig / 8 + j] == k;
          torn += !ok;
        }
        sampled += n;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  std::printf("  stress: 2 writers, 2 samplers of %zu rows, %zu copy threads, %zu rows added, %zu sampled, %zu torn\n",
              batch, CopyCrew::instance().threads(), static_cast<std::size_t>(next.load()), sampled.load(),
              torn.load());
  CHECK(torn.load() == 0);
  CHECK(sampled.load() > 0);
}

// The copy crew (copy_crew.h): every part of every round runs exactly once, from several callers at once (one owns
// the crew, the others copy alone), while another thread changes the number of helpers; then the crew's gathers
// (several large columns cut across parts) give the same rows as a plain copy.
static void test_crew() {
  CopyCrew& crew = CopyCrew::instance();
  struct Ctx {
    std::vector<std::atomic<int>>* hits;
  };
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> rounds{0}, bad{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(c));
      for (int r = 0; r < 400; ++r) {
        const std::size_t parts = 1 + rng() % 40;
        std::vector<std::atomic<int>> hits(parts);
        for (auto& h : hits) h.store(0);
        Ctx ctx{&hits};
        crew.run([](const void* p, std::size_t part) {
          (*static_cast<const Ctx*>(p)->hits)[part].fetch_add(1, std::memory_order_relaxed);
        }, &ctx, parts);
        for (auto& h : hits) bad += h.load(std::memory_order_relaxed) != 1;
        ++rounds;
      }
    });
  }
  std::thread changer([&] {
    for (std::size_t i = 0; !stop.load(); ++i) {
      crew.set_threads(1 + i % 4);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  for (auto& t : callers) t.join();
  stop = true;
  changer.join();
  std::printf("  crew: %zu rounds from 3 callers, %zu parts not run exactly once\n", rounds.load(), bad.load());
  CHECK(bad.load() == 0);

  std::mt19937_64 rng(9);
  for (std::size_t threads : {2u, 3u}) {  // several large columns, 0.3-2.2 MB in all: cut across parts
    crew.set_threads(threads);
    check_gathers(rng, 40, {28224, 8, 4099, 28224, 300001}, {1, 9, 32, 33});
  }
  crew.set_threads(1);
}

// Pool blocks around the huge-page limit (1 MiB) are writable over their whole size, 64-byte aligned (2 MiB where
// huge), and come back for the next request of the same size.
static void test_pool_blocks() {
  BlockPool pool(std::size_t(64) << 20);
  for (std::size_t bytes : {std::size_t(1) << 20, (std::size_t(1) << 20) - 1, (std::size_t(1) << 20) + 1,
                            std::size_t(1806336 + 1024), (std::size_t(4) << 20) + 7, std::size_t(100)}) {
    auto* p = static_cast<std::uint8_t*>(pool.acquire(bytes));
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
    if (FASTREPLAY_POOL_HUGE && bytes >= (std::size_t(1) << 20))
      CHECK(reinterpret_cast<std::uintptr_t>(p) % (std::size_t(2) << 20) == 0);
    std::memset(p, 0x5A, bytes);
    CHECK(p[0] == 0x5A && p[bytes - 1] == 0x5A);
    pool.release(p, bytes);
    auto* q = static_cast<std::uint8_t*>(pool.acquire(bytes));
    CHECK(q == p);
    pool.release(q, bytes);
  }
  BlockPool tiny(std::size_t(1) << 20);  // caches nothing of 2 MiB: every release unmaps
  for (int i = 0; i < 3; ++i) tiny.release(tiny.acquire(std::size_t(3) << 20), std::size_t(3) << 20);
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  test_differential();
  test_gather_mixed();
  test_pool_blocks();
  test_stress(seconds);
  test_crew();
  CopyCrew::instance().set_threads(2);  // the samplers' large batches shared with a helper
  test_stress(seconds, 64);
  CopyCrew::instance().set_threads(1);
  if (g_failures) {
    std::printf("bulk_copy_check: %d checks failed\n", g_failures);
    return 1;
  }
  std::printf("bulk_copy_check: all checks passed\n");
  return 0;
}
