"""SB3's HerReplayBuffer against fastreplay.sb3.HerReplayBuffer: sample(256) at capacity 1e6 with 4 envs
(BitFlippingEnv spaces, 50-step episodes staggered per env, the ring full), 9 interleaved rounds of 50 calls, one
torch thread. Run from the repository root:

    python -m bench.scripts.bench_her
"""
import time, numpy as np, torch as th
th.set_num_threads(1)
from stable_baselines3 import HerReplayBuffer as SB3Her
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import BitFlippingEnv
from fastreplay.sb3 import HerReplayBuffer as FRHer
N, K, B = 10**6, 4, 256
venv = make_vec_env(lambda: BitFlippingEnv(n_bits=4, continuous=True), K)
rng = np.random.default_rng(0)
bufs = {c.__module__.split(".")[0]: c(N, venv.observation_space, venv.action_space, venv, n_envs=K) for c in (SB3Her, FRHer)}
ob = lambda: {k: rng.integers(0, 2, (K, 4)).astype(np.float32) for k in ("observation", "achieved_goal", "desired_goal")}
obs, act, rew, infos = ob(), np.zeros((K, 4), np.float32), np.zeros(K, np.float32), [{}] * K
steps = N // K + 1000  # one lap and then some: the ring is full
for t in range(steps):
    nobs = ob(); done = (t + np.arange(K) * 13) % 50 == 49  # 50-step episodes, staggered per env
    for b in bufs.values(): b.add(obs, nobs, act, rew, done, infos)
    obs = nobs
ts = {name: [] for name in bufs}
for r in range(9):  # interleaved rounds of 50 calls
    for name, b in bufs.items():
        t0 = time.perf_counter(); [b.sample(B) for _ in range(50)]; ts[name].append((time.perf_counter() - t0) / 50)
med = {n: np.median(v) * 1e6 for n, v in ts.items()}
for n, v in ts.items():
    print(f"{n}: sample({B}) median {med[n]:.0f} us, best {min(v)*1e6:.0f} us")
print(f"speed-up (median): {med['stable_baselines3'] / med['fastreplay']:.1f}x")
