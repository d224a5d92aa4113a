"""Start states whose outcome is open, drawn again: prioritised replay of start states.

Only groups with a reward spread teach LOOP anything (a group whose 8 rollouts all fail, or all
succeed, has zero advantages). In our world model most uniform draws from the bank give such
groups. `StartReplay` remembers, for each start state it has seen, the reward spread (std over
the group) of its last group, and draws a share of each iteration's groups again from the starts
whose last group was open, weighted by that spread; the rest are fresh uniform draws, so the pool
keeps growing. A replayed start whose new group has no spread leaves the pool, so the pool
follows the policy as it changes. This is prioritised level replay (Jiang et al., 2021) with the
group's reward spread as the score. Filters that keep only mixed-outcome groups (RLinf and WMPO
keep groups whose success rate is within 0.1-0.9) act after the rollouts; this acts before them,
so no imagined step is spent on a group thrown away.

No extra imagination: the scores come from the iterations' own groups."""
from __future__ import annotations

import numpy as np
import torch

from worldenv.rl import loop_ppo


class StartReplay:
    """Which start states of a bank of `size` to draw each iteration (`draw`) and what their
    groups said (`see`)."""

    def __init__(self, size: int, share: float, min_spread: float):
        if not 0 <= share < 1:
            raise ValueError(f"replay_open: a share in [0, 1), got {share}")
        self.size, self.share, self.min_spread = size, share, min_spread
        self.scores: dict[int, float] = {}     # start index -> reward std of its last group, open ones only

    def draw(self, groups: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(indices (groups,), replayed (groups,) bool): round(share x groups) distinct open starts
        (fewer while the pool is small), weighted by their spread, then fresh uniform draws from
        the rest of the bank (with replacement only when the bank is smaller than `groups`). At
        share 0 this is the trainer's plain uniform draw, the same starts for the same rng."""
        pool = np.array(sorted(self.scores), dtype=np.int64)
        n_replay = min(int(round(self.share * groups)), len(pool))
        replayed = np.empty(0, np.int64)
        if n_replay:
            weights = np.array([self.scores[i] for i in pool], np.float64)
            replayed = rng.choice(pool, n_replay, replace=False, p=weights / weights.sum())
        rest = np.setdiff1d(np.arange(self.size), replayed)
        n_fresh = groups - n_replay
        fresh = rng.choice(rest, n_fresh, replace=len(rest) < n_fresh) if n_fresh else np.empty(0, np.int64)
        indices = np.concatenate([replayed, fresh]).astype(np.int64)
        return indices, np.arange(groups) < n_replay

    def see(self, index: int, rewards: np.ndarray) -> bool:
        """Record start `index`'s new group (rewards (N,)); returns whether it was open (the trainer's
        test of an informative group, `loop_ppo.informative` at min_spread)."""
        rewards = np.asarray(rewards, np.float64)
        is_open = bool(loop_ppo.informative(torch.from_numpy(rewards[None]), self.min_spread)[0])
        if is_open:
            self.scores[int(index)] = float(rewards.std())
        else:
            self.scores.pop(int(index), None)
        return is_open

    def state_dict(self) -> dict:
        return {"scores": {str(k): v for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.scores = {int(k): float(v) for k, v in state.get("scores", {}).items() if 0 <= int(k) < self.size}
