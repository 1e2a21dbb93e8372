"""CleanRL's own DQN scripts with their replay buffer swapped for ``fastreplay.sb3.ReplayBuffer``.

    OMP_NUM_THREADS=1 python -m bench.scripts.bench_cleanrl --cleanrl-git /path/to/cleanrl/.git

CleanRL's code is not vendored: ``cleanrl/dqn.py``, ``cleanrl/dqn_atari.py`` and the ``cleanrl_utils`` modules they
import are read from a CleanRL git directory (``git show <rev>:<path>``) into a temporary directory at run time.
Each script is written twice: ``sb3/`` as CleanRL has it (``from cleanrl_utils.buffers import ReplayBuffer``, CleanRL's
copy of SB3's buffer) and ``fastreplay/`` with only that import line changed to ``from fastreplay.sb3 import
ReplayBuffer``. Both copies get the same run-time shims for gymnasium 1.x (listed in ``SHIMS`` and printed), run with
the same seed and arguments under ``OMP_NUM_THREADS=1``, alternating, and the script reports CleanRL's last printed
``SPS:`` (global_step / wall time since the start of the loop), the time spent inside ``rb.add`` / ``rb.sample`` (wall
and the calling thread's CPU time, which other processes on a loaded machine do not inflate), the process's CPU time
and the episodic returns.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UTILS = ["cleanrl_utils/__init__.py", "cleanrl_utils/buffers.py", "cleanrl_utils/atari_wrappers.py"]
BUFFER_IMPORT = "from cleanrl_utils.buffers import ReplayBuffer"
FASTREPLAY_IMPORT = "from fastreplay.sb3 import ReplayBuffer"

# (old, new, which scripts): each `old` must occur exactly once in each script it is applied to; applied to both the
# sb3 and the fastreplay copy alike.
SHIMS = [
    # tensorboard is not installed here: a no-op SummaryWriter (both copies)
    ("from torch.utils.tensorboard import SummaryWriter",
     "import _cleanrl_shims\nfrom _cleanrl_shims import SummaryWriter", ("dqn.py", "dqn_atari.py")),
    # gymnasium 1.x vector envs autoreset on the *next* step by default; CleanRL's loop is written for same-step
    # autoreset with the final observation in the info dict (gymnasium 0.29), which 1.x keeps as an option
    ("for i in range(args.num_envs)]\n    )",
     "for i in range(args.num_envs)],\n        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,\n    )",
     ("dqn.py", "dqn_atari.py")),
    # ... and names the final observation `final_obs` (was `final_observation`)
    ('infos["final_observation"][idx]', 'infos["final_obs"][idx]', ("dqn.py", "dqn_atari.py")),
    # ... and gives `final_info` as one dict of per-env arrays (was a list of per-env dicts): only the logging loop
    ('for info in infos["final_info"]:', 'for info in _cleanrl_shims.per_env(infos["final_info"], envs.num_envs):',
     ("dqn.py", "dqn_atari.py")),
    # wrappers renamed in gymnasium 1.0 (FrameStackObservation returns an ndarray, FrameStack gave LazyFrames)
    ("gym.wrappers.GrayScaleObservation(env)", "gym.wrappers.GrayscaleObservation(env)", ("dqn_atari.py",)),
    ("gym.wrappers.FrameStack(env, 4)", "gym.wrappers.FrameStackObservation(env, 4)", ("dqn_atari.py",)),
    # measurement only: time rb.add / rb.sample (both copies alike)
    ("    start_time = time.time()\n", "    _cleanrl_shims.instrument(rb)\n    start_time = time.time()\n",
     ("dqn.py", "dqn_atari.py")),
]

SHIM_MODULE = '''
"""Run-time shims for CleanRL on gymnasium 1.x (written by bench_cleanrl.py; identical for both buffers)."""
import atexit
import time

import numpy as np

try:  # registers ALE's ids (BreakoutNoFrameskip-v4, ALE/...) with gymnasium 1.x
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
except ImportError:
    pass


class SummaryWriter:
    def __init__(self, *args, **kwargs):
        pass

    def add_text(self, *args, **kwargs):
        pass

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def per_env(final_info, num_envs):
    """gymnasium 1.x's vectorised final_info dict -> gymnasium 0.29's list of per-env dicts (None where absent)."""
    out = [None] * num_envs
    ep = final_info.get("episode")
    if ep is None:
        return out
    mask = final_info.get("_episode", np.ones(num_envs, dtype=bool))
    for i in range(num_envs):
        if mask[i]:
            out[i] = {"episode": {k: np.asarray(v)[i] for k, v in ep.items() if not k.startswith("_")}}
    return out


_T = {"add": [0.0, 0, 0.0], "sample": [0.0, 0, 0.0]}  # wall s, calls, CPU s of this thread


def _timed(name, fn):
    acc = _T[name]

    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[0] += time.perf_counter() - t0
            acc[2] += time.thread_time() - c0
            acc[1] += 1

    return wrapper


def instrument(rb):
    rb.add = _timed("add", rb.add)
    rb.sample = _timed("sample", rb.sample)
    cpu0 = time.process_time()  # called just before the loop: the loop's CPU time, printed at exit
    atexit.register(lambda: print(f"LOOP_CPU_S={time.process_time() - cpu0:.4f}", flush=True))
    atexit.register(lambda: print(
        f"BUFFER {type(rb).__module__}.{type(rb).__name__} add_s={_T['add'][0]:.4f} n_add={_T['add'][1]} "
        f"sample_s={_T['sample'][0]:.4f} n_sample={_T['sample'][1]} add_cpu_s={_T['add'][2]:.4f} "
        f"sample_cpu_s={_T['sample'][2]:.4f}", flush=True))
'''


def git_show(git_dir: str, rev: str, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def build(git_dir: str, rev: str, root: Path) -> dict:
    """Writes root/{sb3,fastreplay}/ trees; returns {variant: root dir}."""
    sources = {p: git_show(git_dir, rev, p) for p in ["cleanrl/dqn.py", "cleanrl/dqn_atari.py", *UTILS]}
    out = {}
    for variant in ("sb3", "fastreplay"):
        base = root / variant
        for path, text in sources.items():
            if path.startswith("cleanrl/"):
                name = Path(path).name
                for old, new, where in SHIMS:
                    if name in where:
                        if text.count(old) != 1:
                            raise SystemExit(f"shim pattern not found exactly once in {path}: {old!r}")
                        text = text.replace(old, new)
                if text.count(BUFFER_IMPORT) != 1:
                    raise SystemExit(f"{path}: buffer import line not found")
                if variant == "fastreplay":
                    text = text.replace(BUFFER_IMPORT, FASTREPLAY_IMPORT)
            dest = base / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
        (base / "_cleanrl_shims.py").write_text(SHIM_MODULE)
        out[variant] = base
    return out


SPS_RE = re.compile(r"^SPS: (\d+)", re.M)
LOOP_CPU_RE = re.compile(r"^LOOP_CPU_S=([\d.]+)", re.M)
RET_RE = re.compile(r"^global_step=(\d+), episodic_return=([-\d.e+]+)", re.M)
BUF_RE = re.compile(r"^BUFFER (\S+) add_s=([\d.]+) n_add=(\d+) sample_s=([\d.]+) n_sample=(\d+) "
                    r"add_cpu_s=([\d.]+) sample_cpu_s=([\d.]+)", re.M)


def run_one(base: Path, script: str, args: list[str], timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(base), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, f"cleanrl/{script}", *args], cwd=base, env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{base.name}/{script} failed with exit code {proc.returncode}")
    sps = [int(x) for x in SPS_RE.findall(proc.stdout)]
    rets = [(int(s), float(r)) for s, r in RET_RE.findall(proc.stdout)]
    buf = BUF_RE.search(proc.stdout)
    loop_cpu = LOOP_CPU_RE.search(proc.stdout)
    return {"sps": sps[-1] if sps else None, "returns": rets, "wall": wall, "buffer": buf.group(1),
            "add_s": float(buf.group(2)), "n_add": int(buf.group(3)), "sample_s": float(buf.group(4)),
            "n_sample": int(buf.group(5)), "add_cpu_s": float(buf.group(6)), "sample_cpu_s": float(buf.group(7)),
            "cpu": cpu, "loop_cpu": float(loop_cpu.group(1))}


def summary(results: list) -> str:
    """Markdown table: per script and buffer, medians over its runs; returns averaged over the runs."""
    lines = ["| script | buffer | runs | SPS (median) | wall s (median) | CPU s (median) | add, us/call "
             "| add CPU, us/call | sample, us/call | sample CPU, us/call | episodes | mean return | mean of last 10 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for script in dict.fromkeys(r["script"] for r in results):
        for variant in ("sb3", "fastreplay"):
            rs = [r for r in results if r["script"] == script and r["variant"] == variant]
            if not rs:
                continue
            rets = [[x for _, x in r["returns"]] for r in rs]
            lines.append(
                f"| `{script}` | {variant} | {len(rs)} | {statistics.median(r['sps'] for r in rs):.0f} "
                f"| {statistics.median(r['wall'] for r in rs):.1f} "
                f"| {statistics.median(r['cpu'] for r in rs):.1f} "
                f"| {statistics.median(1e6 * r['add_s'] / r['n_add'] for r in rs):.1f} "
                f"| {statistics.median(1e6 * r['add_cpu_s'] / r['n_add'] for r in rs):.1f} "
                f"| {statistics.median(1e6 * r['sample_s'] / max(r['n_sample'], 1) for r in rs):.1f} "
                f"| {statistics.median(1e6 * r['sample_cpu_s'] / max(r['n_sample'], 1) for r in rs):.1f} "
                f"| {statistics.fmean(len(x) for x in rets):.1f} "
                f"| {statistics.fmean(statistics.fmean(x) if x else float('nan') for x in rets):.2f} "
                f"| {statistics.fmean(statistics.fmean(x[-10:]) if x else float('nan') for x in rets):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cleanrl-git", required=True, help="CleanRL git directory (bare or .git)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--repeats", type=int, default=1, help="runs per buffer and script (alternating)")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds; each seed runs --repeats times per buffer")
    ap.add_argument("--scripts", default="dqn.py,dqn_atari.py")
    ap.add_argument("--cartpole-args", default="--total-timesteps 20000 --learning-starts 1000")
    ap.add_argument("--atari-args", default="--env-id BreakoutNoFrameskip-v4 --total-timesteps 5000 "
                                            "--learning-starts 1000 --buffer-size 10000")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    ap.add_argument("--json", help="write every run's figures (and returns) to this file")
    opts = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_cleanrl_"))
    rev = subprocess.run(["git", f"--git-dir={opts.cleanrl_git}", "rev-parse", opts.rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    trees = build(opts.cleanrl_git, rev, tmp)
    print(f"CleanRL {rev}; copies in {tmp}")
    print("shims applied to both copies:")
    for old, new, where in SHIMS:
        print(f"  {','.join(where)}: {old.strip()!r} -> {new.strip()!r}")
    print(f"fastreplay copy only: {BUFFER_IMPORT!r} -> {FASTREPLAY_IMPORT!r}")

    results = []
    for script in opts.scripts.split(","):
        extra = (opts.atari_args if "atari" in script else opts.cartpole_args).split()
        runs = [(int(x), r) for x in opts.seeds.split(",") for r in range(opts.repeats)]
        for i, (seed, rep) in enumerate(runs):
            args = ["--seed", str(seed), "--no-cuda", *extra]
            order = ("sb3", "fastreplay") if i % 2 == 0 else ("fastreplay", "sb3")  # alternate who runs first
            for variant in order:
                r = run_one(trees[variant], script, args, opts.timeout)
                r.update(script=script, variant=variant, seed=seed, rep=rep, args=" ".join(args))
                results.append(r)
                rets = [x for _, x in r["returns"]]
                last = rets[-10:]
                print(f"{script:13s} {variant:10s} seed {seed} rep {rep}: SPS {r['sps']}, wall {r['wall']:.1f} s, "
                      f"CPU {r['cpu']:.1f} s, add {1e6 * r['add_s'] / max(r['n_add'], 1):.1f} us "
                      f"(CPU {1e6 * r['add_cpu_s'] / max(r['n_add'], 1):.1f}) x {r['n_add']}, "
                      f"sample {1e6 * r['sample_s'] / max(r['n_sample'], 1):.1f} us "
                      f"(CPU {1e6 * r['sample_cpu_s'] / max(r['n_sample'], 1):.1f}) x {r['n_sample']}, "
                      f"{len(rets)} episodes, mean return {statistics.fmean(rets) if rets else float('nan'):.2f}, "
                      f"last 10 {statistics.fmean(last) if last else float('nan'):.2f}, "
                      f"returns {[round(x, 1) for x in rets]}", flush=True)
    print(summary(results))
    if opts.json:
        import json

        Path(opts.json).write_text(json.dumps({"cleanrl_rev": rev, "runs": results}, indent=1) + "\n")
    if not opts.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
