"""Plot R2D2-lite (LSTM, sequences with burn-in) against a feed-forward DQN on CartPole without velocities.

Reads ``bench/results/r2d2/<arch>_seed<k>.json`` (written by ``python -m fastreplay.r2d2 --json ...``) and writes
``bench/results/r2d2.png`` (training episode return against environment steps, a moving average over 20 episodes,
one line per run) and ``bench/results/r2d2.md`` (per run: training return of the last 20 episodes and the greedy
evaluation). Run from the repository root: ``python -m bench.scripts.plot_r2d2``.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

DIR = "bench/results/r2d2"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for path in sorted(glob.glob(os.path.join(DIR, "*.json"))):
        with open(path) as fh:
            runs.append(json.load(fh))
    runs.sort(key=lambda r: (r["arch"], r["seed"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"lstm": "tab:blue", "mlp": "tab:orange"}
    labels = {"lstm": "R2D2-lite (LSTM, burn-in, stored state)", "mlp": "DQN (MLP)"}
    styles = ["-", "--", ":", "-."]
    rows = []
    for r in runs:
        steps = np.array([s for s, _ in r["returns"]])
        ret = np.array([x for _, x in r["returns"]])
        w = 20
        smooth = np.convolve(ret, np.ones(w) / w, mode="valid") if len(ret) >= w else ret
        ax.plot(steps[len(steps) - len(smooth):], smooth, color=colors[r["arch"]], alpha=0.8,
                ls=styles[(r["seed"] - 1) % len(styles)], label=f"{labels[r['arch']]}, seed {r['seed']}")
        rows.append((r["arch"], r["seed"], r["steps"], r["updates"], r["seconds"], float(np.mean(ret[-20:])),
                     float(np.mean(r["eval_returns"])), len(r["eval_returns"])))
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (moving average of 20)")
    ax.set_title("CartPole-v1, positions only (velocities removed)")
    ax.axhline(500, color="gray", lw=0.5, ls="--")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig("bench/results/r2d2.png", dpi=120)
    lines = ["| agent | seed | env steps | updates | seconds | training return, last 20 episodes | greedy evaluation |",
             "|---|---|---|---|---|---|---|"]
    for arch, seed, steps, updates, secs, last, ev, n in rows:
        lines.append(f"| {labels[arch]} | {seed} | {steps:,} | {updates:,} | {secs:.0f} | {last:.1f} | "
                     f"{ev:.1f} ({n} episodes) |")
    print("\n".join(lines))
    with open("bench/results/r2d2.md", "w") as fh:
        fh.write("# R2D2-lite on CartPole without velocities\n\n"
                 "Observation: cart position and pole angle only (divided by their termination thresholds) "
                 "(`python/fastreplay/r2d2.py`, `PositionsOnly`). Each run: `nice -n 5 env OMP_NUM_THREADS=1 python -m "
                 "fastreplay.r2d2 --arch {lstm,mlp} --seed K --json bench/results/r2d2/{arch}_seedK.json` with the "
                 f"defaults ({defaults()}); plot and table: `python -m bench.scripts.plot_r2d2`. Seconds: wall time "
                 "on a shared 2-core machine (two runs at a time, other jobs running).\n\n"
                 "![R2D2-lite vs DQN](r2d2.png)\n\n" + "\n".join(lines) + "\n\n" + summary(rows) + "\n")


def defaults() -> str:
    """The defaults of ``python -m fastreplay.r2d2``, read from its parser (so this text cannot drift)."""
    from fastreplay import r2d2

    a = r2d2.parse([])
    return (f"{a.steps // 1000}k env steps, {a.num_envs} envs, sequences of {a.length} with burn-in {a.burn_in} and "
            f"period {a.length - a.burn_in}, {a.batch} sequences per update every {a.train_every} vector steps, "
            f"eta 0.9, priority exponent 0.9, importance-sampling exponent {a.beta}, {a.n_step}-step double DQN "
            f"targets{' with value rescaling' if a.rescale else ''}, Adam lr {a.lr:g}, gradient norm clip {a.clip:g}, "
            f"target network copied every {a.target_every} updates, epsilon annealed to {a.eps_end} over the first "
            f"{a.eps_fraction:.0%} of the steps; the MLP takes {a.batch} x {a.length} transitions per update from "
            f"the same kind of buffer, with the buffer's {a.n_step}-step returns and the same targets")


def summary(rows) -> str:
    """The greedy evaluations of each agent, counted against the goal (a mean of at least 400 of 500)."""
    ev = {arch: [r[6] for r in rows if r[0] == arch] for arch in ("lstm", "mlp")}
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    solved = sum(x >= 400 for x in ev["lstm"])
    return (f"Greedy evaluation of the final network (mean over the episodes above, 500 is the maximum): "
            f"R2D2-lite {fmt(ev['lstm'])} ({solved} of {len(ev['lstm'])} seeds at 400 or more); DQN (MLP) "
            f"{fmt(ev['mlp'])}. Without velocities the feed-forward network stays at the return of a policy that "
            "only sees where the pole is; the recurrent one infers the motion from its history.")


if __name__ == "__main__":
    main()
