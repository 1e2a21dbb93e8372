"""Plot R2D2-lite (LSTM, sequences with burn-in) against a feed-forward DQN on CartPole without velocities.

Reads ``bench/results/r2d2/<arch>_seed<k>.json`` (written by ``python -m fastreplay.r2d2 --json ...``) and writes
``bench/results/r2d2.png`` (left: training episode return against environment steps, a moving average over 20
episodes; right: the greedy checks made during training; one line per run) and ``bench/results/r2d2.md`` (per run:
training return of the last 20 episodes, greedy evaluation of the final network and of the best check's network).
Run from the repository root: ``python -m bench.scripts.plot_r2d2``.
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
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"lstm": "tab:blue", "mlp": "tab:orange"}
    labels = {"lstm": "R2D2-lite (LSTM, burn-in, stored state)", "mlp": "DQN (MLP)"}
    short = {"lstm": "R2D2-lite (LSTM)", "mlp": "DQN (MLP)"}
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
    rows = []
    for r in runs:
        steps = np.array([s for s, _ in r["returns"]])
        ret = np.array([x for _, x in r["returns"]])
        w = 20
        smooth = np.convolve(ret, np.ones(w) / w, mode="valid") if len(ret) >= w else ret
        style = dict(color=colors[r["arch"]], alpha=0.8, ls=styles[(r["seed"] - 1) % len(styles)],
                     label=f"{short[r['arch']]}, seed {r['seed']}")
        ax.plot(steps[len(steps) - len(smooth):], smooth, **style)
        checks = np.array(r.get("checks") or np.zeros((0, 2)))
        if len(checks):
            ax2.plot(checks[:, 0], checks[:, 1], marker=".", **style)
        best = r.get("eval_best_returns")
        rows.append(dict(arch=r["arch"], seed=r["seed"], steps=r["steps"], updates=r["updates"],
                         seconds=r["seconds"], last=float(np.mean(ret[-20:])), final=float(np.mean(r["eval_returns"])),
                         n=len(r["eval_returns"]), best=None if best is None else float(np.mean(best)),
                         best_step=r.get("best_check")))
    for a in (ax, ax2):
        a.set_xlabel("environment steps")
        a.axhline(500, color="gray", lw=0.5, ls="--")
    ax.set_ylabel("training return (moving average of 20)")
    ax.set_title("CartPole-v1, positions only: training")
    ax2.set_ylabel("greedy return (mean of 5 episodes)")
    ax2.set_title("greedy checks during training")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig("bench/results/r2d2.png", dpi=110)
    lines = ["| agent | seed | env steps | updates | seconds | training return, last 20 episodes | greedy evaluation, "
             "final network | greedy evaluation, network of the best check (its step) |",
             "|---|---|---|---|---|---|---|---|"]
    for w in rows:
        best = "-" if w["best"] is None else f"{w['best']:.1f} ({w['best_step']:,})"
        lines.append(f"| {labels[w['arch']]} | {w['seed']} | {w['steps']:,} | {w['updates']:,} | {w['seconds']:.0f} | "
                     f"{w['last']:.1f} | {w['final']:.1f} | {best} |")
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
    return (f"{a.steps // 1000}k env steps, {a.num_envs} envs, a buffer of {a.capacity:,} steps, sequences of "
            f"{a.length} with burn-in {a.burn_in} and period {a.length - a.burn_in}, {a.batch} sequences per update "
            f"every {a.train_every} vector steps, "
            f"eta 0.9, priority exponent 0.9, importance-sampling exponent {a.beta}, {a.n_step}-step double DQN "
            f"targets{' with value rescaling' if a.rescale else ''}, Adam lr {a.lr:g}, gradient norm clip {a.clip:g}, "
            f"target network copied every {a.target_every} updates, epsilon annealed to {a.eps_end} over the first "
            f"{a.eps_fraction:.0%} of the steps; the MLP takes {a.batch} x {a.length} transitions per update from "
            f"the same kind of buffer, with the buffer's {a.n_step}-step returns and the same targets")


def summary(rows) -> str:
    """The greedy evaluations of each agent, counted against the goal (a mean of at least 400 of 500)."""
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
    out = []
    for key, what in (("final", "the final network"), ("best", "the network of the best check")):
        ev = {arch: [w[key] for w in rows if w["arch"] == arch and w[key] is not None] for arch in ("lstm", "mlp")}
        if not ev["lstm"]:
            continue
        solved = sum(x >= 400 for x in ev["lstm"])
        out.append(f"{what}: R2D2-lite {fmt(ev['lstm'])} (mean {np.mean(ev['lstm']):.1f}; {solved} of "
                   f"{len(ev['lstm'])} seeds at 400 or more), DQN (MLP) {fmt(ev['mlp'])} "
                   f"(mean {np.mean(ev['mlp']):.1f})")
    from fastreplay import r2d2

    n, a = (rows[0]["n"] if rows else 0), r2d2.parse([])
    return (f"Greedy evaluation ({n} episodes on seeds the checks do not use, 500 is the maximum) of "
            + "; of ".join(out) + ". Without velocities the feed-forward network stays at the return of a policy "
            "that only sees where the pole is; the recurrent one infers the motion from its history. The checks "
            f"({a.check_episodes} greedy episodes every {a.check_every:,} env steps) choose the network kept, and the "
            "evaluation then runs on other episodes, so the choice does not inflate it.")


if __name__ == "__main__":
    main()
