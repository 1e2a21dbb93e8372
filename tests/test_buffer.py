"""The uniform ReplayBuffer: storage, ring wrap-around, sampling, zero-copy views and lifetimes."""
import gc
import pickle

import numpy as np
import pytest
from scipy import stats

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows, check_self_consistent

ALL_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64, np.complex64, np.complex128]


def test_add_one_and_many_then_storage_in_slot_order():
    buf = fr.ReplayBuffer(5, CARTPOLE, seed=0)
    rows = cartpole_rows(0, 3)
    buf.add(**{k: v[0] for k, v in rows.items()})
    buf.add(**{k: v[1:] for k, v in rows.items()})
    assert len(buf) == 3 and buf.next_index == 3 and not buf.full
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(v, rows[k])


def test_wraparound_inside_one_call_matches_modulo_indexing():
    cap = 7
    buf = fr.ReplayBuffer(cap, CARTPOLE, seed=0)
    expected = {k: np.zeros((cap,) + s, dt) for k, (s, dt) in CARTPOLE.items()}
    start = 0
    for n in [3, 5, 1, 9, 2, 20, 4]:  # 9 and 20 wrap within the call; 20 > capacity keeps the last 7
        rows = cartpole_rows(start, n)
        buf.add(**rows)
        for i in range(n):
            for k in expected:
                expected[k][(start + i) % cap] = rows[k][i]
        start += n
    assert len(buf) == cap and buf.full and buf.next_index == start % cap and buf.total_added == start
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(v, expected[k])


def test_positional_add_is_field_order():
    buf = fr.ReplayBuffer(4, CARTPOLE)
    r = cartpole_rows(10, 2)
    buf.add(r["obs"], r["action"], r["reward"], r["next_obs"], r["done"])
    buf.add(r["obs"][0], action=r["action"][0], reward=r["reward"][0], next_obs=r["next_obs"][0], done=r["done"][0])
    assert buf.storage["action"].tolist() == [10, 11, 10]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3, 4)])
def test_every_dtype_and_shape_round_trips(dtype, shape):
    buf = fr.ReplayBuffer(6, {"x": (shape, dtype)}, seed=1)
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 100, size=(9,) + shape)).astype(dtype)
    buf.add(x=data[:4])
    buf.add(x=data[4:])
    assert buf.storage["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(buf.storage["x"][[4, 5, 0, 1, 2, 3]], data[[4, 5, 6, 7, 8, 3]])
    b = buf.sample(16)
    assert b["x"].shape == (16,) + shape and b["x"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(b["x"], buf.storage["x"][b.indices])


def test_image_rows_uint8():
    shape = (4, 84, 84)
    buf = fr.ReplayBuffer(50, {"obs": (shape, np.uint8), "action": ((), np.int64)}, seed=0)
    imgs = np.random.default_rng(0).integers(0, 256, (60,) + shape, dtype=np.uint8)
    buf.add(obs=imgs, action=np.arange(60))
    b = buf.sample(32)
    np.testing.assert_array_equal(b["obs"], imgs[b["action"]])
    assert np.all(b["action"] >= 10)


def test_sample_rows_are_stored_rows_and_batch_type():
    buf = fr.ReplayBuffer(100, CARTPOLE, seed=3)
    buf.add(**cartpole_rows(0, 60))
    b = buf.sample(256)
    assert isinstance(b, fr.Batch) and isinstance(b, dict)
    assert b.indices.dtype == np.int64 and b.indices.shape == (256,)
    assert b.weights is None
    assert set(b) == set(CARTPOLE)
    k = check_self_consistent(b)
    np.testing.assert_array_equal(k, b.indices)  # row k was written to slot k
    assert b.indices.min() >= 0 and b.indices.max() < 60


def test_sampling_is_uniform_chi_square():
    n, draws = 50, 200_000
    buf = fr.ReplayBuffer(64, {"x": ((), np.int32)}, seed=12345)
    buf.add(x=np.arange(n, dtype=np.int32))
    counts = np.zeros(n)
    for _ in range(draws // 1000):
        counts += np.bincount(buf.sample(1000).indices, minlength=n)
    chi2, p = stats.chisquare(counts)
    assert p > 1e-4, (chi2, p)


def test_seeded_reproducibility_and_different_seeds():
    def run(seed):
        buf = fr.ReplayBuffer(1000, CARTPOLE, seed=seed)
        buf.add(**cartpole_rows(0, 700))
        return [buf.sample(64).indices.copy() for _ in range(5)]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    assert not np.array_equal(a[0], a[1])  # successive calls differ


def test_sample_out_refills_in_place():
    buf = fr.ReplayBuffer(100, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 100))
    b = buf.sample(32)
    obs_id, idx_id = id(b["obs"]), id(b.indices)
    first = b.indices.copy()
    b2 = buf.sample(32, out=b)
    assert b2 is b and id(b["obs"]) == obs_id and id(b.indices) == idx_id
    assert not np.array_equal(first, b.indices)
    check_self_consistent(b)
    with pytest.raises(ValueError, match=r"sample: out\['obs'\] must be float32 with shape \(16, 4\)"):
        buf.sample(16, out=b)


def test_storage_is_zero_copy_read_only_and_outlives_buffer():
    buf = fr.ReplayBuffer(10, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 4))
    v1, v2 = buf.storage["obs"], buf.storage["obs"]
    assert np.shares_memory(v1, v2)
    assert not v1.flags.writeable
    with pytest.raises(ValueError):
        v1[0, 0] = 1.0
    buf.add(**cartpole_rows(100, 1))  # the view aliases the buffer: writes show through
    full = buf.storage["obs"]
    assert full.shape == (5, 4) and np.shares_memory(full, v1)
    del buf
    gc.collect()
    np.testing.assert_array_equal(full[4], [100, 101, 102, 103])


def test_batch_owns_memory_and_survives_buffer_and_later_adds():
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 8))
    b = buf.sample(16)
    snapshot = {k: v.copy() for k, v in b.items()}
    assert not any(np.shares_memory(b[k], v) for k, v in buf.storage.items())
    buf.add(**cartpole_rows(1000, 8))  # overwrite every slot
    for _ in range(10):
        buf.sample(16)  # reuse of pooled memory must not touch b
    del buf
    gc.collect()
    for k in snapshot:
        np.testing.assert_array_equal(b[k], snapshot[k])


def test_to_torch_is_zero_copy_on_cpu():
    torch = pytest.importorskip("torch")
    buf = fr.ReplayBuffer(8, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 8))
    b = buf.sample(4)
    t = b.to_torch("cpu")
    assert t["obs"].dtype == torch.float32 and tuple(t["obs"].shape) == (4, 4)
    assert t["obs"].data_ptr() == b["obs"].ctypes.data
    assert t["done"].dtype == torch.bool and t["indices"].dtype == torch.int64


def test_get_returns_requested_rows():
    buf = fr.ReplayBuffer(10, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 10))
    b = buf.get([3, 3, 9, 0])
    assert b["action"].tolist() == [3, 3, 9, 0] and b.indices.tolist() == [3, 3, 9, 0]
    check_self_consistent(b)


def test_clear_empties_and_keeps_working():
    buf = fr.ReplayBuffer(5, CARTPOLE, seed=0)
    buf.add(**cartpole_rows(0, 7))
    buf.clear()
    assert len(buf) == 0 and buf.next_index == 0
    with pytest.raises(ValueError, match="empty"):
        buf.sample(1)
    buf.add(**cartpole_rows(50, 2))
    assert buf.storage["action"].tolist() == [50, 51]
    assert set(buf.sample(20).indices.tolist()) <= {0, 1}


def test_repr_and_fields():
    buf = fr.ReplayBuffer(5, {"obs": (4, "float32"), "done": "bool"})
    assert repr(buf) == "ReplayBuffer(size=0, capacity=5, fields={obs: float32[4], done: bool[]})"
    assert buf.fields == {"obs": ((4,), np.dtype(np.float32)), "done": ((), np.dtype(np.bool_))}


def test_casting_rules():
    buf = fr.ReplayBuffer(5, {"f": ((), np.float32), "i": ((), np.int8), "u": ((2,), np.uint8)})
    buf.add(f=1, i=True, u=[1, 2])  # Python values of a compatible kind
    buf.add(f=np.float64(2.5), i=np.int64(3), u=np.array([3, 4], np.uint8))  # numpy: same_kind
    buf.add(f=np.ones(1, np.float64), i=np.ones(1, np.int16), u=np.ones((1, 2), np.uint8))
    assert buf.storage["f"].tolist() == [1.0, 2.5, 1.0] and buf.storage["i"].tolist() == [1, 3, 1]


def test_non_contiguous_swapped_and_read_only_inputs_are_handled():
    buf = fr.ReplayBuffer(10, {"x": ((3,), np.float32), "y": ((), np.int64)})
    base = np.arange(30, dtype=np.float32).reshape(5, 6)
    x = base[:, ::2]  # non-contiguous
    y = np.arange(5, dtype=">i8")  # non-native byte order
    x_ro = x.copy()
    x_ro.flags.writeable = False
    buf.add(x=x, y=y)
    buf.add(x=x_ro, y=np.arange(5, 10))
    np.testing.assert_array_equal(buf.storage["x"][:5], x)
    np.testing.assert_array_equal(buf.storage["y"], np.arange(10))


def test_pickle_round_trip_of_buffer_and_batch():
    buf = fr.ReplayBuffer(5, CARTPOLE, seed=2)
    buf.add(**cartpole_rows(0, 7))
    again = pickle.loads(pickle.dumps(buf))
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(again.storage[k], v)
    np.testing.assert_array_equal(again.sample(8).indices, buf.sample(8).indices)
    b = pickle.loads(pickle.dumps(buf.sample(3)))
    check_self_consistent(b)


def test_module_stub_lists_the_same_names():
    """_core.pyi declares exactly what the compiled module exports: its names, and each class's members."""
    import ast
    import pathlib

    import fastreplay._core as core

    tree = ast.parse(pathlib.Path(fr.__file__).with_name("_core.pyi").read_text())

    def declared(body):
        names = set()
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign):
                names.add(node.target.id)
        return names

    def exported(members):
        dunder = {"__len__", "__next__", "__init__"}  # the special methods the stub declares
        return {n for n in members if not n.startswith("__") or n in dunder} - {"_pybind11_conduit_v1_"}

    assert declared(tree.body) == exported(dir(core))
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        assert declared(cls.body) == exported(vars(getattr(core, cls.name))), cls.name
    assert (pathlib.Path(fr.__file__).with_name("py.typed")).exists()
