"""Adversarial lifetime: interpreter exit with daemon threads inside buffer calls, thread creation failing
part-way, and fork() while prefetch workers or a learner thread run (reliability review 2026-11, D3 to D6). Every
scenario runs in its own process (and forks its own children) with a timeout, so a crash or a hang fails one test."""
import shutil
import subprocess
import textwrap

import pytest

from _isolated import assert_clean_exit, run_isolated

# D3 ------------------------------------------------------------------------------------------------------------

DAEMON_AT_EXIT = """
import threading, time
import numpy as np
import fastreplay as fr

call = {call!r}
per = call == "update_priorities"
cls = fr.PrioritizedReplayBuffer if per else fr.ReplayBuffer
b = cls(4000, {{"x": ((1024,), np.float32)}}, seed=0)
rows = np.ones((4000, 1024), np.float32)
b.add(x=rows)
idx = np.arange(0, 4000, 2)
its = {{}}
work = {{
    "sample": lambda: b.sample(512, 0.4) if per else b.sample(512),
    "add": lambda: b.add(x=rows[:512]),
    "get": lambda: b.get(idx),
    "update_priorities": lambda: b.update_priorities(idx, np.ones(len(idx))),
    # next() waits without the GIL; once atexit closes the prefetcher it returns None (StopIteration)
    "prefetch": lambda: next(its.setdefault(threading.get_ident(), b.prefetch(256, depth=2, threads=2)), None),
}}[call]

def loop():
    while True:
        work()

for _ in range(3):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.3)
print("exiting", flush=True)
# the end of the script: the daemons are inside the buffer call, without the GIL, most of the time
"""


@pytest.mark.parametrize("call", ["sample", "add", "get", "update_priorities", "prefetch"])
def test_exit_with_daemon_threads_inside_buffer_calls(call):
    """D3: the interpreter exits with status 0 while daemon threads loop in a buffer call. On the old build the
    thread re-took the GIL inside ~gil_scoped_release during finalisation and the process aborted (status 134)."""
    for _ in range(2):
        assert_clean_exit(DAEMON_AT_EXIT.format(call=call), timeout=60, expect_stdout="exiting")


def test_exit_collects_prefetchers_on_the_main_thread():
    """D3, the other side of the guard: a prefetcher (or a buffer) destroyed during finalisation on the main
    thread still re-takes the GIL there (it must not be parked), also when __del__ of a cycle drops it late."""
    assert_clean_exit("""
        import gc
        import numpy as np
        import fastreplay as fr
        import fastreplay.buffer
        b = fr.ReplayBuffer(100, {"x": ((3,), np.float32)}, seed=0)
        b.add(x=np.ones((100, 3), np.float32))
        it = b.prefetch(8, depth=2, threads=2)
        next(it)
        class Cycle:
            def __del__(self):
                self.it.close()
        c = Cycle(); c.self = c; c.it = b.prefetch(4, threads=3)
        del c
        gc.disable()  # the cycle survives until the interpreter's final collection
        fastreplay.buffer._live_prefetchers.clear()  # not closed by atexit: destroyed during finalisation
        print("ok", flush=True)
    """, timeout=60, expect_stdout="ok")


# D4 ------------------------------------------------------------------------------------------------------------

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
/* pthread_create fails with EAGAIN from the n-th call after shim_arm(n) (as ulimit -u or pids.max would). */
static int remaining = -1;
void shim_arm(int n) { remaining = n; }
int pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
  static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  if (!real) real = (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
  if (remaining > 0 && --remaining == 0) { remaining = 1; return EAGAIN; }
  return real(t, a, f, arg);
}
"""


@pytest.fixture(scope="module")
def pthread_shim(tmp_path_factory):
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        pytest.skip("no C compiler to build the pthread_create shim")
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"], check=True)
    return d / "shim.so"


def test_prefetch_thread_creation_failing_part_way_raises(pthread_shim):
    """D4: with pthread_create failing from the 3rd worker on, prefetch(threads=4) raises a RuntimeError naming the
    thread, the two workers already started are joined, and the buffer and a later prefetcher work. On the old
    build the constructor threw with joinable threads: std::terminate, status 134."""
    out = assert_clean_exit(f"""
        import ctypes
        import numpy as np
        import fastreplay as fr
        shim = ctypes.CDLL({str(pthread_shim)!r})
        b = fr.ReplayBuffer(100, {{"x": ((3,), np.float32)}}, seed=0)
        b.add(x=np.ones((100, 3), np.float32))
        for threads in (4, 3, 64):
            shim.shim_arm(3)
            try:
                b.prefetch(8, depth=2, threads=threads)
            except RuntimeError as e:
                assert "worker thread 3 of" in str(e) and "prefetch" in str(e), e
                print("raised:", e, flush=True)
            else:
                raise AssertionError("no error")
            shim.shim_arm(-1)
        with b.prefetch(8, depth=2, threads=4) as it:
            assert next(it)["x"].shape == (8, 3)
        print("ok", flush=True)
    """, timeout=60, env={"LD_PRELOAD": str(pthread_shim)}, expect_stdout="ok")
    assert out.stdout.count("raised:") == 3


# D5, D6: fork ------------------------------------------------------------------------------------------------------

# The parent forks CHILDREN times; each child runs `child()` and leaves through a normal interpreter exit
# (sys.exit: atexit handlers, finalisation, destructors). The parent waits for each with a timeout and reports.
FORK_HARNESS = """
import os, sys, time, signal, threading, traceback
import numpy as np
import fastreplay as fr

def fork_children(n, child, timeout=15.0, between=0.0):
    hung, failed = 0, 0
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(i)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            sys.exit(code)  # a normal exit: the destructors and atexit handlers run in the child
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                failed += os.waitstatus_to_exitcode(status) != 0
                break
            if time.monotonic() > deadline:
                hung += 1
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        time.sleep(between)
    print(f"children {n} hung {hung} failed {failed}", flush=True)
"""


def _check_children(out, n):
    assert not out.timed_out, out
    assert out.returncode == 0, out
    assert f"children {n} hung 0 failed 0" in out.stdout, out


def test_fork_with_live_prefetcher_child_gets_clear_error_and_exits():
    """D5: fork() while prefetch workers run. In the child, next() raises a RuntimeError that says why (the
    workers live in the parent) instead of hanging once the queue is drained, and the child's normal exit (or
    del, or close) does not hang in the prefetcher's destructor. The parent's prefetcher keeps working."""
    code = FORK_HARNESS + """
b = fr.PrioritizedReplayBuffer(1000, {"x": ((4,), np.float32)}, seed=0)
b.add(x=np.ones((1000, 4), np.float32))
it = b.prefetch(16, depth=4, threads=3, beta=0.4)
next(it)

def child(i):
    mode = i % 4
    if mode == 0:
        try:
            next(it)
        except RuntimeError as e:
            assert "fork" in str(e), e
        else:
            raise AssertionError("next() in the child did not raise")
        assert it.closed and it.ready == 0
    elif mode == 1:
        del globals()["it"]  # the destructor runs here
    elif mode == 2:
        it.close()
    # mode 3: leave it to the exit; the buffer itself keeps working in the child
    batch = b.sample(8, 0.4)
    b.update_priorities(batch.indices, np.ones(8))
    with b.prefetch(8, threads=2, beta=0.4) as fresh:  # a prefetcher made in the child works
        next(fresh)

fork_children(20, child)
assert next(it)["x"].shape == (16, 4)  # the parent's prefetcher is unaffected
it.close()
"""
    _check_children(run_isolated(code, timeout=240), 20)


def test_fork_while_learner_updates_priorities_children_do_not_deadlock():
    """D6: a learner thread updates priorities in a tight loop (holding the tree mutex much of the time) while
    prefetch workers sample (taking the block pool's mutex) and the main thread forks 20 times. Every child can
    sample, update priorities and add, finds root == sum of leaves, and exits. On the old build children
    inherited a locked mutex and hung."""
    code = FORK_HARNESS + """
b = fr.PrioritizedReplayBuffer(200_000, {"x": ((2,), np.float32)}, seed=0)
b.add(x=np.ones((200_000, 2), np.float32))
idx = np.arange(0, 200_000, 3)
prio = np.random.default_rng(0).random(len(idx)) + 0.1
stop = threading.Event()

def learner():
    while not stop.is_set():
        b.update_priorities(idx, prio)

t = threading.Thread(target=learner, daemon=True)
t.start()
it = b.prefetch(64, depth=2, threads=2, beta=0.4)
time.sleep(0.1)

def child(i):
    for _ in range(3):
        batch = b.sample(64, 0.4)
        b.update_priorities(batch.indices, np.full(64, 2.0))
        b.add(x=np.zeros((5, 2), np.float32))
    leaves = b._leaves()
    assert abs(b._total - leaves.sum()) <= 1e-9 * leaves.sum(), (b._total, leaves.sum())

fork_children(20, child, between=0.01)
stop.set(); t.join(); it.close()
"""
    _check_children(run_isolated(code, timeout=300), 20)


def test_fork_during_uniform_prefetch_child_can_sample_and_prefetch():
    """D6 (block pool): prefetch workers allocate batches from the pool while the main thread forks; a child then
    samples (which allocates from the same pool) and prefetches anew without deadlock."""
    code = FORK_HARNESS + """
b = fr.ReplayBuffer(5000, {"x": ((64,), np.float32)}, seed=0)
b.add(x=np.ones((5000, 64), np.float32))
its = [b.prefetch(256, depth=8, threads=4) for _ in range(2)]
stop = threading.Event()

def consumer(it):
    while not stop.is_set():
        next(it)

ts = [threading.Thread(target=consumer, args=(it,), daemon=True) for it in its]
[t.start() for t in ts]

def child(i):
    for _ in range(5):
        assert b.sample(256)["x"].shape == (256, 64)
    with b.prefetch(32, threads=2) as it:
        next(it)

fork_children(20, child)
stop.set(); [t.join() for t in ts]; [it.close() for it in its]
"""
    _check_children(run_isolated(code, timeout=240), 20)
