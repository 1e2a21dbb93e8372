"""The DQN trainer's command line (``fastreplay-dqn``, ``python -m fastreplay.dqn``) around its options: the checks
on :class:`fastreplay.dqn.Args`, one-line errors, and the summary printed at the end. tyro parses the options."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, ContextManager, Dict, Iterator

import gymnasium as gym
import torch

if TYPE_CHECKING:
    from .dqn import Args

PROG = "fastreplay-dqn"
DESCRIPTION = "Train DQN on a gymnasium environment with a fastreplay buffer."


def check_args(args: Args) -> None:
    """Raise ``ValueError`` naming the first bad argument. Also checks the environment's spaces, creates the output
    directories and checks that they are writable; the ``--resume`` file's contents are checked by
    :func:`fastreplay.dqn.check_resume`. ``args`` must be resolved (:func:`fastreplay.dqn.resolved`: no option left
    at None), as both of the trainer's entry points do first."""
    positive = ["total_timesteps", "num_envs", "buffer_size", "batch_size", "target_network_frequency",
                "train_frequency", "eval_episodes", "log_frequency", "n_step", "frame_stack"]
    for name in positive:
        v = getattr(args, name)
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
    for name in ["learning_starts", "eval_frequency", "threads"]:
        v = getattr(args, name)
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0, got {v!r}")
    if not args.hidden_sizes or any(h <= 0 for h in args.hidden_sizes):
        raise ValueError(f"--hidden-sizes must be positive integers, got {list(args.hidden_sizes)}")
    ranges = {"learning_rate": (0, math.inf, False), "gamma": (0, 1, True), "tau": (0, 1, False),
              "start_e": (0, 1, True), "end_e": (0, 1, True), "exploration_fraction": (0, 1, False),
              "max_grad_norm": (0, math.inf, True), "per_alpha": (0, math.inf, True), "per_beta0": (0, 1, True),
              "per_eps": (0, math.inf, True), "eval_epsilon": (0, 1, True)}
    for name, (lo, hi, lo_ok) in ranges.items():
        v = getattr(args, name)
        if not math.isfinite(v) or not (lo <= v <= hi) or (v == lo and not lo_ok):
            bound = f"[{lo}, {hi}]" if lo_ok else f"({lo}, {hi}]"
            raise ValueError(f"--{name.replace('_', '-')} must be in {bound}, got {v}")
    if isinstance(args.seed, bool) or not isinstance(args.seed, int) or not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {args.seed!r}")  # the buffer's seed range
    if args.n_step > 2**31 - 1 or args.frame_stack > 2**31 - 1:
        raise ValueError("--n-step and --frame-stack must be at most 2**31 - 1")
    if args.buffer_size < args.batch_size:
        raise ValueError(f"--buffer-size ({args.buffer_size}) must be at least --batch-size ({args.batch_size})")
    _check_device(args.device)
    if args.track == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError("--track tensorboard needs the tensorboard package (pip install fastreplay[train])") from None
    if args.resume is not None and not os.path.isfile(args.resume):
        raise ValueError(f"--resume {args.resume!r}: no such checkpoint file")
    # Outputs are checked before any training, so that a bad path cannot cost a finished run.
    _check_writable_dir(args.output_dir, "--output-dir", args.output_dir)
    if args.save is not None:
        if os.path.isdir(args.save):
            raise ValueError(f"--save {args.save!r} is a directory; give a file path for the checkpoint")
        _check_writable_dir(os.path.dirname(os.path.abspath(args.save)), "--save", args.save)
    env = _make_env(args.env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box):
        raise ValueError(f"--env-id {args.env_id}: DQN needs a Box observation space, got {obs_space}")
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ValueError(f"--env-id {args.env_id}: DQN needs a Discrete action space, got {act_space}")
    if int(act_space.start) != 0:
        raise ValueError(f"--env-id {args.env_id}: Discrete action spaces must start at 0, got {act_space}")


def _check_device(device: str) -> None:
    """The trainer runs on the CPU or on an available CUDA device; torch parses more (mps, meta, xla, ...)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"--device {device!r} is not a torch device: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device!r}: the trainer runs on 'cpu' or 'cuda' devices, not {dev.type!r}")


def _check_writable_dir(directory: str, flag: str, value: str) -> None:
    """Create ``directory`` if needed and create and remove a file in it (as the checkpoint's atomic save does)."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".fastreplay-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ValueError(f"{flag} {value!r}: cannot write in directory {directory!r}: {reason}") from None


def _make_env(env_id: str) -> gym.Env:
    from ._trainer_envs import make_env

    try:
        return make_env(env_id)
    except ImportError as e:  # ALE/... without ale-py
        raise ValueError(f"--env-id {env_id!r}: needs {e.name or 'a missing package'} (pip install fastreplay[atari])") from None
    except gym.error.Error as e:  # unknown id, missing dependency, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--env-id {env_id!r}: {first}") from None


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Around parsing and checking the command line: a bad argument ends the program with one
    ``fastreplay-dqn: error: ...`` line on stderr and exit status 2, not a traceback: tyro's parse errors (in
    argparse's words, through tyro's parse-error hook) and the ``ValueError`` of :func:`check_args`. A tyro without
    that hook reports its parse errors in its own box instead."""
    try:
        with _tyro_error_hook():
            yield
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


class _BadCommandLine(ValueError):
    pass


def _tyro_error_hook() -> ContextManager[None]:
    try:  # tyro >= 1.0.17; private and marked unstable by tyro, hence the fallback
        from tyro._errors import on_parse_error
    except ImportError:
        return contextlib.nullcontext()
    return on_parse_error(_raise_one_line)


def _raise_one_line(event: Any) -> None:
    """tyro's parse-error hook: raise :class:`_BadCommandLine` with argparse's wording for the errors these
    options can have; return (tyro prints its own report) for any other kind."""
    kind = type(event).__name__
    try:
        flag = "/".join(event.argument.lowered.name_or_flags) if getattr(event, "argument", None) else None
        if kind == "InvalidChoice":
            choices = ", ".join(repr(c) for c in event.choices)
            message = f"argument {flag}: invalid choice: {event.value!r} (choose from {choices})"
        elif kind == "InstantiationFailure":  # a value of the wrong type, e.g. --total-timesteps many
            text = event.message
            # An Optional option lists one error per type tried; the one that matters is not NoneType's.
            errors = [line.split(">:", 1)[1].strip() for line in text.splitlines()
                      if line.startswith("- <class") and "NoneType" not in line]
            text = "; ".join(errors) if errors else text.strip().splitlines()[0]
            message = f"argument {flag}: {text}" if flag else text
        elif kind == "UnrecognizedArgs":
            message = "unrecognized arguments: " + " ".join(event.tokens)
        elif kind == "BadValue" and event.reason == "too_few_values":
            message = f"argument {flag}: expected a value"
        else:
            return
    except AttributeError:  # another tyro's events: let it report the error itself
        return
    raise _BadCommandLine(message)


def print_summary(args: Args, results: Dict[str, Any]) -> None:
    print(
        f"{args.env_id}: {results['steps']} steps in {results['wall_time_s']:.1f} s "
        f"({results['steps_per_sec']:.0f} steps/s, {100 * results['buffer_share']:.1f}% in the buffer); "
        f"final greedy evaluation {results['final_eval_mean']:.1f} over {len(results['final_eval_returns'])} episodes"
    )
    if results["best_eval"] is not None:
        step, mean = results["best_eval"]
        kept = f"its network: {results['best_path']}" if results.get("best_path") else "not kept"
        print(f"best evaluation: {mean:.1f} at step {step}; {kept}")
    print(f"log: {results['log_path']}")
    if results["plot_path"]:
        print(f"plot: {results['plot_path']}")
    if args.save:
        print(f"checkpoint: {args.save}")
