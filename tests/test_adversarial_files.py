"""Files are untrusted data (reliability review, area 4): checkpoints and memmap directories crafted or damaged in
the test. Every size in a manifest is checked against the file and a sane bound before anything is allocated, only
stored members are read, one buffer opens a memmap directory at a time, a missing or truncated column file is an
error (never zeros), and save never puts an unloadable file in place of a good one."""
import io
import json
import os
import pickle
import re
import warnings
import zipfile

import numpy as np
import pytest

import fastreplay as fr
from _isolated import assert_clean_exit, run_isolated
from _rows import CARTPOLE, cartpole_rows

K = {"k": ((), np.int64)}


# --- helpers: read a checkpoint's members, write a crafted one -------------------------------------------------

def members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def manifest_of(path):
    return json.loads(members(path)["manifest.json"])


def npy(array, fortran=False):
    bio = io.BytesIO()
    np.lib.format.write_array(bio, np.asfortranarray(array) if fortran else np.ascontiguousarray(array))
    return bio.getvalue()


def write_checkpoint(path, parts, compress=()):
    """parts: {member: bytes | dict (JSON) | ndarray (.npy)}; members named in `compress` are DEFLATEd."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in parts.items():
            if isinstance(data, dict):
                data = json.dumps(data).encode()
            elif isinstance(data, np.ndarray):
                data = npy(data)
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)


def saved(tmp_path, cls=fr.ReplayBuffer, capacity=8, rows=5, name="good", **kw):
    buf = cls(capacity, K, seed=0, **kw)
    if rows:
        buf.add(k=np.arange(rows))
    path = tmp_path / name
    buf.save(path)
    return path


def edited(tmp_path, path, name="bad", manifest=None, **replace):
    """A copy of checkpoint `path` with its manifest changed by `manifest(m)` and members replaced."""
    parts = members(path)
    m = json.loads(parts["manifest.json"])
    if manifest is not None:
        manifest(m)
    parts["manifest.json"] = m
    for member, data in replace.items():
        parts[member.replace("__", "/").replace("_npy", ".npy")] = data
    out = tmp_path / name
    write_checkpoint(out, parts)
    return out


BAD = "is not a valid fastreplay checkpoint"


# --- D10: save while another thread adds --------------------------------------------------------------------------

class _AddingFile(io.BytesIO):
    """A file that runs one add the first time the checkpoint writes a column: a concurrent add, deterministically."""

    def __init__(self, buf):
        super().__init__()
        self.buf, self.done = buf, False

    def write(self, data):
        if not self.done and self.tell() > 0:
            self.done = True
            self.buf.add(k=np.arange(3))
        return super().write(data)


def test_a_checkpoint_written_during_an_add_is_refused_not_broken(tmp_path):  # D10
    from fastreplay import _checkpoint

    buf = fr.ReplayBuffer(64, K, seed=0)
    buf.add(k=np.arange(10))
    f = _AddingFile(buf)
    try:
        _checkpoint.write(buf, f)
    except RuntimeError as e:
        assert "must not run concurrently with add" in str(e)
        return
    path = tmp_path / "c"
    path.write_bytes(f.getvalue())
    fr.ReplayBuffer.load(path)  # b9394b4 wrote a file that does not load


def test_save_while_another_thread_adds_never_replaces_a_good_checkpoint(tmp_path):  # D10
    assert_clean_exit(r"""
        import sys, threading, numpy as np, fastreplay as fr
        path = sys.argv[1]
        buf = fr.ReplayBuffer(50_000, {"obs": ((6,), np.int64)}, seed=0)
        buf.add(obs=np.zeros((50_000, 6), np.int64))
        buf.save(path)
        stop = False
        def adder():
            rows = np.ones((500, 6), np.int64)
            while not stop:
                buf.add(obs=rows)
        t = threading.Thread(target=adder); t.start()
        refused = 0
        try:
            for _ in range(8):
                try:
                    buf.save(path)
                except RuntimeError as e:
                    assert "must not run concurrently with add" in str(e), e
                    refused += 1
                fr.ReplayBuffer.load(path)  # whatever happened, the file in place loads
        finally:
            stop = True; t.join()
        print("refused", refused)
    """, timeout=120, args=[str(tmp_path / "ckpt")])


# --- D11: one buffer per memmap directory -------------------------------------------------------------------------

def test_a_memmap_directory_opens_in_one_buffer_at_a_time(tmp_path):  # D11
    d = tmp_path / "mm"
    buf = fr.ReplayBuffer(16, K, storage="memmap", path=d)
    buf.add(k=np.arange(3))
    out = run_isolated("""
        import sys, numpy as np, fastreplay as fr
        try:
            fr.ReplayBuffer(16, {"k": ((), np.int64)}, storage="memmap", path=sys.argv[1])
        except RuntimeError as e:
            print("refused:", e)
        else:
            print("opened")
    """, timeout=60, args=[str(d)])
    assert out.returncode == 0, out
    assert "refused:" in out.stdout and str(d) in out.stdout and f"process id {os.getpid()}" in out.stdout, out
    with pytest.raises(RuntimeError, match="is in use"):  # a second buffer in this process too
        fr.ReplayBuffer(16, K, storage="memmap", path=d)
    del buf  # releases the lock
    again = fr.ReplayBuffer(16, K, storage="memmap", path=d)
    assert len(again) == 3


def test_two_processes_adding_to_one_directory_cannot_happen(tmp_path):  # D11: the review's data-loss scenario
    d = str(tmp_path / "mm")
    code = """
        import sys, time, numpy as np, fastreplay as fr
        try:
            b = fr.ReplayBuffer(1000, {"k": ((), np.int64)}, storage="memmap", path=sys.argv[1])
        except RuntimeError:
            print("refused"); sys.exit(0)
        print("opened", flush=True)
        for i in range(1000):
            b.add(k=[int(sys.argv[2])])
        time.sleep(1.0)
        b.flush()
    """
    import subprocess
    import sys
    import textwrap

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), d, str(v)], stdout=subprocess.PIPE,
                              text=True, env=env) for v in (1, 2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["opened", "refused"], outs
    b = fr.ReplayBuffer(1000, K, storage="memmap", path=d)
    assert len(b) == 1000 and len(set(b.storage["k"].tolist())) == 1  # all rows of one writer


# --- D12, D13, D30: damaged memmap directories ---------------------------------------------------------------------

def memmap_dir(tmp_path, n=10):
    d = tmp_path / "mm"
    b = fr.ReplayBuffer(10, CARTPOLE, seed=0, storage="memmap", path=d)
    b.add(**cartpole_rows(1, n))
    b.flush()
    del b
    return d


@pytest.mark.parametrize("damage", ["delete", "truncate0", "truncate", "seq"])
def test_a_missing_or_truncated_column_file_is_an_error_not_zeros(tmp_path, damage):  # D12
    d = memmap_dir(tmp_path)
    name = "seq.bin" if damage == "seq" else "field-0.bin"
    f = d / name
    if damage == "delete":
        f.unlink()
    else:
        size = 0 if damage in ("truncate0", "seq") else f.stat().st_size - 4
        os.truncate(f, size)
    # isolated: b9394b4 crashed on one of these (a buffer half built by a failed map)
    out = run_isolated(OPEN_MEMMAP, timeout=60, args=[str(d)])
    assert out.returncode == 0, out
    assert re.search(rf"ValueError: .*damaged memmap storage: {name} (is missing|has \d+ bytes, expected \d+)",
                     out.stdout), out
    assert not f.exists() or f.stat().st_size < 160  # nothing was recreated or grown


def test_data_files_without_a_manifest_are_refused(tmp_path):  # D13
    d = memmap_dir(tmp_path)
    (d / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"no manifest.json but holds data files \(field-0.bin, .*seq.bin\)"):
        fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=d)
    for f in d.glob("*.bin"):  # the documented way out: remove them
        f.unlink()
    b = fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=d)
    b.add(**cartpole_rows(100, 3))
    assert len(b) == 3 and b.storage["action"].tolist() == [100, 101, 102]


@pytest.mark.parametrize("edit, match", ids=["no-base", "stream-1", "seed-abc", "base-3", "base-float", "max_all_time"], argvalues=[
    (lambda m: m.pop("base"), "has no field 'base'"),
    (lambda m: m.update(stream=-1), r"'stream' must be an integer in \[0, 18446744073709551615\], got -1"),
    (lambda m: m.update(seed="abc"), r"'seed' must be an integer in \[0, 9223372036854775807\], got 'abc'"),
    (lambda m: m.update(base=3), "'base' must be a multiple of the capacity 10, got 3"),
    (lambda m: m.update(base=1.5), "'base' must be an integer"),
    (lambda m: m.update(max_all_time="x"), "'max_all_time' must be a finite number >= 0"),
])
def test_edited_memmap_manifests_give_a_clear_error(tmp_path, edit, match):  # D30
    d = memmap_dir(tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    out = run_isolated(OPEN_MEMMAP, timeout=60, args=[str(d)])  # b9394b4 crashed on one of these
    assert out.returncode == 0, out
    assert out.stdout.startswith("ValueError:") and re.search(match, out.stdout), out


OPEN_MEMMAP = """
import sys, fastreplay as fr
from _rows import CARTPOLE
try:
    b = fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=sys.argv[1])
except Exception as e:
    print(f"{type(e).__name__}: {e}")
else:
    print("opened, obs[:, 0] =", b.storage["obs"][:, 0].tolist())
"""


def test_a_deeply_nested_memmap_manifest_is_refused(tmp_path):  # D30 (and D29's RecursionError)
    d = memmap_dir(tmp_path)
    (d / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nests 100000 levels deep"):
        fr.ReplayBuffer(10, CARTPOLE, storage="memmap", path=d)


# --- D14: a published slot after never-written ones ----------------------------------------------------------------

def test_reopen_repairs_slots_reserved_but_never_written(tmp_path):  # D14
    d = tmp_path / "mm"
    b = fr.ReplayBuffer(8, K, storage="memmap", path=d)
    b.add(k=[1, 2, 3, 4])
    b.flush()
    del b
    # writer B published ticket 7 (k=8) before writer A claimed tickets 4-6, then the process died
    np.memmap(d / "field-0.bin", np.int64, "r+")[7] = 8
    np.memmap(d / "seq.bin", np.uint64, "r+")[7] = 2
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = fr.ReplayBuffer(8, K, storage="memmap", path=d)
    assert any("3 row(s) were being written" in str(x.message) for x in w), [str(x.message) for x in w]
    k = b.storage["k"].tolist()
    assert len(b) == 8 and k[:4] == [1, 2, 3, 4] and k[7] == 8
    assert set(k) <= {1, 2, 3, 4, 8}, k  # every stored row is one real transition: no zeros
    assert b.generations(np.arange(8)).tolist() == [1] * 8


def test_reopen_refuses_impossible_sequence_numbers(tmp_path):  # D14 (the file is untrusted)
    d = tmp_path / "mm"
    b = fr.ReplayBuffer(8, K, storage="memmap", path=d)
    b.add(k=[1])
    del b
    np.memmap(d / "seq.bin", np.uint64, "r+")[3] = 2**64 - 2
    with pytest.raises(ValueError, match="seq.bin: reopen: slot 3 holds an impossible sequence number"):
        fr.ReplayBuffer(8, K, storage="memmap", path=d)


# --- D15: impossible ring states in a checkpoint --------------------------------------------------------------------

@pytest.mark.parametrize("seq, match", ids=["review", "gen2", "slot7", "unwritten", "odd"], argvalues=[
    ([2] * 8, "slot 5 is not stored"),                      # the review's case: generation 1 beyond the cursor
    ([4, 2, 2, 2, 2, 0, 0, 0], "slot 0 has generation 2, beyond the cursor 5"),
    ([2, 2, 2, 2, 2, 0, 0, 6], "slot 7 is not stored"),
    ([2, 2, 2, 2, 0, 0, 0, 0], "slot 4 is stored but unwritten"),
    ([2, 2, 3, 2, 2, 0, 0, 0], "slot 2 was saved in the middle of a write"),
])
def test_ring_states_no_buffer_could_reach_are_refused(tmp_path, seq, match):  # D15
    path = edited(tmp_path, saved(tmp_path), seq_npy=np.array(seq, np.uint64))
    with pytest.raises(ValueError, match=match):
        fr.ReplayBuffer.load(path)


def test_reachable_ring_states_still_load(tmp_path):  # D15: the exact bound accepts every real state
    buf = fr.ReplayBuffer(8, K, seed=0)
    for n, then_clear in [(5, False), (7, False), (9, True), (3, False), (13, False), (2, True), (1, False)]:
        buf.add(k=np.arange(n))
        if then_clear:
            buf.clear()
        buf.save(tmp_path / "c")
        back = fr.ReplayBuffer.load(tmp_path / "c")
        assert len(back) == len(buf) and back.next_index == buf.next_index
        np.testing.assert_array_equal(back.generations(np.arange(len(buf))), buf.generations(np.arange(len(buf))))
        back.add(k=[100, 101, 102])
        buf2 = fr.ReplayBuffer.load(tmp_path / "c")
        buf2.add(k=[100, 101, 102])
        assert 100 in back.storage["k"] and len(back) == len(buf2)


# --- D16, D17: sizes checked before allocating; stored members only -------------------------------------------------

MEMORY_CAPPED = r"""
import resource, sys, numpy as np, fastreplay as fr
path = sys.argv[1]
vm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")][0] * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))  # 256 MiB more, at most
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    fr.PrioritizedReplayBuffer.load(path) if "prio" in path else fr.ReplayBuffer.load(path)
except ValueError as e:
    print("ValueError:", e)
except MemoryError as e:
    print("MemoryError:", e)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10
print("grown MiB", grown)
assert grown < 64, grown
"""


def test_a_tiny_checkpoint_claiming_a_huge_capacity_is_refused_before_allocating(tmp_path):  # D16
    path = edited(tmp_path, saved(tmp_path, fr.PrioritizedReplayBuffer, rows=3), name="prio-huge",
                  manifest=lambda m: m.update(capacity=2 * 10**9))
    assert path.stat().st_size < 4096
    out = run_isolated(MEMORY_CAPPED, timeout=60, args=[str(path)])
    assert out.returncode == 0, out
    assert "ValueError:" in out.stdout and "member seq.npy has" in out.stdout, out


def test_compressed_members_are_refused(tmp_path):  # D17
    good = saved(tmp_path)
    for member in ("seq.npy", "fields/k.npy", "manifest.json"):
        bad = tmp_path / "deflated"
        write_checkpoint(bad, members(good), compress=(member,))
        with pytest.raises(ValueError, match=rf"member {member} is compressed .*stored uncompressed"):
            fr.ReplayBuffer.load(bad)


def test_a_zip_bomb_is_refused_before_inflating(tmp_path):  # D17
    capacity = 40_000_000  # seq.npy: 320 MB of zeros, deflated to about 300 KB
    parts = members(saved(tmp_path, capacity=8, rows=0))
    m = json.loads(parts["manifest.json"])
    m["capacity"] = capacity
    path = tmp_path / "bomb"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", json.dumps(m))
        z.writestr("fields/k.npy", parts["fields/k.npy"])
        info = zipfile.ZipInfo("seq.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_2_0(fh, {"descr": "<u8", "fortran_order": False, "shape": (capacity,)})
            zeros = bytes(16 << 20)
            for _ in range(capacity * 8 // len(zeros)):
                fh.write(zeros)
    assert path.stat().st_size < 2 << 20
    out = run_isolated(MEMORY_CAPPED, timeout=60, args=[str(path)])
    assert out.returncode == 0, out
    assert "ValueError:" in out.stdout and "is compressed" in out.stdout, out


def test_members_must_have_the_size_the_manifest_implies(tmp_path):  # D16
    good = saved(tmp_path)
    for edit, member in [(lambda m: m.update(capacity=10**6), "seq.npy"),
                         (lambda m: m.update(fields={"k": [[1000], "<i8"]}), "fields/k.npy")]:
        with pytest.raises(ValueError, match=rf"member {member} has \d+ bytes; the manifest implies \d+ bytes"):
            fr.ReplayBuffer.load(edited(tmp_path, good, manifest=edit))
    # a small mismatch passes the size bound and is caught by the member's own header
    with pytest.raises(ValueError, match=r"member seq.npy holds uint64\[7\], expected uint64\[8\]"):
        fr.ReplayBuffer.load(edited(tmp_path, good, seq_npy=np.zeros(7, np.uint64)))


# --- D29: malformed checkpoint manifests ------------------------------------------------------------------------

@pytest.mark.parametrize("edit, match", ids=["no-alpha", "no-seed", "fields-list", "cap-float", "cap-huge", "cap-bool", "size", "state-list", "cursor-str", "base", "dtype", "shape", "spec", "alpha-str", "stale", "max_priority", "class"], argvalues=[
    (lambda m: m.pop("alpha"), "has no field 'alpha'"),
    (lambda m: m["state"].pop("seed"), "has no field 'state.seed'"),
    (lambda m: m.update(fields=[["k", [], "<i8"]]), "'fields' must be a non-empty object"),
    (lambda m: m.update(capacity=1e20), r"'capacity' must be an integer in \[1, 4611686018427387904\], got 1e\+20"),
    (lambda m: m.update(capacity=10**20), r"'capacity' must be an integer"),
    (lambda m: m.update(capacity=True), r"'capacity' must be an integer"),
    (lambda m: m.update(size=9), r"'size' must be an integer in \[0, 8\]"),
    (lambda m: m.update(state=[1, 2]), "'state' must be an object"),
    (lambda m: m["state"].update(cursor="5"), r"'state.cursor' must be an integer"),
    (lambda m: m["state"].update(base=6), r"'state.base' must be an integer in \[0, 5\]"),
    (lambda m: m.update(fields={"k": [[], "not a dtype"]}), r"'fields.k' must be \[shape"),
    (lambda m: m.update(fields={"k": [[-1], "<i8"]}), r"'fields.k' must be \[shape"),
    (lambda m: m.update(fields={"k": "<i8"}), r"'fields.k' must be \[shape"),
    (lambda m: m.update(alpha="0.6"), "'alpha' must be a finite number >= 0"),
    (lambda m: m.update(stale="never"), "'stale' must be 'skip' or 'raise'"),
    (lambda m: m.update(max_priority=None), "'max_priority' must be 'all_time' or 'stored'"),
    (lambda m: m.update({"class": "Foo"}), "'class' must be 'PrioritizedReplayBuffer' or 'ReplayBuffer'"),
])
def test_malformed_manifests_give_a_clear_value_error(tmp_path, edit, match):  # D29
    path = edited(tmp_path, saved(tmp_path, fr.PrioritizedReplayBuffer), manifest=edit)
    with pytest.raises(ValueError, match=match) as e:
        fr.PrioritizedReplayBuffer.load(path)
    assert BAD in str(e.value)


@pytest.mark.parametrize("text, match", ids=["nested", "list", "latin1", "huge"], argvalues=[
    ("[" * 100_000 + "]" * 100_000, "nests 100000 levels deep"),
    ("[1, 2]", "is a JSON list, expected an object"),
    ('{"format": "fastreplay-checkpoint", "version": 1, "x": "\xff"}'.encode("latin-1"), "is not UTF-8"),
    (b" " * (2 << 20), "claims 2097152 bytes"),
])
def test_unparseable_manifests_give_a_clear_value_error(tmp_path, text, match):  # D29
    parts = members(saved(tmp_path))
    parts["manifest.json"] = text if isinstance(text, bytes) else text.encode()
    write_checkpoint(tmp_path / "bad", parts)
    with pytest.raises(ValueError, match=match):
        fr.ReplayBuffer.load(tmp_path / "bad")


def test_a_fortran_order_member_is_named_as_such(tmp_path):  # D29
    buf = fr.ReplayBuffer(8, {"x": ((2,), np.float32)}, seed=0)
    buf.add(x=np.arange(10, dtype=np.float32).reshape(5, 2))
    buf.save(tmp_path / "g")
    parts = members(tmp_path / "g")
    parts["fields/x.npy"] = npy(np.arange(10, dtype=np.float32).reshape(5, 2), fortran=True)
    write_checkpoint(tmp_path / "f", parts)
    with pytest.raises(ValueError, match="member fields/x.npy is stored in Fortran order"):
        fr.ReplayBuffer.load(tmp_path / "f")


# --- D21: subclasses round-trip; D22: memmap buffers do not pickle --------------------------------------------------

class MyBuffer(fr.ReplayBuffer):
    def __init__(self, capacity, note="n"):  # a different signature: rebuilding must not call it
        super().__init__(capacity, K, seed=0)
        self.note = note


class MyPrioritized(fr.PrioritizedReplayBuffer):
    pass


def test_a_subclass_round_trips_through_pickle_and_load(tmp_path):  # D21
    b = MyBuffer(8, note="mine")
    b.add(k=[1, 2, 3])
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        c = pickle.loads(pickle.dumps(b, protocol=protocol))
        assert type(c) is MyBuffer and c.note == "mine" and c.storage["k"].tolist() == [1, 2, 3]
    b.save(tmp_path / "m")
    d = MyBuffer.load(tmp_path / "m")
    assert type(d) is MyBuffer and d.storage["k"].tolist() == [1, 2, 3]
    assert type(fr.ReplayBuffer.load(tmp_path / "m")) is fr.ReplayBuffer
    with pytest.raises(TypeError, match="holds a ReplayBuffer, not a MyPrioritized"):
        MyPrioritized.load(tmp_path / "m")
    p = MyPrioritized(8, K, alpha=0.5, seed=1)
    p.add(k=[4, 5])
    p.update_priorities([0, 1], [2.0, 3.0])
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is MyPrioritized and q.alpha == 0.5 and q.priorities.tolist() == [2.0, 3.0]
    p.save(tmp_path / "p")
    assert type(MyPrioritized.load(tmp_path / "p")) is MyPrioritized
    with pytest.raises(TypeError, match="holds a PrioritizedReplayBuffer, not a MyBuffer"):
        MyBuffer.load(tmp_path / "p")


def test_pickling_a_memmap_buffer_is_refused_with_the_way_out(tmp_path):  # D22
    b = fr.ReplayBuffer(8, K, storage="memmap", path=tmp_path / "mm")
    b.add(k=[1])
    with pytest.raises(TypeError, match=r"cannot pickle a ReplayBuffer with storage='memmap'.*reopen it"):
        pickle.dumps(b)
    import copy

    with pytest.raises(TypeError, match="storage='memmap'"):
        copy.deepcopy(b)
