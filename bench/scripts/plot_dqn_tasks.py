"""Plot multi-task DQN runs (``python -m fastreplay.dqn_tasks``): every task's greedy return against iterations, the
mean over seeds for each tasks mode (the range shaded), on one figure; and a markdown table of the final
evaluations, run by run.

    python -m bench.scripts.plot_dqn_tasks RUNS_DIR --out bench/results/dqn_tasks.png
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from collections import defaultdict

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs_dir", help="directory whose subdirectories hold results.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    results = []
    for path in sorted(glob.glob(os.path.join(args.runs_dir, "*", "results.json"))):
        with open(path) as f:
            results.append(json.load(f))
    tasks = results[0]["tasks"]
    by_mode = defaultdict(list)
    for r in results:
        by_mode[r["args"]["tasks_mode"]].append(r)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8))
    for mode, runs in sorted(by_mode.items()):
        its = [e["iteration"] for e in runs[0]["evals"]]
        for t, ax in enumerate(axes):
            ys = np.array([[e["eval"][t] for e in r["evals"]] for r in runs])
            line, = ax.plot(its, ys.mean(0), label=f"{mode} ({len(runs)} seeds)")
            ax.fill_between(its, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    for t, ax in enumerate(axes):
        ax.set_title(tasks[t], fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("greedy return (5 episodes)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"one network, one buffer(tasks={len(tasks)}); steps per iteration "
                 f"{results[0]['args']['steps_per_task']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("| tasks mode | seed | " + " | ".join(f"`{t}`" for t in tasks) + " | wall s |")
    print("|---|---:|" + "---:|" * (len(tasks) + 1))
    for mode, runs in sorted(by_mode.items()):
        for r in sorted(runs, key=lambda r: r["args"]["seed"]):
            print(f"| {mode} | {r['args']['seed']} | " + " | ".join(f"{x:.1f}" for x in r["final_eval"]) +
                  f" | {r['seconds']} |")
        means = np.mean([r["final_eval"] for r in runs], axis=0)
        print(f"| {mode} | mean | " + " | ".join(f"{x:.1f}" for x in means) + " | |")


if __name__ == "__main__":
    main()
