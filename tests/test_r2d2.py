"""python -m fastreplay.r2d2 (R2D2-lite) runs end to end for a few hundred steps, both architectures: the LSTM
learner samples sequences with burn-in, updates sequence priorities and writes fresh states back."""
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("gymnasium")

from fastreplay import r2d2  # noqa: E402


@pytest.mark.parametrize("arch", ["lstm", "mlp"])
def test_r2d2_runs_a_few_steps(arch, tmp_path):
    a = r2d2.parse(["--arch", arch, "--steps", "1200", "--learning-starts", "400", "--capacity", "2000",
                    "--length", "12", "--burn-in", "4", "--batch", "8", "--hidden", "16", "--target-every", "10",
                    "--json", str(tmp_path / "r.json")])
    out = r2d2.train(a)
    assert out["updates"] > 20
    assert out["returns"] and all(math.isfinite(r) and r >= 1 for _, r in out["returns"])
    assert (tmp_path / "r.json").exists()


def test_positions_only_hides_velocities():
    import gymnasium as gym
    import numpy as np

    env = r2d2.PositionsOnly(gym.make("CartPole-v1"))
    obs, _ = env.reset(seed=0)
    full = env.unwrapped.state
    assert obs.shape == (2,) and np.allclose(obs, np.asarray(full, np.float32)[[0, 2]] / r2d2.SCALE)
