"""A LeRobot-style evaluation loop over the imagined LIBERO env, by its gymnasium id.

With a stack running (`worldenv up`: world model, reflector and policy on their default ports)
and the shipped start bank of real LIBERO keyframes:

    python examples/lerobot_eval_loop.py --episodes 2

The loop is LeRobot's `rollout`: one observation named as LeRobot names LIBERO's
(`observation.images.image`, `observation.state`, and the task text), one action per step
from a policy that predicts chunks and hands them out one action at a time (LeRobot's action
queue, `n_action_steps` = K), until terminated or truncated. Here the policy is worldenv's
policy service; a LeRobot policy's `select_action` goes in its place.
"""
from __future__ import annotations

import argparse
import collections
from importlib import resources

import gymnasium as gym
import numpy as np

import worldenv.client  # noqa: F401  registers worldenv/ImaginedLibero-v0
from worldenv.client.clients import PolicyClient
from worldenv.client.registration import LIBERO_ENV_ID
from worldenv.config import local_address


class QueuedPolicy:
    """A chunk policy behind LeRobot's `select_action`: a new chunk when the queue is empty."""

    def __init__(self, client: PolicyClient):
        self.client, self.queue = client, collections.deque()

    def reset(self) -> None:
        self.queue.clear()

    def select_action(self, obs: dict, task: str) -> np.ndarray:
        if not self.queue:
            frames, state = obs["observation.images.image"][None], obs["observation.state"][None]
            chunk = self.client.act(frames, state, [task], deterministic=True).loc[0]      # (K, A)
            self.queue.extend(chunk)
        return self.queue.popleft()


def rollout(env: gym.Env, policy: QueuedPolicy, seed: int) -> dict:
    """One episode; returns its steps, the final reward (p(done)) and whether it was judged done."""
    obs, info = env.reset(seed=seed)
    policy.reset()
    steps, reward, terminated, truncated = 0, 0.0, False, False
    while not (terminated or truncated):
        action = np.clip(policy.select_action(obs, info["task"]), -1, 1)
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
    return {"task": info["task"], "steps": steps, "reward": round(float(reward), 3), "success": bool(terminated)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2, help="episodes to run")
    parser.add_argument("--horizon", type=int, default=8, help="chunks per episode at most")
    parser.add_argument("--bank", default=str(resources.files("worldenv.checkpoints") / "starts.npz"),
                        help="start bank (.npz)")
    parser.add_argument("--world-model", default=local_address("world-model"), help="world-model service")
    parser.add_argument("--reflector", default=local_address("reflector"), help="reflector service")
    parser.add_argument("--policy", default=local_address("policy"), help="policy service")
    args = parser.parse_args(argv)
    env = gym.make(LIBERO_ENV_ID, bank=args.bank, world_model=args.world_model, reflector=args.reflector,
                   horizon=args.horizon)
    with PolicyClient(args.policy) as client:
        results = [rollout(env, QueuedPolicy(client), seed) for seed in range(args.episodes)]
    env.close()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    main()
