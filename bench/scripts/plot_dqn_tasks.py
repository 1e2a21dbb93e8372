"""Plot multi-task DQN runs (``python -m fastreplay.dqn_tasks``): every task's greedy return against iterations, one
line style per run, on one figure, and a markdown table of the final evaluations.

    python -m bench.scripts.plot_dqn_tasks RUN_DIR [RUN_DIR ...] --out bench/results/dqn_tasks.png
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (each holds results.json)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    results = []
    for run in args.runs:
        with open(os.path.join(run, "results.json")) as f:
            results.append(json.load(f))
    tasks = results[0]["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8))
    styles = ["-", "--", ":", "-."]
    for r, style in zip(results, styles):
        label = f"{r['args']['tasks_mode']} (rates {r['args']['steps_per_task']})"
        its = [e["iteration"] for e in r["evals"]]
        for t, ax in enumerate(axes):
            ax.plot(its, [e["eval"][t] for e in r["evals"]], style, label=label)
    for t, ax in enumerate(axes):
        ax.set_title(tasks[t], fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("greedy return")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("| run | " + " | ".join(tasks) + " | wall s |")
    print("|---|" + "---:|" * (len(tasks) + 1))
    for r in results:
        print(f"| {r['args']['tasks_mode']} | " + " | ".join(f"{x:.1f}" for x in r["final_eval"]) +
              f" | {r['seconds']} |")


if __name__ == "__main__":
    main()
