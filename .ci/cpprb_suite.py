#!/usr/bin/env python3
"""cpprb's own test files against fastreplay.cpprb, next to a baseline run against the real cpprb.

Downloads the sdist of the installed cpprb version from the package index (only its ``test/`` folder is used; cpprb
is not built from it), then runs each test file below twice with pytest, one process per file and run:

* baseline: ``import cpprb`` is the installed cpprb;
* adapter: a temporary directory first on ``PYTHONPATH`` holds a package ``cpprb`` whose ``__init__`` replaces
  itself in ``sys.modules`` with ``fastreplay.cpprb`` (so ``from cpprb import X`` gets the adapter's ``X``, also in
  child processes). Submodules the adapter does not provide (``cpprb.PyReplayBuffer``, ``cpprb.util``, ...) are
  not faked: a file that imports one fails to import, and all its tests count as failed.

The test files are neither edited nor vendored. Prints pass/fail counts per file for both runs and exits 1 if any
test that passes with the real cpprb does not pass with the adapter, unless it is listed in ``KNOWN_GAPS`` (with
the reason). A known gap that passes is reported too (remove it from the list), without failing the run.

    python .ci/cpprb_suite.py [--sdist-dir DIR] [--jobs 2] [-v]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fnmatch
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Tuple

FILES = ["test_PyReplayBuffer.py", "test_features.py", "test_issue.py", "test_save_load.py", "test_multi_rew.py",
         "test_mp.py", "test_HER.py", "test_LaBER.py", "test_train.py"]

# Tests (pytest node ids relative to the test folder; fnmatch patterns) that pass with cpprb and are known not to
# pass with the adapter, each with the reason. Keep this honest: it is the list of what a user can still notice.
KNOWN_GAPS: Dict[str, str] = {
    "test_save_load.py::*": (
        "load_transitions refuses pickled .npz members unless called with allow_pickle=True (cpprb always "
        "unpickles: a crafted file runs code). Checked: the 'with allow_pickle=True' run of this file passes every "
        "test the baseline passes"),
}

# Files run a third time with load_transitions defaulting to allow_pickle=True: everything the baseline passes must
# pass there, except the known gaps other than PICKLE_GAP, so that the opt-in is all PICKLE_GAP admits.
ALLOW_PICKLE_FILES = ["test_save_load.py"]
PICKLE_GAP = "test_save_load.py::*"

TIMEOUT_S = 600  # per pytest process


def cpprb_version() -> str:
    return importlib.metadata.version("cpprb")


def fetch_tests(version: str, sdist_dir: Path, dest: Path) -> Path:
    """The ``test/`` folder of cpprb's sdist ``version``, unpacked under ``dest``."""
    sdist_dir.mkdir(parents=True, exist_ok=True)
    name = f"cpprb-{version}.tar.gz"
    if not (sdist_dir / name).exists():
        # --no-binary cpprb, not :all:: with :all: pip also builds cpprb's build dependencies (numpy, Cython, ...)
        # from source to prepare its metadata, which takes many minutes; the sdist downloaded is the same.
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "cpprb",
                        f"cpprb=={version}", "-d", str(sdist_dir)], check=True)
    with tarfile.open(sdist_dir / name) as tar:
        prefix = f"cpprb-{version}/test/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        if not members:
            raise SystemExit(f"{name} has no test/ folder")
        for m in members:
            m.name = m.name[len(f"cpprb-{version}/"):]
            tar.extract(m, dest, filter="data") if sys.version_info >= (3, 12) else tar.extract(m, dest)
    return dest / "test"


SHIM = '''"""Test-suite shim: ``import cpprb`` gives fastreplay.cpprb (see .ci/cpprb_suite.py)."""
import os
import sys
import fastreplay.cpprb as _adapter
if os.environ.get("CPPRB_SUITE_ALLOW_PICKLE") == "1":
    _load = _adapter.ReplayBuffer.load_transitions

    def load_transitions(self, file, *, allow_pickle=True):
        return _load(self, file, allow_pickle=allow_pickle)

    _adapter.ReplayBuffer.load_transitions = load_transitions
sys.modules[__name__] = _adapter
'''


# test_save_load.py also loads each file it saves from "v1/<name>", files written by cpprb that its repository keeps
# but its sdist does not. This pytest plugin, loaded into one run of that file against the real cpprb before the
# others, copies what cpprb's save_transitions writes (through numpy.savez_compressed) to v1/<name>: the same data,
# written by the installed cpprb, so the adapter's runs load files written by cpprb.
FIXTURE_PLUGIN = '''import os, shutil
import numpy as np

def pytest_configure(config):
    dest = os.environ["CPPRB_SUITE_V1"]
    savez = np.savez_compressed

    def savez_compressed(file, *args, **kwargs):
        savez(file, *args, **kwargs)
        path = os.fspath(file)
        path = path if path.endswith(".npz") else path + ".npz"
        target = os.path.join(dest, os.path.basename(path))
        if not os.path.exists(target):
            shutil.copyfile(path, target)

    np.savez_compressed = savez_compressed
'''


def make_v1_fixtures(test_dir: Path, work: Path) -> int:
    """Write test_save_load.py's v1/ files with the installed cpprb; return how many."""
    (work / "fixtures").mkdir()
    (work / "fixtures" / "cpprb_suite_fixtures.py").write_text(FIXTURE_PLUGIN)
    (test_dir / "v1").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(work / "fixtures"), CPPRB_SUITE_V1=str(test_dir / "v1"))
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini"), "--rootdir", str(test_dir),
                    "-p", "no:cacheprovider", "-p", "cpprb_suite_fixtures", "-q", "test_save_load.py"],
                   cwd=test_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=TIMEOUT_S)
    return len(list((test_dir / "v1").iterdir()))


def run_pytest(test_dir: Path, file: str, mode: str, work: Path) -> Tuple[Dict[str, str], str, float]:
    """Run one file; return ({test id: passed|failed|skipped}, output tail, seconds)."""
    out_dir = work / mode
    xml = out_dir / (file + ".xml")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("CPPRB_SUITE_ALLOW_PICKLE", None)
    if mode.startswith("adapter"):
        env["PYTHONPATH"] = str(work / "shim")
    if mode == "adapter-pickle":
        env["CPPRB_SUITE_ALLOW_PICKLE"] = "1"
    ini = work / "pytest.ini"
    cmd = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(test_dir), "-p", "no:cacheprovider",
           "-q", "-rfE", f"--junitxml={xml}", "-o", "junit_family=xunit1", file]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=test_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=TIMEOUT_S)
        output = p.stdout
    except subprocess.TimeoutExpired as e:
        output = f"TIMEOUT after {TIMEOUT_S}s\n" + (e.stdout or b"").decode(errors="replace")
    secs = time.monotonic() - t0
    results: Dict[str, str] = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            cls = case.get("classname", "")
            # classname is "test_x.Class" (or "test_x" for functions); node id "test_x.py::Class::name"
            parts = cls.split(".")
            node = "::".join([parts[0] + ".py"] + parts[1:] + [case.get("name", "")])
            if case.find("skipped") is not None:
                outcome = "skipped"
            elif case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            else:
                outcome = "passed"
            # a test can be reported twice (failure in call and error in teardown): the worse outcome wins
            if results.get(node) != "failed":
                results[node] = outcome
    return results, output[-3000:], secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist-dir", type=Path, default=Path("build/cpprb-sdist"),
                    help="where the sdist is downloaded (kept, so a second run does not download it again)")
    ap.add_argument("--jobs", type=int, default=2, help="pytest processes at once")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (tests, v1/ files, shim)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every adapter failure's pytest output")
    ap.add_argument("files", nargs="*", help=f"test files (default: {' '.join(FILES)})")
    args = ap.parse_args()

    t_start = time.monotonic()
    version = cpprb_version()
    importlib.import_module("fastreplay.cpprb")  # fail early, here, if the adapter does not import

    work = Path(tempfile.mkdtemp(prefix="cpprb_suite_"))
    try:
        test_dir = fetch_tests(version, args.sdist_dir.resolve(), work / "src")
        (work / "shim" / "cpprb").mkdir(parents=True)
        (work / "shim" / "cpprb" / "__init__.py").write_text(SHIM)
        # An empty ini file: neither cpprb's setup.cfg nor this repository's pytest options apply.
        (work / "pytest.ini").write_text("[pytest]\n")
        (work / "baseline").mkdir()
        (work / "adapter").mkdir()
        (work / "adapter-pickle").mkdir()
        files = [f for f in (args.files or FILES) if (test_dir / f).exists()]
        missing = sorted(set(args.files or FILES) - set(files))
        print(f"cpprb {version}: {len(files)} test files from its sdist" +
              (f" (not in this sdist: {', '.join(missing)})" if missing else ""), flush=True)
        if "test_save_load.py" in files:
            print(f"test_save_load.py: {make_v1_fixtures(test_dir, work)} v1/ files written by cpprb {version}",
                  flush=True)

        jobs = [(f, m) for f in files for m in ("baseline", "adapter")]
        jobs += [(f, "adapter-pickle") for f in files if f in ALLOW_PICKLE_FILES]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {job: pool.submit(run_pytest, test_dir, job[0], job[1], work) for job in jobs}
            res = {job: fut.result() for job, fut in futures.items()}
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def counts(r: Dict[str, str]) -> str:
        return "/".join(str(sum(v == k for v in r.values())) for k in ("passed", "failed", "skipped"))

    regressions: List[str] = []
    known: List[Tuple[str, str]] = []  # (test, the first KNOWN_GAPS pattern it matches)
    fixed: List[str] = []
    print(f"\n{'file':24} {'baseline p/f/s':>15} {'adapter p/f/s':>15} {'regressed':>9} {'known':>6}  secs (b/a)")
    for f in files:
        base, _, tb = res[(f, "baseline")]
        adap, out, ta = res[(f, "adapter")]
        if not base:
            print(f"{f}: no results from the baseline run:\n{res[(f, 'baseline')][1]}")
            regressions.append(f"{f} (baseline did not run)")
            continue
        reg = kn = 0
        for node, outcome in sorted(base.items()):
            gap = next((pat for pat in KNOWN_GAPS if fnmatch.fnmatchcase(node, pat)), None)
            ok = adap.get(node) == "passed"
            if outcome == "passed" and not ok:
                if gap:
                    kn += 1
                    known.append((node, gap))
                else:
                    reg += 1
                    regressions.append(f"{node}: {adap.get(node, 'not run (file failed to import?)')}")
        # The adapter's outcome of each test the baseline ran; a test not run (the file did not import) failed.
        adap_counts = counts({node: adap.get(node, "failed") for node in base})
        print(f"{f:24} {counts(base):>15} {adap_counts:>15} {reg:>9} {kn:>6}  {tb:.0f}/{ta:.0f}", flush=True)
        if args.verbose and (reg or not adap):
            print(out)
        if (f, "adapter-pickle") in res:
            pick, out, tp = res[(f, "adapter-pickle")]
            reg = kn = 0
            for node, outcome in sorted(base.items()):
                if outcome == "passed" and pick.get(node) != "passed":
                    if any(fnmatch.fnmatchcase(node, p) for p in KNOWN_GAPS if p != PICKLE_GAP):
                        kn += 1
                        continue
                    reg += 1
                    regressions.append(f"{node} (with allow_pickle=True): {pick.get(node, 'not run')}")
            pick_counts = counts({node: pick.get(node, "failed") for node in base})
            print(f"{'  with allow_pickle=True':24} {'':>15} {pick_counts:>15} {reg:>9} {kn:>6}  {tp:.0f}", flush=True)
            if args.verbose and reg:
                print(out)
    print(f"\nknown gaps (pass with cpprb, not with the adapter): {len(known)}")
    for pat, why in KNOWN_GAPS.items():
        n = sum(gap == pat for _, gap in known)
        print(f"  {pat} [{n}]: {why}")
        if n == 0 and any(pat.split("::")[0] == f for f in files):
            fixed.append(pat)
    if fixed:
        print("\nlisted as known gaps but nothing they match fails now (remove them from KNOWN_GAPS):")
        for pat in fixed:
            print(f"  {pat}")
    if regressions:
        print(f"\n{len(regressions)} tests pass with cpprb but not with fastreplay.cpprb:")
        for r in regressions:
            print(f"  {r}")
    print(f"\n{time.monotonic() - t_start:.0f} s")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
