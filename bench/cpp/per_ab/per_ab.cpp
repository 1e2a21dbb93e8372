// Two versions of PrioritizedCore in one process, timed in alternating rounds: the A/B comparison for this noisy
// shared VM, where separate processes (per_bench.cpp run twice) differ by more than the change being measured
// (the host's memory contention changes from minute to minute; within one process both sides share it).
//
//   old=/tmp/old/csrc   # e.g. git worktree add --detach /tmp/old <rev>
//   for s in a b; do src=$([ $s = a ] && echo $old || echo csrc); g++ -O2 -std=c++17 -DNDEBUG -falign-loops=64
//     -falign-jumps=32 -I $src -Dfastreplay=fr_$s -DSIDE=$s -c bench/cpp/per_ab/per_ab_core.cpp -o /tmp/per_ab_$s.o;
//   done   (one line)
//   g++ -O2 bench/cpp/per_ab/per_ab.cpp /tmp/per_ab_a.o /tmp/per_ab_b.o -o /tmp/per_ab -lpthread
//   /tmp/per_ab [capacity=1e6] [rounds=40] [flat]
//
// Each round runs 200 loops (sample(256) + update_priorities of the drawn rows) of A, then of B; for the whole loop,
// the sample alone and the update alone it prints each side's best and median round (microseconds per loop) and
// the median, first and third quartile of the per-round ratio B / A. "flat": every leaf at the initial priority and
// updates that raise it (per_ab_core.cpp).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

extern "C" void a_setup(std::size_t, bool);
extern "C" double a_run(int, int);
extern "C" void b_setup(std::size_t, bool);
extern "C" double b_run(int, int);

int main(int argc, char** argv) {
  const std::size_t cap = argc > 1 ? static_cast<std::size_t>(std::atof(argv[1])) : 1000000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 40;
  const bool flat = argc > 3 && std::strcmp(argv[3], "flat") == 0;
  a_setup(cap, flat);
  b_setup(cap, flat);
  const char* names[3] = {"loop", "sample", "update"};
  std::printf("capacity %zu, %d rounds%s; us per loop\n", cap, rounds, flat ? ", flat priorities" : "");
  for (int what = 0; what < 3; ++what) {
    std::vector<double> a, b, ratio;
    for (int r = 0; r < rounds; ++r) {
      a.push_back(a_run(200, what));
      b.push_back(b_run(200, what));
      ratio.push_back(b.back() / a.back());
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::sort(ratio.begin(), ratio.end());
    std::printf("%-7s A best %6.2f median %6.2f | B best %6.2f median %6.2f | B/A median %.3f [%.3f, %.3f]\n",
                names[what], a[0], a[rounds / 2], b[0], b[rounds / 2], ratio[rounds / 2], ratio[rounds / 4],
                ratio[3 * rounds / 4]);
  }
}
