"""Acceptance runs of the DQN trainer (issue 5): does the default command learn CartPole, does prioritized replay
help, and how much of the loop's time does the replay buffer take?

    nice -n 10 python examples/dqn_acceptance.py              # all three parts, two training runs at a time
    python examples/dqn_acceptance.py --parts c --jobs 1      # only the throughput comparison

(a) ``python -m fastreplay.dqn --seed S`` (the default settings: CartPole-v1, 100k steps) for seeds 0, 1, 2: the
    first step at which the mean greedy return over 20 evaluation episodes reached 475, and the wall time.
(b) prioritized (``--per``) vs uniform replay on CartPole-v1 (threshold 475) and Acrobot-v1 (threshold -100), three
    seeds each, otherwise default settings: steps to the threshold, one plot. The uniform CartPole runs are (a)'s.
(c) steps per second of the whole loop (env steps, action selection, buffer, gradient steps; no evaluation) with
    fastreplay and with the pure-Python ``fastreplay.reference`` buffer, uniform and prioritized, and the share of
    wall time spent inside the buffer's add/sample/update_priorities calls. These runs go one at a time.

Every training run is a subprocess of ``python -m fastreplay.dqn``; its run directory (log.jsonl, results.json,
learning_curve.png) goes under ``--runs-dir``. A run whose results.json is already there is reused, so an interrupted
acceptance continues where it stopped (``--rerun`` repeats everything). The summary goes to ``--out``:
dqn_acceptance.json, dqn_acceptance.md, dqn_cartpole_default.png, dqn_per_vs_uniform.png.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
EXTRA: List[str] = []  # --train-args, appended to every training command (for a quick smoke test of this script)


def run(tag: str, argv: Sequence[str], runs_dir: str, rerun: bool) -> Dict:
    """Train once with ``python -m fastreplay.dqn ARGV`` (cached under runs_dir/tag) and return its results.json."""
    out = os.path.join(runs_dir, tag)
    done = glob.glob(os.path.join(out, "*", "results.json"))
    if done and not rerun:
        with open(sorted(done)[-1]) as f:
            return json.load(f)
    cmd = [sys.executable, "-m", "fastreplay.dqn", *argv, *EXTRA, "--no-progress", "--output-dir", out]
    print(f"[{time.strftime('%H:%M:%S')}] start {tag}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    results = sorted(glob.glob(os.path.join(out, "*", "results.json")), key=os.path.getmtime)[-1]
    with open(results) as f:
        res = json.load(f)
    print(f"[{time.strftime('%H:%M:%S')}] done  {tag} in {time.perf_counter() - t0:.0f} s", flush=True)
    return res


def first_reaching(evals: List[List[float]], threshold: float) -> Optional[List[float]]:
    """The first evaluation ``[step, mean, wall_s]`` whose mean return is >= threshold, or None."""
    return next((e for e in evals if e[1] >= threshold), None)


def run_all(jobs: Dict[str, List[str]], args: argparse.Namespace, parallel: int) -> Dict[str, Dict]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {tag: pool.submit(run, tag, argv, args.runs_dir, args.rerun) for tag, argv in jobs.items()}
        return {tag: f.result() for tag, f in futures.items()}


def plot_curves(ax, runs: List[Dict], color: str, label: str) -> None:
    for r in runs:
        ax.plot([e[0] for e in r["evals"]], [e[1] for e in r["evals"]], color=color, alpha=0.35, lw=1)
    grid = np.array([e[0] for e in runs[0]["evals"]])
    if all([e[0] for e in r["evals"]] == list(grid) for r in runs):
        mean = np.mean([[e[1] for e in r["evals"]] for r in runs], axis=0)
        ax.plot(grid, mean, color=color, lw=2.2, label=f"{label} (mean of {len(runs)} seeds)")
    else:
        ax.plot([], [], color=color, label=label)


def part_a(args, results) -> Dict:
    jobs = {f"cartpole_uniform_s{s}": ["--seed", str(s)] for s in args.seeds}
    res = run_all(jobs, args, args.jobs)
    results.update(res)
    rows = []
    for s in args.seeds:
        r = res[f"cartpole_uniform_s{s}"]
        hit = first_reaching(r["evals"], 475.0)
        rows.append({"seed": s, "first_step_475": hit and hit[0], "wall_s_at_475": hit and round(hit[2], 1),
                     "eval_at_100k": r["final_eval_mean"], "wall_time_s": round(r["wall_time_s"], 1),
                     "steps_per_sec": round(r["steps_per_sec"], 1), "plot": r["plot_path"]})
    return {"rows": rows, "passed": sum(r["first_step_475"] is not None and r["first_step_475"] <= 100_000
                                        and r["wall_time_s"] < 600 for r in rows)}


def part_b(args, results) -> Dict:
    jobs = {}
    for s in args.seeds:
        jobs[f"cartpole_uniform_s{s}"] = ["--seed", str(s)]
        jobs[f"cartpole_per_s{s}"] = ["--seed", str(s), "--per"]
        jobs[f"acrobot_uniform_s{s}"] = ["--seed", str(s), "--env-id", "Acrobot-v1"]
        jobs[f"acrobot_per_s{s}"] = ["--seed", str(s), "--env-id", "Acrobot-v1", "--per"]
    res = run_all(jobs, args, args.jobs)
    results.update(res)
    table = []
    for env, short in (("CartPole-v1", "cartpole"), ("Acrobot-v1", "acrobot")):
        for mode in ("uniform", "per"):
            steps = []
            for s in args.seeds:
                hit = first_reaching(res[f"{short}_{mode}_s{s}"]["evals"], THRESHOLDS[env])
                steps.append(hit and hit[0])
            reached = [x for x in steps if x is not None]
            table.append({"env": env, "replay": mode, "threshold": THRESHOLDS[env], "steps_per_seed": steps,
                          "median_steps": float(np.median(reached)) if len(reached) == len(steps) else None,
                          "final_eval_mean": [res[f"{short}_{mode}_s{s}"]["final_eval_mean"] for s in args.seeds]})
    return {"table": table}


def part_c(args, results) -> Dict:
    base = ["--seed", "0", "--total-timesteps", str(args.throughput_steps), "--eval-frequency", "0",
            "--eval-episodes", "1", "--no-plot"]
    variants = [("fastreplay", "prefetch", ["--buffer", "fastreplay", "--prefetch"]),
                ("fastreplay", "no prefetch", ["--buffer", "fastreplay", "--no-prefetch"]),
                ("reference", "sample per step", ["--buffer", "reference"])]  # the reference has no prefetch
    jobs, meta = {}, {}
    for mode in ("uniform", "per"):
        for impl, how, extra in variants:
            tag = f"throughput_{impl}_{how.replace(' ', '-')}_{mode}"
            jobs[tag] = base + extra + (["--per"] if mode == "per" else [])
            meta[tag] = (impl, how, mode)
    res = run_all(jobs, args, 1)  # one at a time: these are timings
    results.update(res)
    rows = []
    for tag, r in res.items():
        impl, how, mode = meta[tag]
        rows.append({"buffer": impl, "sampling": how, "replay": mode, "steps_per_sec": round(r["steps_per_sec"], 1),
                     "loop_time_s": round(r["loop_time_s"], 1), "buffer_time_s": round(r["buffer_time_s"], 2),
                     "buffer_share": round(r["buffer_share"], 4),
                     "buffer_us_per_step": round(1e6 * r["buffer_time_s"] / r["steps_this_run"], 1),
                     "load_average": r.get("load_average")})
    return {"steps": args.throughput_steps, "rows": rows}


def write_plots(args, summary, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "a" in summary:
        fig, ax = plt.subplots(figsize=(7, 4))
        for s, color in zip(args.seeds, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")):
            r = results[f"cartpole_uniform_s{s}"]
            ax.plot([e[0] for e in r["evals"]], [e[1] for e in r["evals"]], "-o", ms=2.5, color=color,
                    label=f"seed {s}")
        ax.axhline(475, color="k", ls="--", lw=1, label="475")
        ax.set(xlabel="environment steps", ylabel="greedy evaluation return (mean of 20 episodes)",
               title="DQN on CartPole-v1, default settings")
        ax.grid(alpha=0.3)
        ax.set_ylim(top=560)
        ax.legend(loc="upper left", ncol=len(args.seeds) + 1, fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "dqn_cartpole_default.png"), dpi=110)
        plt.close(fig)
    if "b" in summary:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, (env, short) in zip(axes, (("CartPole-v1", "cartpole"), ("Acrobot-v1", "acrobot"))):
            for mode, color in (("uniform", "tab:blue"), ("per", "tab:red")):
                runs = [results[f"{short}_{mode}_s{s}"] for s in args.seeds]
                plot_curves(ax, runs, color, "prioritized" if mode == "per" else "uniform")
            ax.axhline(THRESHOLDS[env], color="k", ls="--", lw=1, label=f"threshold {THRESHOLDS[env]:g}")
            ax.set(xlabel="environment steps", ylabel="greedy evaluation return (mean of 20 episodes)", title=env)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
        fig.suptitle("DQN: prioritized vs uniform replay (thin lines: single seeds)")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "dqn_per_vs_uniform.png"), dpi=110)
        plt.close(fig)


def _load(load: Optional[List[float]]) -> str:
    return "-" if load is None else " / ".join(f"{x:.1f}" for x in load)


def write_markdown(args, summary) -> str:
    lines = ["# DQN acceptance", "", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; command: `{summary['command']}`", ""]
    if "a" in summary:
        lines += ["## (a) CartPole-v1, default settings (`python -m fastreplay.dqn --seed S`)", "",
                  "| seed | first step with eval mean >= 475 | wall time then (s) | eval at 100k | total wall time (s) "
                  "| steps/s |", "|---|---|---|---|---|---|"]
        for r in summary["a"]["rows"]:
            lines.append(f"| {r['seed']} | {r['first_step_475']} | {r['wall_s_at_475']} | {r['eval_at_100k']:.1f} "
                         f"| {r['wall_time_s']} | {r['steps_per_sec']} |")
        lines += ["", f"{summary['a']['passed']} of {len(summary['a']['rows'])} seeds reached 475 within 100k "
                      "steps and 10 minutes.", "", "![](dqn_cartpole_default.png)", ""]
    if "b" in summary:
        lines += ["## (b) Prioritized vs uniform replay", "",
                  "| env | replay | threshold | steps to threshold per seed | median | eval at the end per seed |",
                  "|---|---|---|---|---|---|"]
        for r in summary["b"]["table"]:
            per_seed = ", ".join("-" if x is None else str(x) for x in r["steps_per_seed"])
            final = ", ".join(f"{x:.0f}" for x in r["final_eval_mean"])
            lines.append(f"| {r['env']} | {r['replay']} | {r['threshold']:g} | {per_seed} | {r['median_steps']} "
                         f"| {final} |")
        lines += ["", "![](dqn_per_vs_uniform.png)", ""]
    if "c" in summary:
        lines += [f"## (c) Whole-loop throughput, CartPole-v1, {summary['c']['steps']} steps, default settings", "",
                  "| buffer | sampling | replay | steps/s | time in buffer (s) | buffer share of loop time "
                  "| buffer us/step | load average at the end |", "|---|---|---|---|---|---|---|---|"]
        for r in summary["c"]["rows"]:
            lines.append(f"| {r['buffer']} | {r['sampling']} | {r['replay']} | {r['steps_per_sec']} "
                         f"| {r['buffer_time_s']} | {100 * r['buffer_share']:.1f}% | {r['buffer_us_per_step']} "
                         f"| {_load(r['load_average'])} |")
        lines += ["", f"Load average: 1, 5 and 15-minute averages at the end of each run, on {os.cpu_count()} "
                      "CPUs; other work on the machine slows these timings down.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="training runs at once for (a) and (b); (c) runs alone")
    p.add_argument("--throughput-steps", type=int, default=30_000)
    p.add_argument("--runs-dir", default="runs/dqn_acceptance", help="where the runs' own directories go")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="summary JSON, markdown and PNGs")
    p.add_argument("--rerun", action="store_true", help="train again even where results exist")
    p.add_argument("--train-args", default="", help="extra fastreplay.dqn arguments for every run (smoke tests only)")
    args = p.parse_args()
    EXTRA[:] = shlex.split(args.train_args)
    os.makedirs(args.out, exist_ok=True)

    summary: Dict = {"command": " ".join(["python examples/dqn_acceptance.py", *sys.argv[1:]])}
    results: Dict[str, Dict] = {}
    for part, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
        if part in args.parts:
            summary[part] = fn(args, results)
    write_plots(args, summary, results)
    summary["runs"] = {tag: {k: r[k] for k in ("steps", "wall_time_s", "steps_per_sec", "buffer_share",
                                                "final_eval_mean", "evals")} for tag, r in results.items()}
    with open(os.path.join(args.out, "dqn_acceptance.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = write_markdown(args, summary)
    with open(os.path.join(args.out, "dqn_acceptance.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
