"""LOOP (leave-one-out PPO), World-Env's RL objective, as pure functions.

A group is the N rollouts imagined from one start state. Each trajectory's reward is the
reflector's p(done) at its termination step; its advantage is that reward minus the mean of
the other N - 1 rewards of its group (the leave-one-out baseline, unbiased because it does not
depend on the trajectory it scores), broadcast to every timestep of the trajectory. The policy loss is
PPO's clipped surrogate on the per-timestep ratio of Laplace log-probs (summed over the chunk's
actions), against the log-probs the rollout worker stored when it sampled.
"""
from __future__ import annotations

import torch


def leave_one_out(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (G, N) -> advantages (G, N): r_i - mean_{j != i} r_j, which equals
    N / (N - 1) * (r_i - mean_j r_j). Equal rewards in a group give zeros."""
    n = rewards.shape[-1]
    if n < 2:
        raise ValueError(f"rewards: a leave-one-out baseline needs N >= 2 rollouts per group, got {n}")
    others = (rewards.sum(dim=-1, keepdim=True) - rewards) / (n - 1)            # (G, N)
    return rewards - others


def broadcast(advantages: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-trajectory advantages (B,) -> per-timestep (sum of lengths,), trajectory by trajectory."""
    return torch.repeat_interleave(advantages, lengths)


def ppo_loss(new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
             clip: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate over timesteps (T,), or over each action of them (T, K, A) with advantages
    (T, 1, 1) -> (loss, stats: clip fraction, approximate KL, ratio mean, over every ratio).

    loss = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)), rho = exp(new - old).
    """
    log_ratio = new_log_probs - old_log_probs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {"clip_fraction": ((ratio - 1).abs() > clip).float().mean(),
                 "approx_kl": ((ratio - 1) - log_ratio).mean(),      # the k3 estimator, >= 0
                 "ratio_mean": ratio.mean()}
    return loss, stats


def informative(rewards: torch.Tensor, min_spread: float = 1e-6) -> torch.Tensor:
    """(G, N) -> (G,) bool: groups whose rewards differ by more than `min_spread`.

    A group whose rollouts all failed still has rewards that differ a little (p(done) = 0.001
    vs 0.002): leave-one-out advantages of that size are the reflector's noise, and Adam,
    which normalises gradient size, would follow them at full step. Such groups are left out."""
    spread = rewards.max(dim=-1).values - rewards.min(dim=-1).values
    return spread > min_spread


def zero_advantage_fraction(rewards: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """Fraction of groups (G, N) whose rewards are all equal (within atol): they teach the policy nothing."""
    return (~informative(rewards, atol)).float().mean()
