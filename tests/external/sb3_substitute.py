"""pytest plugin: run Stable-Baselines3's own test files with fastreplay.sb3's buffers in place of SB3's.

Loaded by ``.ci/sb3_suite.py`` (``-p sb3_substitute`` with this folder on ``PYTHONPATH``); SB3's files are run as
they are in its sdist, nothing vendored or edited.

* While pytest imports the test modules, every ``stable_baselines3`` module attribute that holds one of SB3's buffer
  classes named in ``SUBSTITUTES`` holds fastreplay's instead, so ``from stable_baselines3.common.buffers import
  ReplayBuffer`` in a test module (and the ``parametrize`` lists built from it at import) gets fastreplay's class.
  The attributes are restored once collection ends: SB3's own code still names its classes at run time (its
  ``DictReplayBuffer`` calls ``super(ReplayBuffer, self)``). fastreplay's ``HerReplayBuffer`` subclasses SB3's, so
  SB3's run-time ``issubclass(replay_buffer_class, HerReplayBuffer)`` checks (env passed to the buffer,
  ``set_env``/``truncate_last_trajectory`` in ``load_replay_buffer``) hold for it.
* Algorithms built without ``replay_buffer_class`` pick fastreplay's buffer by SB3's own rule (Dict observations:
  ``DictReplayBuffer``; ``n_steps == 1``: ``ReplayBuffer``; ``n_steps > 1``: ``NStepReplayBuffer``, if fastreplay
  has one, else SB3's).
* Everything SB3 imports (algorithms, HER) is imported before any attribute is swapped, so no SB3 class is ever
  built on top of fastreplay's.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, List, Tuple

import pytest

import stable_baselines3  # noqa: F401  every algorithm and HER, with SB3's own classes, before any swap
from gymnasium import spaces
from stable_baselines3.common import buffers as _sb3_buffers
from stable_baselines3.common import off_policy_algorithm as _opa

import fastreplay.sb3 as _fs

# SB3 class name -> fastreplay class: each one fastreplay.sb3 provides.
SUBSTITUTES: Dict[str, type] = {
    name: getattr(_fs, name)
    for name in ("ReplayBuffer", "DictReplayBuffer", "NStepReplayBuffer", "HerReplayBuffer")
    if hasattr(_fs, name)
}
_REAL: Dict[str, type] = {}
for _name in SUBSTITUTES:
    _REAL[_name] = getattr(_sb3_buffers, _name, None) or getattr(stable_baselines3, _name)

_swapped: List[Tuple[Any, str, type]] = []  # (module, attribute, SB3's class) while collection runs
_built: Dict[str, int] = {}  # buffers an algorithm built by default, per class name


def _swap_in() -> None:
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").split(".")[0] != "stable_baselines3":
            continue
        for name, real in _REAL.items():
            if getattr(mod, name, None) is real:
                _swapped.append((mod, name, real))
                setattr(mod, name, SUBSTITUTES[name])


def _swap_out() -> None:
    while _swapped:
        mod, name, real = _swapped.pop()
        setattr(mod, name, real)


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session):
    _swap_in()
    try:
        yield
    finally:
        _swap_out()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check that every collected SB3 test module got fastreplay's classes (a silent no-op run proves nothing)."""
    modules = {item.module for item in session.items if getattr(item, "module", None) is not None}
    for mod in modules:
        for name, ours in SUBSTITUTES.items():
            if name in vars(mod) and vars(mod)[name] is not ours:
                got = vars(mod)[name]
                raise pytest.UsageError(f"sb3_substitute: {mod.__name__}.{name} is {got!r}, not fastreplay's")


_original_setup_model = _opa.OffPolicyAlgorithm._setup_model


def _setup_model(self: Any) -> None:
    """SB3's default buffer choice (OffPolicyAlgorithm._setup_model), made with fastreplay's classes."""
    if self.replay_buffer_class is None:
        n_steps = getattr(self, "n_steps", 1)
        if isinstance(self.observation_space, spaces.Dict):
            name = "DictReplayBuffer" if n_steps == 1 else None  # n_steps > 1: SB3 raises its own assertion
        else:
            name = "ReplayBuffer" if n_steps == 1 else "NStepReplayBuffer"
        if name in SUBSTITUTES:
            self.replay_buffer_class = SUBSTITUTES[name]
            if name == "NStepReplayBuffer":  # what SB3 adds for its own NStepReplayBuffer
                self.replay_buffer_kwargs.update({"n_steps": n_steps, "gamma": self.gamma})
                with warnings.catch_warnings():  # SB3's "n_steps is ignored with a custom class": SB3's choice here
                    warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored", category=UserWarning)
                    _original_setup_model(self)
                _built[name] = _built.get(name, 0) + 1
                return
            _built[name] = _built.get(name, 0) + 1
    _original_setup_model(self)


_opa.OffPolicyAlgorithm._setup_model = _setup_model


_cores = [0]  # fastreplay.sb3 buffers built so far: every one's __init__ calls its class's _new_core once


def _counting(new_core: Any) -> Any:
    def _new_core(self: Any) -> Any:
        _cores[0] += 1
        return new_core(self)

    return _new_core


for _cls in {_fs.ReplayBuffer, *SUBSTITUTES.values()}:
    if "_new_core" in vars(_cls):
        _cls._new_core = _counting(vars(_cls)["_new_core"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Record on each test (a property in the junit XML) how many fastreplay buffers it built: a test that built
    none ran on SB3's classes only and proves nothing about fastreplay."""
    before = _cores[0]
    yield
    item.user_properties.append(("fastreplay_buffers", _cores[0] - before))


def pytest_report_header(config: pytest.Config) -> str:
    return "sb3_substitute: " + ", ".join(f"{n} -> {c.__module__}.{c.__qualname__}" for n, c in SUBSTITUTES.items())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"sb3_substitute: algorithms built fastreplay buffers by default: {_built or 'none'}")
