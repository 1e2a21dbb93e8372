"""Schedules: values that change with the training step (PER's beta, epsilon-greedy exploration)."""
from __future__ import annotations


class LinearSchedule:
    """A value annealed linearly from ``start`` to ``end`` over ``steps`` steps, then held (e.g. PER's beta).

    ``LinearSchedule(0.4, 1.0, 100_000)(t)`` is beta at step t; ``schedule.at_fraction(f)`` is the value a
    fraction ``f`` in [0, 1] of the way through (used when progress, not a step count, is known).
    """

    def __init__(self, start: float, end: float = 1.0, steps: int = 100_000) -> None:
        if steps <= 0:
            raise ValueError(f"LinearSchedule: steps must be positive, got {steps}")
        self.start, self.end, self.steps = float(start), float(end), int(steps)

    def __call__(self, t: int) -> float:
        return self.at_fraction(max(t, 0) / self.steps)

    def at_fraction(self, fraction: float) -> float:
        """The value after ``fraction`` of the schedule (clipped to [0, 1])."""
        return self.start + min(max(fraction, 0.0), 1.0) * (self.end - self.start)

    def __repr__(self) -> str:
        return f"LinearSchedule(start={self.start}, end={self.end}, steps={self.steps})"


def beta_schedule(beta0: float = 0.4, steps: int = 100_000) -> LinearSchedule:
    """PER's beta annealed linearly from ``beta0`` to 1 over ``steps`` steps."""
    return LinearSchedule(beta0, 1.0, steps)
