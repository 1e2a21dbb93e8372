#!/usr/bin/env python3
"""Stable-Baselines3's own replay-buffer tests, against SB3 and against fastreplay.sb3.

Downloads the sdist of the installed stable-baselines3 version from the package index (``pip download --no-deps
--no-binary :all:``), unpacks its ``tests/`` (and its ``pyproject.toml``, for its pytest settings) and runs
``tests/test_buffers.py``, ``tests/test_n_step_replay.py``, ``tests/test_her.py`` and the replay-buffer tests of
``tests/test_save_load.py`` twice, side by side: as they are (baseline), and with fastreplay.sb3's buffers substituted
by the pytest plugin ``tests/external/sb3_substitute.py`` (no SB3 file is vendored or edited). Prints the pass/fail
counts per file for both runs and exits nonzero if a test that passes against SB3 does not pass with fastreplay,
unless ``KNOWN_GAPS`` lists it with its reason, or if a listed gap passes now (the list must stay honest).

    python .ci/sb3_suite.py [--workdir DIR] [--keep]

DIR (default build/sb3-suite) keeps the sdist between runs. Needs the ``test`` extra installed (SB3, torch,
gymnasium, pytest).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "tests" / "external"

# (file, pytest -k expression or None for the whole file)
FILES: List[Tuple[str, str]] = [
    ("tests/test_buffers.py", ""),
    ("tests/test_n_step_replay.py", ""),
    ("tests/test_her.py", ""),
    ("tests/test_save_load.py", "test_save_load_replay_buffer or test_warn_buffer or test_no_resource_warning"),
]

# Test id (as pytest prints it, relative to the sdist) or a regular expression matching ids -> why it cannot pass
# with fastreplay.sb3 yet. Only tests that pass against SB3 belong here.
KNOWN_GAPS: Dict[str, str] = {}


def _run(cmd: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def fetch_tests(workdir: Path) -> Path:
    """The installed SB3 version's sdist, unpacked (tests/ and pyproject.toml only) under workdir."""
    ver = version("stable-baselines3")
    dest = workdir / f"stable_baselines3-{ver}"
    if (dest / "tests" / "test_buffers.py").exists():
        return dest
    workdir.mkdir(parents=True, exist_ok=True)
    sdist = next(workdir.glob(f"stable_baselines3-{ver}.tar.gz"), None)
    if sdist is None:
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
              f"stable-baselines3=={ver}", "-d", str(workdir)])
        sdist = workdir / f"stable_baselines3-{ver}.tar.gz"
    tmp = workdir / f".unpack-{ver}"
    with tarfile.open(sdist) as tar:
        top = f"stable_baselines3-{ver}/"
        members = [m for m in tar.getmembers()
                   if m.name.startswith(top + "tests/") or m.name == top + "pyproject.toml"]
        # Not the package itself: SB3 must be the installed one, not a source tree first on sys.path.
        kw = {"filter": "data"} if sys.version_info >= (3, 12) else {}
        tar.extractall(tmp, members=members, **kw)
    (tmp / f"stable_baselines3-{ver}").rename(dest)
    tmp.rmdir()
    return dest


def run_pytest(src: Path, label: str, substitute: bool, out: Path) -> Tuple[Dict[str, str], Set[str]]:
    """Run every file of FILES (one pytest process); returns {test id: passed|failed|skipped} and the ids of the
    tests that built a fastreplay buffer (with the substitution)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            f"--junitxml={out}", "-o", "junit_family=xunit2"]
    if substitute:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH")]))
        args += ["-p", "sb3_substitute"]
    ids: List[str] = []
    for path, k in FILES:
        if k:  # select within the file by node id: -k would apply to every file
            listed = subprocess.run(args[:3] + ["--collect-only", "-q", "-p", "no:cacheprovider", path, "-k", k],
                                    cwd=src, env=env, capture_output=True, text=True)
            ids += [line for line in listed.stdout.splitlines() if line.startswith(path + "::")]
        else:
            ids.append(path)
    log = out.with_suffix(".log")
    with open(log, "w") as fh:
        proc = subprocess.run(args + ids, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode not in (0, 1) or not out.exists():
        sys.exit(f"{label}: pytest exited {proc.returncode}, see {log}")
    results: Dict[str, str] = {}
    used: Set[str] = set()
    for case in ET.parse(out).getroot().iter("testcase"):
        mod = case.get("classname", "").replace(".", "/")
        tid = f"{mod}.py::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[tid] = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        for prop in case.iter("property"):
            if prop.get("name") == "fastreplay_buffers" and int(prop.get("value", "0")) > 0:
                used.add(tid)
    return results, used


def counts(results: Dict[str, str], path: str) -> Dict[str, int]:
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for tid, outcome in results.items():
        if tid.startswith(path + "::"):
            c[outcome] += 1
    return c


def gap_reason(tid: str) -> str:
    for pattern, reason in KNOWN_GAPS.items():
        if tid == pattern or re.fullmatch(pattern, tid):
            return reason
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "sb3-suite")
    args = ap.parse_args()
    t0 = time.monotonic()
    src = fetch_tests(args.workdir.resolve())
    print(f"SB3 {version('stable-baselines3')} tests from {src}", flush=True)
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side, one core each
        base_f = pool.submit(run_pytest, src, "baseline", False, src / "baseline.xml")
        ours_f = pool.submit(run_pytest, src, "fastreplay", True, src / "fastreplay.xml")
        (base, _), (ours, used) = base_f.result(), ours_f.result()

    # "on fastreplay": tests that built a fastreplay buffer; the others use SB3's other classes only (rollout
    # buffers), are skipped, or fail before building one, and pass or fail the same in both runs.
    print(f"\n{'file (passed/failed/skipped)':<50} {'SB3':>10} {'fastreplay':>12} {'on fastreplay':>14}")
    for path, k in FILES:
        b, o = counts(base, path), counts(ours, path)
        name = path + (" (replay-buffer tests)" if k else "")
        cells = ["/".join(str(c[x]) for x in ("passed", "failed", "skipped")) for c in (b, o)]
        n_used = sum(1 for tid in used if tid.startswith(path + "::"))
        print(f"{name:<50} {cells[0]:>10} {cells[1]:>12} {n_used:>14}")

    empty = [path for path, _ in FILES if sum(counts(base, path).values()) == 0]
    if empty:  # a collection error or a -k that matches nothing would otherwise pass as "no regressions"
        sys.exit(f"no test of {', '.join(empty)} ran against SB3: see {src}/baseline.log")

    regressions, gaps, stale = [], [], []
    for tid, outcome in sorted(base.items()):
        if outcome != "passed":
            continue
        reason = gap_reason(tid)
        if ours.get(tid) != "passed":
            (gaps if reason else regressions).append((tid, ours.get(tid, "missing"), reason))
        elif reason:
            stale.append(tid)
    for tid, outcome, reason in gaps:
        print(f"known gap ({outcome}): {tid}: {reason}")
    for tid in stale:
        print(f"STALE known gap, passes now (remove it from KNOWN_GAPS): {tid}")
    for tid, outcome, _ in regressions:
        print(f"REGRESSION ({outcome} with fastreplay, passes with SB3): {tid}")
    print(f"\n{len(regressions)} regressions, {len(gaps)} known gaps, {len(stale)} stale gaps "
          f"({time.monotonic() - t0:.0f} s; logs: {src}/baseline.log, {src}/fastreplay.log)")
    return 1 if regressions or stale else 0


if __name__ == "__main__":
    sys.exit(main())
