"""Acceptance figures of the DQN trainer (``python -m fastreplay.dqn``), each part a subcommand.

    OMP_NUM_THREADS=1 python -m bench.scripts.accept_dqn cartpole          # 5 seeds x uniform/PER, default settings
    OMP_NUM_THREADS=1 python -m bench.scripts.accept_dqn speed --cleanrl-git /path/to/cleanrl/.git
    OMP_NUM_THREADS=1 python -m bench.scripts.accept_dqn atari-speed       # steps/s, buffer share, RSS
    OMP_NUM_THREADS=1 python -m bench.scripts.accept_dqn atari-learn --steps 200000

Every training run is a subprocess of ``python -m fastreplay.dqn`` (``--no-progress``, ``OMP_NUM_THREADS=1``) with its
own output directory under ``--work`` (default ``runs/accept_dqn``); a finished run's ``results.json`` is reused when
the script runs again, so an interrupted acceptance continues where it stopped. ``--jobs`` runs go at once (2 on
this 2-core machine). Results go to ``bench/results/dqn_<part>.{json,md,png}``.

- ``cartpole``: the default run (CartPole-v1, 100k steps) for seeds 1-5, uniform and ``--per``: the final greedy
  evaluation (20 episodes), the best periodic evaluation, the first step whose evaluation reached 475, the wall time;
  a table and a plot of the evaluation curves. Seeds 1-3 were the ones looked at while choosing the defaults; 4 and 5
  are held out.
- ``speed``: CleanRL's ``cleanrl/dqn.py`` (read from a CleanRL git directory at run time, with the gymnasium 1.x
  shims of ``bench_cleanrl.py``, its own buffer) and ``python -m fastreplay.dqn`` at CleanRL's hyperparameters,
  alternating in one process tree, both with ``OMP_NUM_THREADS=1``: environment steps per second of the loop.
- ``atari-speed``: ``ALE/Breakout-v5`` with the Atari defaults (1M-transition buffer, frame_stack 4), collection
  only: steps/s, the buffer's share and the process's peak RSS after 10^5 and 10^6 stored transitions.
- ``atari-learn``: a Breakout run long enough to rise above the random policy, with its budget stated: the learning
  loop's steps/s, its buffer share and the evaluations.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULTS = Path(__file__).resolve().parents[1] / "results"


def run_trainer(out: Path, argv: List[str], timeout: float = 7200) -> Dict[str, Any]:
    """``python -m fastreplay.dqn ARGV --output-dir out``; returns its results.json (cached in out)."""
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fastreplay.dqn", "--no-progress", "--output-dir", str(out / "runs"), *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    runs = sorted((out / "runs").iterdir())
    res = json.loads((runs[-1] / "results.json").read_text())
    res.update(argv=argv, process_wall_s=time.perf_counter() - t0, stdout=proc.stdout)
    done.write_text(json.dumps(res, indent=1))
    return res


def first_reaching(evals: List[List[float]], target: float) -> Optional[int]:
    return next((int(e[0]) for e in evals if e[1] >= target), None)


# --- CartPole: 5 seeds x uniform/PER with the default settings ---------------------------------------------------


def cartpole(opts: argparse.Namespace) -> None:
    seeds = [int(s) for s in opts.seeds.split(",")]
    jobs = [(variant, seed) for seed in seeds for variant in ("uniform", "per")]
    work = Path(opts.work) / "cartpole"

    def one(job):
        variant, seed = job
        argv = ["--seed", str(seed)] + (["--per"] if variant == "per" else []) + opts.extra.split()
        r = run_trainer(work / f"{variant}_{seed}", argv)
        print(f"{variant:7s} seed {seed}: final {r['final_eval_mean']:.1f}, best {r['best_eval'][1]:.1f}, first 475 "
              f"at {first_reaching(r['evals'], 475)}, {r['wall_time_s']:.0f} s", flush=True)
        return variant, seed, r

    with cf.ThreadPoolExecutor(opts.jobs) as pool:
        runs = list(pool.map(one, jobs))
    rows = []
    for variant, seed, r in runs:
        rows.append(dict(variant=variant, seed=seed, held_out=seed not in (1, 2, 3), final=r["final_eval_mean"],
                         best=r["best_eval"][1], best_step=r["best_eval"][0],
                         first_475=first_reaching(r["evals"], 475), wall_s=r["wall_time_s"],
                         steps_per_sec=r["steps_per_sec"], buffer_share=r["buffer_share"], evals=r["evals"],
                         load_average=r.get("load_average"), argv=r["argv"]))
    lines = [f"CartPole-v1, `python -m fastreplay.dqn --seed S [--per] {opts.extra}".rstrip() + "` (defaults: 100k "
             "steps, greedy evaluation of 20 episodes every 2500 steps), `OMP_NUM_THREADS=1`, "
             f"{opts.jobs} runs at a time on a 2-core machine shared with other work. Seeds 4 and 5 are held out.",
             "", "| replay | seed | final eval | best eval (step) | first eval >= 475 | wall s | steps/s | buffer share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in sorted(rows, key=lambda x: (x["variant"] != "uniform", x["seed"])):
        seed = f"{x['seed']}{' (held out)' if x['held_out'] else ''}"
        lines.append(f"| {x['variant']} | {seed} | {x['final']:.1f} | {x['best']:.1f} ({x['best_step']}) "
                     f"| {x['first_475'] if x['first_475'] is not None else 'never'} | {x['wall_s']:.0f} "
                     f"| {x['steps_per_sec']:.0f} | {100 * x['buffer_share']:.1f}% |")
    lines.append("")
    for variant in ("uniform", "per"):
        xs = [x for x in rows if x["variant"] == variant]
        ok = sum(x["final"] >= 475 and x["first_475"] is not None and x["first_475"] <= 100_000 for x in xs)
        lines.append(f"- {variant}: final evaluation >= 475 in **{ok} of {len(xs)}** seeds; median wall time "
                     f"{statistics.median(x['wall_s'] for x in xs):.0f} s")
    write(opts.name, {"rows": rows}, "\n".join(lines))
    plot_cartpole(rows, RESULTS / f"{opts.name}.png")


def plot_cartpole(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, variant in zip(axes, ("uniform", "per")):
        for x in sorted((x for x in rows if x["variant"] == variant), key=lambda x: x["seed"]):
            s = [e[0] for e in x["evals"]]
            m = [e[1] for e in x["evals"]]
            ax.plot(s, m, "-" if not x["held_out"] else "--", lw=1.2,
                    label=f"seed {x['seed']}{' (held out)' if x['held_out'] else ''}: final {x['final']:.0f}")
        ax.axhline(475, color="gray", lw=0.8, ls=":")
        ax.set_title(f"CartPole-v1, {'uniform' if variant == 'uniform' else 'prioritized'} replay")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("greedy evaluation, mean of 20 episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- speed against CleanRL's dqn.py at CleanRL's hyperparameters ---------------------------------------------------

#: CleanRL dqn.py's defaults in fastreplay.dqn's options (MSE loss, no gradient clipping, no Double DQN, 120-84).
CLEANRL_AS_FASTREPLAY = ("--learning-rate 2.5e-4 --buffer-size 10000 --target-network-frequency 500 --batch-size 128 "
                         "--start-e 1 --end-e 0.05 --exploration-fraction 0.5 --learning-starts 10000 "
                         "--train-frequency 10 --hidden-sizes 120 84 --loss mse --max-grad-norm 0 --no-double-dqn "
                         "--gamma 0.99 --tau 1.0")


def speed(opts: argparse.Namespace) -> None:
    from bench.scripts.bench_cleanrl import build, run_one

    tmp = Path(tempfile.mkdtemp(prefix="accept_dqn_cleanrl_"))
    rev = subprocess.run(["git", f"--git-dir={opts.cleanrl_git}", "rev-parse", "HEAD"], check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = build(opts.cleanrl_git, rev, tmp)["sb3"]  # CleanRL as it is, with its own (SB3-copied) buffer
    steps = opts.steps
    variants = ["cleanrl"] + [f"fastreplay {v}".strip() for v in opts.variants.split(",")]
    runs = []
    for rep in range(opts.repeats):
        order = variants if rep % 2 == 0 else variants[::-1]  # alternate who runs first
        for who in order:
            if who == "cleanrl":
                r = run_one(tree, "dqn.py", ["--seed", str(rep + 1), "--no-cuda", "--total-timesteps", str(steps)],
                            opts.timeout)
                sps, wall, cpu_sps = r["sps"], r["wall"], steps / r["loop_cpu"]
            else:
                out = Path(tempfile.mkdtemp(prefix="accept_dqn_fr_"))
                argv = ["--seed", str(rep + 1), "--total-timesteps", str(steps), "--eval-frequency", "0",
                        "--eval-episodes", "10", "--no-plot", *CLEANRL_AS_FASTREPLAY.split(),
                        *who.split()[1:], *opts.extra.split()]
                res = run_trainer(out, argv, opts.timeout)
                sps, wall, cpu_sps = res["steps_per_sec"], res["process_wall_s"], steps / res["loop_cpu_s"]
            print(f"rep {rep} {who:25s}: {sps:.0f} steps/s, {cpu_sps:.0f} steps per CPU second, process wall "
                  f"{wall:.1f} s", flush=True)
            runs.append(dict(who=who, rep=rep, sps=sps, cpu_sps=cpu_sps, wall=wall, load=os.getloadavg()))
    med = {w: statistics.median(r["sps"] for r in runs if r["who"] == w) for w in variants}
    cmed = {w: statistics.median(r["cpu_sps"] for r in runs if r["who"] == w) for w in variants}
    lines = [f"CartPole-v1, {steps} steps at CleanRL dqn.py's hyperparameters, `OMP_NUM_THREADS=1`, runs alternating "
             f"(CleanRL {rev[:10]} read from its git directory, gymnasium 1.x shims of bench_cleanrl.py, its own "
             "buffer). fastreplay.dqn: `" + " ".join(["--eval-frequency 0", CLEANRL_AS_FASTREPLAY, opts.extra]).strip()
             + "` (its other defaults: 3-step returns, annealed learning rate). Steps/s: CleanRL's last printed SPS "
             "(global_step / time since the loop started); fastreplay.dqn's loop steps/s (the final evaluation is "
             "outside the loop). Steps per CPU second: the same steps over the process's CPU time in the loop (all "
             "its threads), which other work on the machine inflates less than wall time. The machine has 2 cores "
             "and was shared with other work: compare within a row.", "",
             "| run | " + " | ".join(f"`{v}` steps/s (per CPU s)" for v in variants) + " |",
             "|---|" + "---:|" * len(variants)]
    for rep in range(opts.repeats):
        cells = [next(r for r in runs if r["who"] == v and r["rep"] == rep) for v in variants]
        lines.append(f"| {rep + 1} | " + " | ".join(f"{c['sps']:.0f} ({c['cpu_sps']:.0f})" for c in cells) + " |")
    lines.append("| median | " + " | ".join(f"{med[v]:.0f} ({cmed[v]:.0f}): {med[v] / med['cleanrl']:.2f}x "
                                           f"({cmed[v] / cmed['cleanrl']:.2f}x)" for v in variants) + " |")
    write(opts.name, {"cleanrl_rev": rev, "steps": steps, "runs": runs, "median": med, "median_cpu": cmed},
          "\n".join(lines))


def atari_speed(opts: argparse.Namespace) -> None:
    """Collection-only runs (epsilon 1 throughout, no learning, so no network in the loop) that fill the default 1M
    buffer to each size in --fills: steps/s of env + buffer, the buffer's share, and the process's peak RSS. The
    learning loop's own steps/s and buffer share are in the atari-learn run."""
    work = Path(opts.work) / "atari_speed"
    rows = []
    for n in (int(x) for x in opts.fills.split(",")):
        argv = ["--env-id", opts.env_id, "--total-timesteps", str(n), "--learning-starts", str(n), "--start-e", "1",
                "--end-e", "1", "--eval-frequency", "0", "--eval-episodes", "1", "--no-plot", *opts.extra.split()]
        rows.append(measure(work / f"fill_{n}", argv, f"{n} steps, collection only"))
    lines = [f"{opts.env_id}, Atari defaults (buffer capacity 1M transitions, frame_stack 4 stored as single 84x84 "
             "frames), collection only (random actions, no learning), `OMP_NUM_THREADS=1`, 2-core machine shared "
             "with other work.", "", "| run | stored transitions | steps/s (loop) | in the buffer | peak RSS |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['stored']} | {r['steps_per_sec']:.0f} | {100 * r['buffer_share']:.1f}% "
                     f"| {r['max_rss_gb']:.2f} GB |")
    write(opts.name, {"rows": rows}, "\n".join(lines))


def measure(out: Path, argv: List[str], what: str) -> Dict[str, Any]:
    """Run the trainer under /usr/bin/time-like accounting: peak RSS of the child from getrusage."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = run_trainer(out, argv)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if "max_rss_gb" not in res:  # ru_maxrss of children is the largest child so far (KiB on Linux)
        res["max_rss_gb"] = peak * 1024 / 1e9 if peak > before else float("nan")
        (out / "results.json").write_text(json.dumps(res, indent=1))
    print(f"{what}: {res['steps_per_sec']:.0f} steps/s, buffer {100 * res['buffer_share']:.1f}%, "
          f"peak RSS {res['max_rss_gb']:.2f} GB", flush=True)
    return dict(what=what, stored=res["steps"], steps_per_sec=res["steps_per_sec"], buffer_share=res["buffer_share"],
                max_rss_gb=res["max_rss_gb"], wall_s=res["wall_time_s"], argv=argv)


def atari_learn(opts: argparse.Namespace) -> None:
    argv = ["--env-id", opts.env_id, "--total-timesteps", str(opts.steps), *opts.extra.split()]
    out = Path(opts.work) / "atari_learn"
    try:
        res = run_trainer(out, argv, timeout=opts.timeout)
        head = (f"{res['steps']} steps in {res['wall_time_s'] / 60:.0f} min ({res['steps_per_sec']:.0f} steps/s, "
                f"{100 * res['buffer_share']:.1f}% in the buffer)")
        evals = res["evals"]
    except subprocess.TimeoutExpired:  # report what the log has: the run was stopped at the time limit
        log = sorted((out / "runs").iterdir())[-1] / "log.jsonl"
        recs = [json.loads(line) for line in log.read_text().splitlines()]
        evals = [[r["step"], r["mean"], r["wall_s"]] for r in recs if r["type"] == "eval"]
        train = [r for r in recs if r["type"] == "train"]
        head = (f"stopped by the {opts.timeout / 60:.0f}-minute limit at step {train[-1]['step']} "
                f"({train[-1]['steps_per_sec']:.0f} steps/s, buffer "
                f"{100 * train[-1]['buffer_time_s'] / (train[-1]['step'] / train[-1]['steps_per_sec']):.1f}% of the loop)")
        res = {"evals": evals, "train": train[-1], "stopped": True}
    lines = [f"`python -m fastreplay.dqn --env-id {opts.env_id} --total-timesteps {opts.steps} {opts.extra}`".rstrip()
             + f": {head}, on a 2-core machine shared with other work, `OMP_NUM_THREADS=1`.", "",
             "| step | evaluation (mean return of 8 episodes, epsilon 0.05) | wall min |", "|---:|---:|---:|"]
    lines += [f"| {int(e[0])} | {e[1]:.1f} | {e[2] / 60:.0f} |" for e in evals]
    res["random_policy"] = random_policy(opts.env_id)
    lines.append(f"\nThe uniformly random policy, evaluated the same way (8 episodes, seeds as the first evaluation): "
                 f"{res['random_policy']:.1f}.")
    write(opts.name, res, "\n".join(lines))


def random_policy(env_id: str, episodes: int = 8, seed: int = 1) -> float:
    """Mean return of uniformly random actions (epsilon 1) under the trainer's evaluation."""
    import torch

    from fastreplay import dqn

    args = dqn.resolved(dqn.Args(env_id=env_id))
    envs = dqn.make_vec_env(env_id, episodes)
    try:
        net = dqn.make_q_network(args, envs.single_observation_space.shape, int(envs.single_action_space.n))
        return float(dqn.evaluate(net, envs, seed + 100_000, torch.device("cpu"), args.frame_stack, 1.0).mean())
    finally:
        envs.close()


def write(name: str, data: Dict[str, Any], md: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(md + "\n")
    print(md)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--work", default="runs/accept_dqn", help="run directories (finished runs are reused)")
    common.add_argument("--extra", default="", help="more fastreplay.dqn options for every run")
    common.add_argument("--timeout", type=float, default=7200)
    p = sub.add_parser("cartpole", parents=[common])
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--name", default="dqn_cartpole")
    p = sub.add_parser("speed", parents=[common])
    p.add_argument("--cleanrl-git", required=True)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=",--prefetch", help="fastreplay.dqn option sets, comma-separated")
    p.add_argument("--name", default="dqn_speed")
    p = sub.add_parser("atari-speed", parents=[common])
    p.add_argument("--env-id", default="ALE/Breakout-v5")
    p.add_argument("--fills", default="100000,1000000", help="buffer sizes to fill (comma-separated)")
    p.add_argument("--name", default="dqn_atari_speed")
    p = sub.add_parser("atari-learn", parents=[common])
    p.add_argument("--env-id", default="ALE/Breakout-v5")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--name", default="dqn_atari_learn")
    opts = ap.parse_args(argv)
    {"cartpole": cartpole, "speed": speed, "atari-speed": atari_speed, "atari-learn": atari_learn}[opts.part](opts)


if __name__ == "__main__":
    main()
