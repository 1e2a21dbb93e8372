"""Uniform replay: fastreplay.ReplayBuffer against the pure-Python fastreplay.reference.ReplayBuffer.

CartPole rows (obs float32[4], action int64, reward float32, next_obs float32[4], done bool) in a buffer filled to
capacity, at capacities 1e4, 1e5 and 1e6: add one transition through the keyword API, add 16 rows at once,
sample(256) (and 32, 1024 at 1e6). Atari rows (obs and next_obs uint8[4, 84, 84]) in a buffer of capacity 1e5
filled to 5e4: sample(32), compared with the physical floor, a plain copy of a large array in the same run.
"""
import itertools
import os

import numpy as np
import pytest

from .conftest import (ATARI_CAPACITY, ATARI_FILL, ATARI_FRAME_BYTES, CAPACITIES, IMPLS, atari_rows, cap_id,
                      cartpole_rows, one_cartpole_step, run)

impls = pytest.mark.parametrize("impl", list(IMPLS))
capacities = pytest.mark.parametrize("capacity", CAPACITIES, ids=cap_id)
CARTPOLE_ROW_BYTES = 4 * 4 + 8 + 4 + 4 * 4 + 1


def _cartpole(impl, capacity, op, **kw):
    return dict(group=f"cartpole {op} @ {cap_id(capacity)}", op=op, kind="cartpole", impl=impl,
                capacity=capacity, **kw)


# --- CartPole: add --------------------------------------------------------------------------------------------------

@capacities
@impls
def test_add_one(benchmark, buffers, impl, capacity):
    """One transition per call, as an env loop adds it: buf.add(obs=..., action=..., ...) with Python scalars."""
    buf = buffers.get(impl, "cartpole", capacity)
    run(benchmark, buf.add, **one_cartpole_step(), **_cartpole(impl, capacity, "add(1)", rows=1))


@capacities
@impls
def test_add_one_numpy_scalars(benchmark, buffers, impl, capacity):
    """As test_add_one, with numpy scalars for action, reward and done (np.int64, np.float32, np.bool_)."""
    buf = buffers.get(impl, "cartpole", capacity)
    run(benchmark, buf.add, **one_cartpole_step(numpy_scalars=True),
        **_cartpole(impl, capacity, "add(1) numpy scalars", rows=1))


@capacities
@impls
def test_add_16(benchmark, buffers, impl, capacity):
    """16 rows in one call (a vector env's step): every field with a leading axis of 16."""
    buf = buffers.get(impl, "cartpole", capacity)
    rows = cartpole_rows(16, seed=2)
    run(benchmark, buf.add, **rows, **_cartpole(impl, capacity, "add(16)", rows=16))


# --- CartPole: sample -----------------------------------------------------------------------------------------------

@capacities
@impls
def test_sample_256(benchmark, buffers, impl, capacity):
    buf = buffers.get(impl, "cartpole", capacity)
    run(benchmark, buf.sample, 256,
        **_cartpole(impl, capacity, "sample(256)", rows=256, nbytes=256 * CARTPOLE_ROW_BYTES))


@pytest.mark.parametrize("batch_size", [32, 1024])
@impls
def test_sample_batch_sizes_1e6(benchmark, buffers, impl, batch_size):
    capacity = 1_000_000
    buf = buffers.get(impl, "cartpole", capacity)
    run(benchmark, buf.sample, batch_size,
        **_cartpole(impl, capacity, f"sample({batch_size})", rows=batch_size,
                    nbytes=batch_size * CARTPOLE_ROW_BYTES))


@impls
def test_sample_256_out_1e6(benchmark, buffers, impl):
    """sample(256, out=batch): refills a batch the caller keeps, so nothing is allocated per call."""
    capacity = 1_000_000
    buf = buffers.get(impl, "cartpole", capacity)
    out = buf.sample(256)
    run(benchmark, buf.sample, 256, out=out,
        **_cartpole(impl, capacity, "sample(256, out=)", rows=256, nbytes=256 * CARTPOLE_ROW_BYTES))


# --- Atari: sample against the memory-copy floor ----------------------------------------------------------------------

ATARI_GROUP = f"atari sample(32) @ {cap_id(ATARI_CAPACITY)}, {ATARI_FILL:.0e} stored".replace("e+0", "e")
ATARI_SAMPLE_BYTES = 32 * 2 * ATARI_FRAME_BYTES  # obs + next_obs rows moved per sample(32)
_atari = dict(kind="atari", capacity=ATARI_CAPACITY)


COPY_BYTES = 256 * 2**20
COPY_PIECE = 4 * 2**20


@pytest.fixture(scope="module")
def copy_arrays():
    src = np.ones(COPY_BYTES, np.uint8)  # both faulted in before any timing
    dst = np.zeros(COPY_BYTES, np.uint8)
    yield src, dst


def test_memcpy_floor(benchmark, copy_arrays):
    """The floor of the issue: np.copyto of a 256 MiB contiguous array into another one (both faulted in)."""
    src, dst = copy_arrays
    benchmark.group = "atari plain copy 256 MiB"
    benchmark.extra_info.update(op="memcpy 256 MiB", kind="floor", impl="numpy", capacity=0, rows=0, bytes=COPY_BYTES)
    benchmark.pedantic(np.copyto, args=(dst, src), rounds=60, iterations=1, warmup_rounds=2)
    benchmark.extra_info["load1"] = os.getloadavg()[0]
    assert dst[-1] == 1


def test_memcpy_floor_pieces(benchmark, copy_arrays):
    """The same 256 MiB copy timed in 4 MiB pieces (each round copies the next piece, cycling through the arrays):
    a piece takes well under a scheduler time slice, so on a loaded machine its median is rarely preempted."""
    src, dst = copy_arrays
    offsets = range(0, COPY_BYTES, COPY_PIECE)
    pieces = itertools.cycle([(dst[o:o + COPY_PIECE], src[o:o + COPY_PIECE]) for o in offsets])

    def copy_piece():
        d, s = next(pieces)
        np.copyto(d, s)

    benchmark.group = "atari plain copy 256 MiB"
    benchmark.extra_info.update(op="memcpy 256 MiB in 4 MiB pieces", kind="floor", impl="numpy", capacity=0, rows=0,
                                bytes=COPY_PIECE)
    benchmark.pedantic(copy_piece, rounds=10 * (COPY_BYTES // COPY_PIECE), iterations=1, warmup_rounds=8)
    benchmark.extra_info["load1"] = os.getloadavg()[0]


@impls
def test_atari_sample_32(benchmark, buffers, impl):
    buf = buffers.get(impl, "atari", ATARI_CAPACITY)
    assert len(buf) == ATARI_FILL  # the add benchmarks below run after this one
    run(benchmark, buf.sample, 32, group=ATARI_GROUP, op="sample(32)", impl=impl, rows=32,
        nbytes=ATARI_SAMPLE_BYTES, **_atari)


@impls
def test_atari_sample_32_out(benchmark, buffers, impl):
    """sample(32, out=batch): the same gather into a batch the caller keeps (no 1.8 MB allocation per call)."""
    buf = buffers.get(impl, "atari", ATARI_CAPACITY)
    out = buf.sample(32)
    run(benchmark, buf.sample, 32, out=out, group=ATARI_GROUP, op="sample(32, out=)", impl=impl, rows=32,
        nbytes=ATARI_SAMPLE_BYTES, **_atari)


def test_atari_numpy_take_floor(benchmark, buffers):
    """The same bytes gathered by numpy: np.take of 32 random rows of obs and next_obs (fastreplay's zero-copy
    storage views) into preallocated outputs. Index sets cycle through a pool of 64, so rows come mostly from DRAM,
    as they do for sample."""
    buf = buffers.get("fastreplay", "atari", ATARI_CAPACITY)
    obs, next_obs = buf.storage["obs"], buf.storage["next_obs"]
    rng = np.random.default_rng(3)
    pool = itertools.cycle([rng.integers(0, len(buf), 32) for _ in range(64)])
    o1 = np.empty((32, *obs.shape[1:]), obs.dtype)
    o2 = np.empty_like(o1)

    def gather():
        idx = next(pool)
        np.take(obs, idx, axis=0, out=o1)
        np.take(next_obs, idx, axis=0, out=o2)

    run(benchmark, gather, group=ATARI_GROUP, op="np.take, same rows", impl="numpy", rows=32,
        nbytes=ATARI_SAMPLE_BYTES, **_atari)


def test_atari_contiguous_same_bytes(benchmark, buffers):
    """The same number of bytes as sample(32) copied contiguously: consecutive 28 KB x 64 slices of the stored obs
    column (1.4 GB, read from DRAM) into one fixed destination (which stays in cache, like a pooled batch)."""
    buf = buffers.get("fastreplay", "atari", ATARI_CAPACITY)
    obs = buf.storage["obs"]
    rows = 64  # 64 rows of obs = the bytes of 32 rows of obs + 32 rows of next_obs
    pieces = itertools.cycle([obs[o:o + rows] for o in range(0, len(obs) - rows, rows)])
    dst = np.empty((rows, *obs.shape[1:]), obs.dtype)

    def copy():
        np.copyto(dst, next(pieces))

    run(benchmark, copy, group=ATARI_GROUP, op="contiguous copy, same bytes", impl="numpy", rows=32,
        nbytes=ATARI_SAMPLE_BYTES, **_atari)


@impls
def test_atari_add_one(benchmark, buffers, impl):
    """One Atari transition per call (2 x 28 KB frames). Fixed rounds, so the buffer grows from 5e4 only to 5.2e4
    rows and the reference's per-row copies stay small; pages of fresh rows are faulted in during the timing."""
    buf = buffers.get(impl, "atari", ATARI_CAPACITY)
    row = {k: v[0] for k, v in atari_rows(1, seed=4).items()}
    row.update(action=int(row["action"]), reward=float(row["reward"]), done=bool(row["done"]))
    benchmark.group = f"atari add(1) @ {cap_id(ATARI_CAPACITY)}"
    benchmark.extra_info.update(op="add(1)", impl=impl, rows=1, bytes=2 * ATARI_FRAME_BYTES, **_atari)
    benchmark.pedantic(buf.add, kwargs=row, rounds=2000, iterations=1, warmup_rounds=10)
    benchmark.extra_info["load1"] = os.getloadavg()[0]
