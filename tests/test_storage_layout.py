"""Storage layout (row groups): small rows packed into one record per transition (layout="auto", the default) and
one column per field (layout="columnar") store the same transitions and give the same batches, for every kind of
buffer; packed storage views are strided views of the records; checkpoints, pickles and shared memory keep it."""
import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest

import fastreplay as fr
from _rows import CARTPOLE, cartpole_rows

SMALL_IMAGE = {  # an image row of 1,200 bytes stays a column; the rest is packed into a 16-byte record
    "obs": ((3, 20, 20), np.uint8),
    "action": ((), np.int64),
    "reward": ((), np.float32),
    "next_obs": ((3, 20, 20), np.uint8),
    "done": ((), np.bool_),
}


def rows_for(fields, n, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for k, (shape, dt) in fields.items():
        dt = np.dtype(dt)
        if dt == np.bool_:
            out[k] = rng.random((n,) + shape) < 0.3
        elif dt.kind == "f":
            out[k] = rng.standard_normal((n,) + shape).astype(dt)
        else:
            out[k] = rng.integers(0, 100, (n,) + shape).astype(dt)
    return out


def test_cartpole_rows_share_one_64_byte_record():
    buf = fr.ReplayBuffer(100, CARTPOLE, seed=0)
    assert buf.layout == "auto"
    rows = cartpole_rows(0, 30)
    buf.add(**rows)
    st = buf.storage
    addresses = {}
    for k, v in st.items():
        assert v.strides[0] == 64 and not v.flags.c_contiguous, k
        np.testing.assert_array_equal(v, rows[k])
        addresses[k] = v.__array_interface__["data"][0]
    # all five fields lie inside one 64-byte record: their first rows are less than 64 bytes apart
    assert max(addresses.values()) - min(addresses.values()) < 64
    assert min(addresses.values()) % 64 == 0
    col = fr.ReplayBuffer(100, CARTPOLE, seed=0, layout="columnar")
    col.add(**rows)
    for k, v in col.storage.items():
        assert v.flags.c_contiguous, k
        np.testing.assert_array_equal(v, rows[k])


def test_images_stay_columns_and_small_fields_pack():
    buf = fr.ReplayBuffer(50, SMALL_IMAGE, seed=0)
    buf.add(**rows_for(SMALL_IMAGE, 20, 1))
    st = buf.storage
    assert st["obs"].flags.c_contiguous and st["next_obs"].flags.c_contiguous
    assert st["action"].strides[0] == st["reward"].strides[0] == st["done"].strides[0] == 16


def test_one_small_field_alone_is_a_column():
    buf = fr.ReplayBuffer(10, {"x": ((2,), np.float64), "img": ((400,), np.uint8)}, seed=0)
    buf.add(x=np.ones((3, 2)), img=np.zeros((3, 400), np.uint8))
    assert all(v.flags.c_contiguous for v in buf.storage.values())


def test_bad_layout_is_refused():
    with pytest.raises(ValueError, match="layout.*'auto'.*'columnar'.*'rows'"):
        fr.ReplayBuffer(10, CARTPOLE, layout="rows")
    with pytest.raises(ValueError, match="layout"):
        fr.PrioritizedReplayBuffer(10, CARTPOLE, layout=None)


def _same_batches(make, feed, draw, rounds=6):
    """Two buffers, packed and columnar, fed and sampled alike: every batch equal field by field."""
    a, b = make("auto"), make("columnar")
    for r in range(rounds):
        feed(a, r)
        feed(b, r)
        ba, bb = draw(a, r), draw(b, r)
        assert list(ba) == list(bb)
        for k in ba:
            np.testing.assert_array_equal(np.asarray(ba[k]), np.asarray(bb[k]), err_msg=k)
        np.testing.assert_array_equal(ba.indices, bb.indices)
    for k, v in a.storage.items() if a._task_quotas is None else ():
        np.testing.assert_array_equal(v, b.storage[k])
    return a, b


@pytest.mark.parametrize("fields", [CARTPOLE, SMALL_IMAGE], ids=["cartpole", "image"])
def test_uniform_same_batches_either_layout(fields):
    def feed(buf, r):
        buf.add(**rows_for(fields, 37, r))

    def draw(buf, r):
        got = buf.get(np.arange(min(len(buf), 9)))
        assert len(got) > 0
        return buf.sample(64)

    _same_batches(lambda lay: fr.ReplayBuffer(150, fields, seed=3, layout=lay), feed, draw)


def test_prioritized_same_batches_and_weights_either_layout():
    def feed(buf, r):
        buf.add(**rows_for(CARTPOLE, 50, r))

    def draw(buf, r):
        b = buf.sample(32, beta=0.5)
        buf.update_priorities(b.indices, np.arange(32, dtype=np.float64) + r)
        return b

    a, b = _same_batches(lambda lay: fr.PrioritizedReplayBuffer(120, CARTPOLE, seed=5, layout=lay), feed, draw)
    np.testing.assert_array_equal(a.priorities, b.priorities)


def test_episodic_same_batches_either_layout():
    fields = {"obs": ((2, 3), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
              "next_obs": ((2, 3), np.float32), "done": ((), np.bool_)}
    rng = np.random.default_rng(0)
    steps = [(rng.standard_normal((2, 2, 3)).astype(np.float32), rng.integers(0, 4, 2),
              rng.random(2).astype(np.float32), rng.standard_normal((2, 2, 3)).astype(np.float32),
              rng.random(2) < 0.15) for _ in range(300)]

    def feed(buf, r):
        for o, a, rew, nx, d in steps[r * 50:(r + 1) * 50]:
            buf.add(obs=o, action=a, reward=rew, next_obs=nx, done=d)

    def draw(buf, r):
        return buf.sample(40)

    a, b = _same_batches(lambda lay: fr.ReplayBuffer(64, fields, seed=2, num_envs=2, frame_stack=3, n_step=2,
                                                     gamma=0.9, layout=lay), feed, draw)
    sa, sb = a.sample_sequences(4, 5), b.sample_sequences(4, 5)
    for k in sa:
        np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)


def test_multi_task_same_batches_either_layout():
    def feed(buf, r):
        buf.add(**rows_for(CARTPOLE, 40, r), task=np.arange(40) % 3)

    def draw(buf, r):
        return buf.sample(30, tasks="balanced")

    _same_batches(lambda lay: fr.ReplayBuffer(90, CARTPOLE, seed=4, tasks=3, layout=lay), feed, draw)


@pytest.mark.parametrize("layout", ["auto", "columnar"])
def test_checkpoint_and_pickle_keep_layout_and_rows(tmp_path, layout):
    buf = fr.PrioritizedReplayBuffer(70, CARTPOLE, seed=1, layout=layout)
    buf.add(**cartpole_rows(0, 90))
    buf.update_priorities(np.arange(10), np.linspace(0.1, 3, 10))
    buf.save(tmp_path / "c.frb")
    others = (fr.PrioritizedReplayBuffer.load(tmp_path / "c.frb"), pickle.loads(pickle.dumps(buf)))
    b1 = buf.sample(16)
    for other in others:
        assert other.layout == layout
        for k, v in buf.storage.items():
            np.testing.assert_array_equal(v, other.storage[k])
            assert other.storage[k].strides == v.strides
        np.testing.assert_array_equal(other.priorities, buf.priorities)
        b2 = other.sample(16)
        np.testing.assert_array_equal(b1.indices, b2.indices)
        for k in b1:
            np.testing.assert_array_equal(b1[k], b2[k])


def test_checkpoint_without_layout_loads_packed(tmp_path):
    """Checkpoints written before layouts existed have no "layout" key: they load, packed by default."""
    buf = fr.ReplayBuffer(40, CARTPOLE, seed=1, layout="columnar")
    buf.add(**cartpole_rows(0, 25))
    buf.save(tmp_path / "c.frb")
    with zipfile.ZipFile(tmp_path / "c.frb") as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    del manifest["layout"]
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "old.frb", "w", compression=zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    old = fr.ReplayBuffer.load(tmp_path / "old.frb")
    assert old.layout == "auto" and old.storage["obs"].strides[0] == 64
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(v, old.storage[k])


def test_checkpoint_with_a_bad_layout_is_refused(tmp_path):
    buf = fr.ReplayBuffer(40, CARTPOLE, seed=1)
    buf.add(**cartpole_rows(0, 5))
    buf.save(tmp_path / "c.frb")
    with zipfile.ZipFile(tmp_path / "c.frb") as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["layout"] = "rows"
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "bad.frb", "w", compression=zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="layout"):
        fr.ReplayBuffer.load(tmp_path / "bad.frb")


@pytest.mark.parametrize("layout", ["auto", "columnar"])
def test_shared_storage_attaches_with_the_same_layout(layout):
    buf = fr.ReplayBuffer(60, CARTPOLE, seed=2, storage="shared", layout=layout)
    buf.add(**cartpole_rows(0, 20))
    other = pickle.loads(pickle.dumps(buf))
    assert other.layout == layout
    other.add(**cartpole_rows(20, 5))
    assert len(buf) == 25
    for k, v in buf.storage.items():
        np.testing.assert_array_equal(v, other.storage[k])
        np.testing.assert_array_equal(v, cartpole_rows(0, 25)[k])


def test_memmap_is_columnar(tmp_path):
    buf = fr.ReplayBuffer(30, CARTPOLE, seed=0, storage="memmap", path=tmp_path / "m")
    buf.add(**cartpole_rows(0, 10))
    assert all(v.flags.c_contiguous for v in buf.storage.values())


def test_strided_views_convert_to_torch_without_copy():
    torch = pytest.importorskip("torch")
    buf = fr.ReplayBuffer(20, CARTPOLE, seed=0)
    rows = cartpole_rows(0, 12)
    buf.add(**rows)
    view = buf.storage["obs"]
    with warnings.catch_warnings():  # storage views are read-only, which torch warns about
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(view)
    assert t.stride() == (16, 1)  # 64 bytes between rows, in float32 elements
    assert t.data_ptr() == view.__array_interface__["data"][0]
    np.testing.assert_array_equal(t.numpy(), rows["obs"])
