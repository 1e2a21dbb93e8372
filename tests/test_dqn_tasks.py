"""The multi-task DQN trainer (fastreplay.dqn_tasks): a tiny real run, the grouped heads, the task specs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")
pytest.importorskip("tyro")

from fastreplay import dqn_tasks  # noqa: E402


def test_tiny_run_trains_every_task_and_logs(tmp_path):
    torch.set_num_threads(1)
    args = dqn_tasks.Args(env_ids="CartPole-v1,Acrobot-v1", steps_per_task="3,1", iterations=300, learning_starts=100,
                          eval_frequency=150, eval_episodes=1, buffer_size=2000, batch_size=16, output_dir=str(tmp_path))
    res = dqn_tasks.train(args)
    assert [e["iteration"] for e in res["evals"]] == [150, 300]
    assert len(res["final_eval"]) == 2 and res["final_eval"][1] >= -500.0
    # the fast task wrote 3 steps per iteration into its own quota, the slow one 1
    assert res["evals"][-1]["task_sizes"] == [900, 300]
    with open(os.path.join(res["run_dir"], "log.jsonl")) as f:
        assert [json.loads(line)["iteration"] for line in f] == [150, 300]


def test_grouped_heads_equal_each_task_alone():
    torch.manual_seed(0)
    net = dqn_tasks.MultiTaskQNetwork(6, [2, 3, 4], (16,))
    obs = torch.randn(9, 6)
    task = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])
    got = dqn_tasks.grouped_q(net, obs, task, [2, 4, 3])
    for t, (lo, hi) in enumerate([(0, 2), (2, 6), (6, 9)]):
        torch.testing.assert_close(got[t], net.forward_task(obs[lo:hi], t))
        assert got[t].shape == (hi - lo, [2, 3, 4][t])


def test_task_specs_and_rates_are_checked():
    env = dqn_tasks.make_task_env("CartPole-v1:length=1.0:masspole=0.3", 0)
    inner = env.unwrapped
    assert inner.length == 1.0 and inner.polemass_length == pytest.approx(0.3)
    assert inner.total_mass == pytest.approx(1.3)
    with pytest.raises(ValueError, match="not attribute=value"):
        dqn_tasks.make_task_env("CartPole-v1:nosuch=1", 0)
    assert dqn_tasks.parse_rates("2", 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="steps-per-task"):
        dqn_tasks.parse_rates("1,2", 3)
    assert dqn_tasks.pad(np.ones(2, np.float32), 4).tolist() == [1, 1, 0, 0]
