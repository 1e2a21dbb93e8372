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
                    "--check-every", "400", "--check-episodes", "1", "--eval-episodes", "2",
                    "--json", str(tmp_path / "r.json")])
    out = r2d2.train(a)
    assert out["updates"] > 20
    assert out["returns"] and all(math.isfinite(r) and r >= 1 for _, r in out["returns"])
    assert [s for s, _ in out["checks"]] == [400, 800, 1200]
    scores = [c for _, c in out["checks"]]
    assert out["best_check"] == max(s for s, c in out["checks"] if c == max(scores))  # ties: the later one
    assert len(out["eval_best_returns"]) == len(out["eval_returns"]) == 2
    assert (tmp_path / "r.json").exists()


def test_positions_only_hides_velocities():
    import gymnasium as gym
    import numpy as np

    env = r2d2.PositionsOnly(gym.make("CartPole-v1"))
    obs, _ = env.reset(seed=0)
    full = env.unwrapped.state
    assert obs.shape == (2,) and np.allclose(obs, np.asarray(full, np.float32)[[0, 2]] / r2d2.SCALE)


def test_value_rescaling_matches_numpy_and_inverts():
    import numpy as np
    import torch

    x = np.concatenate([np.linspace(-600, 600, 2001), [0.0, 1e-4, -1e-4, 1e4]])
    eps = 1e-3
    h = np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + eps * x  # R2D2 (Kapturowski et al. 2019), eq. in section 2
    got = r2d2.rescale(torch.as_tensor(x)).numpy()
    assert np.allclose(got, h, rtol=1e-12, atol=1e-12)
    back = r2d2.unrescale(torch.as_tensor(h)).numpy()
    assert np.allclose(back, x, rtol=1e-9, atol=1e-7)


def test_n_step_targets_match_a_loop():
    """Against a plain loop over each sequence: sum up to n rewards, stop at the sequence's last real step (or a
    terminal, whose discount is 0), bootstrap from the last summed step's next-state value."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    B, T, gamma = 6, 9, 0.9
    lengths = [9, 1, 4, 7, 2, 9]
    r = rng.normal(size=(B, T))
    v = rng.normal(size=(B, T))
    d = np.full((B, T), gamma)
    d[3, 6] = 0.0  # terminal last step
    mask = np.arange(T)[None] < np.array(lengths)[:, None]
    r, v, d = r * mask, v * mask, d * mask
    for n in (1, 3, 5, 12):
        want = np.zeros((B, T))
        for b in range(B):
            for t in range(lengths[b]):
                g, disc = 0.0, 1.0
                m = min(n, lengths[b] - t)
                for i in range(m):
                    g += disc * r[b, t + i]
                    disc *= d[b, t + i]
                want[b, t] = g + disc * v[b, t + m - 1]
        got = r2d2.n_step_targets(*(torch.as_tensor(x) for x in (r, d, v, mask)), n).numpy()
        assert np.allclose(got, want, atol=1e-12), n


class _ScaledWeights:
    """A buffer whose sequence batches carry importance weights multiplied by `scale`."""

    def __init__(self, buf, scale):
        self.buf, self.scale = buf, scale

    def sample_sequences(self, *args, **kw):
        b = self.buf.sample_sequences(*args, **kw)
        b.weights = b.weights * self.scale
        return b

    def __getattr__(self, name):
        return getattr(self.buf, name)


def test_learner_applies_importance_weights():
    """An update whose sequences all weigh 0 leaves the network unchanged (Adam's first step is then 0); weights
    of 1 change it, and half weights halve the loss."""
    import numpy as np
    import torch

    import fastreplay

    a = r2d2.parse(["--length", "8", "--burn-in", "2", "--batch", "4", "--hidden", "8"])
    H, K = a.hidden, 2
    fields = {"obs": ((2,), np.float32), "action": ((), np.int64), "reward": ((), np.float32),
              "next_obs": ((2,), np.float32), "done": ((), np.bool_), "truncated": ((), np.bool_),
              "h": ((2 * H,), np.float32)}
    rng = np.random.default_rng(1)
    losses = {}
    for scale in (0.0, 0.5, 1.0):
        buf = fastreplay.PrioritizedReplayBuffer(64, fields, alpha=0.9, seed=3, num_envs=K, autoreset="same_step",
                                                 gamma=0.99, n_step=1)
        rng = np.random.default_rng(1)
        for t in range(30):
            buf.add(obs=rng.normal(size=(K, 2)).astype(np.float32), action=rng.integers(0, 2, K),
                    reward=np.ones(K, np.float32), next_obs=rng.normal(size=(K, 2)).astype(np.float32),
                    done=np.array([t % 13 == 12] * K), truncated=np.zeros(K, bool),
                    h=rng.normal(size=(K, 2 * H)).astype(np.float32))
        torch.manual_seed(0)
        net, target = r2d2.RecurrentQ(2, 2, H), r2d2.RecurrentQ(2, 2, H)
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        losses[scale] = r2d2.learn_sequences(_ScaledWeights(buf, scale), net, target, opt, a, H,
                                             a.length - a.burn_in)
        moved = any(not torch.equal(p, q) for p, q in zip(before, net.parameters()))
        assert moved == (scale > 0), scale
    assert losses[0.0] == 0.0 and losses[1.0] > 0
    assert math.isclose(losses[0.5], 0.5 * losses[1.0], rel_tol=1e-5)
