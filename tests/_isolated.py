"""Run a scenario that could crash or hang the interpreter in its own Python process, with a timeout, so that a
regression fails one test instead of killing (or stalling) the test run."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Optional, Sequence

TESTS = pathlib.Path(__file__).parent


class Outcome:
    """How an isolated run ended: ``returncode`` (negative: killed by that signal; None: timed out), output."""

    def __init__(self, returncode: Optional[int], stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def __repr__(self) -> str:
        tail = (self.stderr or "")[-2000:]
        return f"Outcome(returncode={self.returncode}, stdout={self.stdout[-500:]!r}, stderr tail={tail!r})"


def run_isolated(code: str, timeout: float = 60.0, args: Sequence[str] = (), env: Optional[dict] = None) -> Outcome:
    """Run ``code`` (dedented) with this interpreter in a fresh process whose ``sys.path`` starts with tests/, so
    it can import ``_rows``. Never raises for the child's failure: inspect the returned :class:`Outcome`."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                    OMP_NUM_THREADS="1", **(env or {}))
    try:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                           timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as e:
        def text(x):
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        return Outcome(None, text(e.stdout), text(e.stderr))
    return Outcome(p.returncode, p.stdout, p.stderr)


def assert_clean_exit(code: str, timeout: float = 60.0, expect_stdout: Optional[str] = None, **kw) -> Outcome:
    """The scenario must exit with status 0 within ``timeout`` (no crash, no hang)."""
    out = run_isolated(code, timeout=timeout, **kw)
    assert not out.timed_out, f"hung for {timeout} s: {out!r}"
    assert out.returncode == 0, f"exit status {out.returncode}: {out!r}"
    if expect_stdout is not None:
        assert expect_stdout in out.stdout, out
    return out
