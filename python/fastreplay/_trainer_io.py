"""The DQN trainer's input and output (:mod:`fastreplay.dqn`): batches from the buffer (prefetched or sampled),
time spent in the buffer, the JSON-lines log, checkpoints, the learning-curve plot and results.json."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import time
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn

from ._persist import atomic_open


@contextlib.contextmanager
def batch_source(buf: Any, batch_size: int, prefetch: bool, beta: Optional[float] = None) -> Iterator[Callable]:
    """Yield ``draw(beta=None) -> Batch``: batches from the buffer's background prefetcher when ``prefetch`` is on
    and the buffer has one, else a ``buf.sample`` per call. ``beta`` (prioritized replay) may change per draw."""
    if prefetch and hasattr(buf, "prefetch"):
        it = buf.prefetch(batch_size, depth=2, threads=1, beta=beta)
        try:
            def draw(beta: Optional[float] = None) -> Any:
                if beta is not None:
                    it.beta = beta
                return next(it)

            yield draw
        finally:
            it.close()
    elif beta is None:
        yield lambda beta=None: buf.sample(batch_size)
    else:
        yield lambda beta: buf.sample(batch_size, beta)


class Stopwatch:
    """Seconds spent inside ``with stopwatch.timed():`` blocks, summed (the trainer's time inside the buffer). A plain
    class, not a generator-based context manager: it runs a few times per environment step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def timed(self) -> "Stopwatch":
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.seconds += time.perf_counter() - self._t0


class RunLog:
    """A run's ``log.jsonl``, opened for appending: one JSON object per line (its ``type``, ``step``, ...)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a")

    def write(self, record: Dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def buffer_path(checkpoint: str) -> str:
    """Where a checkpoint's replay buffer lives: beside it, ``<checkpoint>.buffer`` (the buffer's own format)."""
    return checkpoint + ".buffer"


def save_best(path: str, args: Any, q_network: nn.Module, step: int, mean: float) -> None:
    """Write the best evaluated network so far (``best.pt`` in the run directory), atomically: a dict with
    ``q_network`` (its state dict), ``step``, ``mean`` (the evaluation's mean return) and ``args``."""
    with atomic_open(path) as f:
        torch.save({"q_network": q_network.state_dict(), "step": step, "mean": mean,
                    "args": dataclasses.asdict(args)}, f)


class TensorBoard:
    """TensorBoard event files in ``log_dir`` (``--track tensorboard``, as CleanRL's ``--track`` names its
    scalars: charts/episodic_return, losses/td_loss, ...); with ``log_dir`` None every call does nothing."""

    def __init__(self, log_dir: Optional[str]) -> None:
        self._writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), step)

    def scalars(self, values: Dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def save_checkpoint(path: str, args: Any, q_network: nn.Module, target_network: nn.Module,
                    optimizer: torch.optim.Optimizer, rng: np.random.Generator, **counters: Any) -> None:
    """Write the networks, the optimizer, ``counters`` (steps, updates, the loop's state, the environments' state:
    plain data), the arguments and the random states to ``path``, atomically and durably: an interrupted save leaves
    the previous checkpoint intact."""
    state = {"q_network": q_network.state_dict(), "target_network": target_network.state_dict(),
             "optimizer": optimizer.state_dict(), **counters, "args": dataclasses.asdict(args),
             "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path) as f:
        torch.save(state, f)


_COUNTERS = ("global_step", "updates", "episodes")
_KEYS = ("q_network", "target_network", "optimizer", *_COUNTERS, "evals", "args", "torch_rng", "numpy_rng")


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text.split(". ")[0][:200]


def read_checkpoint(path: str, args: Any, device: torch.device) -> Dict[str, Any]:
    """Load ``path`` as data (``torch.load(weights_only=True)``: tensors, dicts, lists, numbers and strings; a file
    that needs any other class is refused, never executed) and check what :func:`save_checkpoint` writes: its keys,
    counters, evaluation history and random states, and that it is for ``args``' environment and network. Raises
    ``ValueError`` naming the file and what is wrong."""
    where = f"--resume {path!r}"
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # garbage, or a pickle of objects other than plain data
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. |\n|$)", str(e))
        reason = m.group(1).strip() if m else _first_line(e)
        raise ValueError(f"{where}: not a checkpoint of plain data; torch.load(weights_only=True) refused it "
                         f"({reason}). Checkpoints are loaded as data, never as code") from None
    except Exception as e:  # truncated, empty, not a zip, ...: the file is untrusted input
        raise ValueError(f"{where}: not a readable torch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{where}: holds a {type(ckpt).__name__}, not a fastreplay-dqn checkpoint (a dict)")
    missing = [k for k in _KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{where}: not a fastreplay-dqn checkpoint: missing {', '.join(map(repr, missing))}")
    was = ckpt["args"]
    if (not isinstance(was, dict) or not isinstance(was.get("env_id"), str)
            or not isinstance(was.get("hidden_sizes"), (list, tuple))):
        raise ValueError(f"{where}: 'args' must be a dict with 'env_id' and 'hidden_sizes'")
    if was["env_id"] != args.env_id or tuple(was["hidden_sizes"]) != tuple(args.hidden_sizes):
        raise ValueError(
            f"{where}: checkpoint is for {was['env_id']} with hidden sizes "
            f"{list(was['hidden_sizes'])}, not {args.env_id} with {list(args.hidden_sizes)}"
        )
    for k in _COUNTERS:
        v = ckpt[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{where}: {k!r} must be an integer >= 0, got {v!r}")
    evals = ckpt["evals"]
    if not isinstance(evals, (list, tuple)) or not all(
            isinstance(e, (list, tuple)) and len(e) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in e) for e in evals):
        raise ValueError(f"{where}: 'evals' must be a list of [step, mean return, seconds]")
    for k in ("q_network", "target_network", "optimizer"):
        if not isinstance(ckpt[k], dict):
            raise ValueError(f"{where}: {k!r} must be a state dict, got {type(ckpt[k]).__name__}")
    if "loop" in ckpt:
        loop = ckpt["loop"]
        want = {"update_credit", "recent", "ep_return", "ep_length", "was_done", "run_dir"}
        if not isinstance(loop, dict) or not want <= set(loop):
            raise ValueError(f"{where}: 'loop' must be a dict with {', '.join(sorted(want))}")
        sizes = {len(loop[k]) if isinstance(loop[k], list) else -1 for k in ("ep_return", "ep_length", "was_done")}
        if sizes != {args.num_envs}:
            raise ValueError(f"{where}: checkpoint is for another number of environments than --num-envs "
                             f"{args.num_envs}")
    rng_now = torch.get_rng_state()
    t_rng = ckpt["torch_rng"]
    if not isinstance(t_rng, torch.Tensor) or t_rng.dtype != rng_now.dtype or t_rng.shape != rng_now.shape:
        raise ValueError(f"{where}: 'torch_rng' must be a {rng_now.dtype} tensor of shape {list(rng_now.shape)}")
    try:
        np.random.default_rng(0).bit_generator.state = ckpt["numpy_rng"]
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: 'numpy_rng' is not a numpy PCG64 state ({type(e).__name__}: {e})") from None
    return ckpt


def load_checkpoint(path: str, args: Any, q_network: nn.Module, target_network: nn.Module,
                    optimizer: torch.optim.Optimizer, rng: np.random.Generator, device: torch.device,
                    restore_torch_rng: bool = True) -> Dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into the given objects and random states (torch's global one
    only with ``restore_torch_rng``); return the checkpoint (its counters and evaluation history). Raises
    ``ValueError`` naming the file for a file that is not such a checkpoint, or one for another environment or
    network (:func:`read_checkpoint`)."""
    ckpt = read_checkpoint(path, args, device)
    where = f"--resume {path!r}"
    for name, module in (("q_network", q_network), ("target_network", target_network)):
        try:
            module.load_state_dict(ckpt[name])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            detail = "; ".join(line.strip() for line in str(e).strip().splitlines())[:300]  # one line per mismatch
            raise ValueError(f"{where}: {name!r} does not fit the network: {detail}") from None
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # Adam's moments must match their parameters (load does not check)
            for p in group["params"]:
                for k, v in optimizer.state.get(p, {}).items():
                    if k != "step" and (not isinstance(v, torch.Tensor) or v.shape != p.shape):
                        raise ValueError(f"state {k!r} has shape {getattr(v, 'shape', None)}, not {p.shape}")
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        first = _first_line(e)
        raise ValueError(f"{where}: 'optimizer' does not fit the network's Adam: {first}") from None
    if restore_torch_rng:
        torch.set_rng_state(ckpt["torch_rng"].cpu())
    rng.bit_generator.state = ckpt["numpy_rng"]
    return ckpt


def plot_learning_curve(log_path: str, png_path: str, title: str) -> None:
    """Training-episode returns and the greedy evaluations (mean +- std) from a run's log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes, evals = [], []
    with open(log_path) as f:
        for line in f:
            rec = json.loads(line)
            if rec["type"] == "episode":
                episodes.append((rec["step"], rec["return"]))
            elif rec["type"] == "eval":
                evals.append((rec["step"], rec["mean"], rec["std"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if episodes:
        s, r = np.array(episodes).T
        ax.plot(s, r, ".", ms=2, alpha=0.3, color="tab:blue", label="training episodes")
    if evals:
        s, m, sd = np.array(evals).T
        ax.plot(s, m, "-o", ms=3, color="tab:orange", label="greedy evaluation (mean)")
        ax.fill_between(s, m - sd, m + sd, color="tab:orange", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def finish_run(args: Any, results: Dict[str, Any]) -> Dict[str, Any]:
    """Add the plot (``args.plot``), the checkpoint path and the load average to a run's results; write them to
    ``<run_dir>/results.json`` and return them."""
    plot_path = None
    if args.plot:
        plot_path = os.path.join(results["run_dir"], "learning_curve.png")
        plot_learning_curve(results["log_path"], plot_path, f"DQN on {args.env_id} (seed {args.seed})")
    results.update({
        "plot_path": plot_path, "checkpoint_path": args.save,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # context for the timings
    })
    with open(os.path.join(results["run_dir"], "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
