"""Acting with a Laplace action-chunk distribution: per-item determinism and seeds.

Shared by every Laplace policy arch (the tiny one, an OpenVLA-OFT-layout one): the network
gives loc and scale, this draws the chunks and scores them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pydantic
import torch

from worldenv.models import inputs
from worldenv.models.roles import ActionChunks, Observations


def per_item(value: bool | Sequence[bool], batch: int) -> torch.Tensor:
    """A flag for the whole batch or one per item -> (B,) bool."""
    flags = np.asarray(value, bool)
    if flags.ndim and flags.shape != (batch,):
        raise ValueError(f"deterministic: expected one flag or {batch} (one per batch item), got {flags.shape[0]}")
    return torch.as_tensor(np.broadcast_to(flags, (batch,)).copy())


def uniform_noise(shape: tuple[int, ...], seeds: Sequence[int] | None) -> torch.Tensor:
    """U(0, 1) of `shape` (B, ...): a seeded item draws from its own generator, so its sample
    does not depend on the rest of the batch; unseeded items (seed 0) draw from torch's RNG."""
    u = torch.rand(shape)
    for i, seed in enumerate(seeds or ()):
        if seed:
            u[i] = torch.rand(shape[1:], generator=torch.Generator().manual_seed(int(seed)))
    return u


def sample(dist: torch.distributions.Laplace, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF Laplace sample from uniform noise `u` of the distribution's shape."""
    u = (u.to(dist.loc.device) - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)          # (B, K, A) in (-1/2, 1/2)
    return dist.loc - dist.scale * u.sign() * torch.log1p(-2.0 * u.abs())


Noise = Literal["independent", "chunk"]
NOISES = get_args(Noise)


def noise_field():
    """The `noise` config field of a Laplace policy arch."""
    return pydantic.Field(
        "independent", description="how sampled actions explore: 'independent' Laplace noise per action; 'chunk' one "
        "draw per action dimension shared by the chunk's K steps (one offset per chunk: K times fewer noise dimensions "
        "in the policy gradient; `worldenv signal --noise` measures both)")


def scales_ordered(config):
    """The model validator of a Laplace arch's config: its scale head's log-scale bounds in order."""
    if not config.min_log_scale < config.max_log_scale:
        raise ValueError(f"min_log_scale ({config.min_log_scale}) must be below max_log_scale ({config.max_log_scale})")
    return config


def log_prob_terms(dist: torch.distributions.Laplace, actions: torch.Tensor, noise: str = "independent") -> torch.Tensor:
    """Log-density terms of action chunks (B, K, A) under `dist`: per action (B, K, A) with
    independent noise; with noise correlated over the chunk ('chunk'), one per action dimension
    (B, 1, A): the density of the chunk's offset d = mean_k (a_k - loc_k), Laplace(0, mean_k b_k)
    (exact when b is the same at every step, as an exploration scale sets it). Their sum is the
    chunk's log-prob either way."""
    if noise == "independent":
        return dist.log_prob(actions)
    if noise != "chunk":
        raise ValueError(f"noise: {noise!r} is not one of {', '.join(NOISES)}")
    offset = (actions - dist.loc).mean(dim=1, keepdim=True)                     # (B, 1, A)
    scale = dist.scale.mean(dim=1, keepdim=True)
    return -offset.abs() / scale - torch.log(2 * scale)


def act(dist: torch.distributions.Laplace, deterministic: bool | Sequence[bool] = False,
        seeds: Sequence[int] | None = None, noise: str = "independent") -> ActionChunks:
    """Draw chunks from `dist` (batch shape (B, K, A)): loc where deterministic, else a sample;
    with `noise` 'chunk' one standard Laplace draw per action dimension, the same at every step
    of the chunk (a = loc + b z: the chunk explores as one offset, K times fewer noise dimensions
    than 'independent').

    log_probs is the density of exactly the returned actions (`log_prob_terms`), at loc too.
    """
    batch = dist.loc.shape[0]
    if seeds is not None and len(seeds) != batch:
        raise ValueError(f"seeds: expected {batch} entries (one per batch item), got {len(seeds)}")
    det = per_item(deterministic, batch).to(dist.loc.device)[:, None, None]     # (B, 1, 1)
    shape = tuple(dist.loc.shape) if noise == "independent" else (batch, 1, dist.loc.shape[2])
    drawn = sample(dist, uniform_noise(shape, seeds).expand(tuple(dist.loc.shape)))   # (B, K, A)
    actions = torch.where(det, dist.loc, drawn)
    log_probs = log_prob_terms(dist, actions, noise).sum(dim=(1, 2))            # (B,)
    out = [t.float().cpu().numpy() for t in (dist.loc, dist.scale, actions, log_probs)]
    return ActionChunks(*out)


@torch.no_grad()
def reset_scale_head(head: torch.nn.Linear, scale: float, min_log_scale: float, max_log_scale: float,
                     per_output: torch.Tensor | None = None) -> None:
    """Make a scale head whose output o gives log b = min + (max - min) sigmoid(o) answer b =
    `scale` everywhere: weights zero, bias mid-sigmoid, where it can still learn.

    Supervised NLL drives b to its floor on demos a policy fits (the sigmoid saturates and stops
    passing gradient), and PPO ratios of a near-deterministic policy explode: RL restarts the
    head here. `per_output` (out_features,) gives each output its own b instead; `scale` is
    still checked."""
    fraction = (float(np.log(scale)) - min_log_scale) / (max_log_scale - min_log_scale)
    if not 0 < fraction < 1:
        raise ValueError(f"exploration scale {scale}: b must lie inside "
                         f"(e^{min_log_scale:g}, e^{max_log_scale:g}) = "
                         f"({np.exp(min_log_scale):.4g}, {np.exp(max_log_scale):.4g})")
    head.weight.zero_()
    if per_output is None:
        head.bias.fill_(float(np.log(fraction / (1 - fraction))))
        return
    # One b per output (e.g. scale x each action dimension's spread), kept inside the range
    # where the sigmoid still passes gradient.
    fractions = ((per_output.double().log() - min_log_scale) / (max_log_scale - min_log_scale)).clamp(0.01, 0.99)
    head.bias.copy_((fractions / (1 - fractions)).log().to(head.bias.dtype))


def freeze_scale(policy, field: str = "learn_scale") -> None:
    """Keep a Laplace policy's scale where it is: its scale head takes no gradient, so an
    optimiser built afterwards leaves b fixed. A policy without a `scale_head` is a ValueError
    naming `field`."""
    head = getattr(policy, "scale_head", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{field}: the {policy.spec.arch} policy has no Laplace scale head to keep fixed")
    for p in head.parameters():
        p.requires_grad_(False)


class LaplacePolicyRole:
    """The Policy role's acting and scoring over a module's `distribution(frames, proprio,
    instructions)` (a Laplace of batch shape (B, K, A) in env units, float32); its `config` has
    chunk_length and action_dim. Shared by every Laplace policy arch."""

    def _observed(self, obs: Observations) -> torch.distributions.Laplace:
        frames = inputs.as_tensor(obs.frames, self.device)
        proprio = inputs.as_tensor(obs.proprio, self.device)
        return self.distribution(frames, proprio, list(obs.instructions))

    def log_prob(self, obs: Observations, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of action chunks (B, K, A) summed over K and A -> (B,); differentiable."""
        return self.log_prob_terms(obs, actions).sum(dim=(1, 2))

    def log_prob_terms(self, obs: Observations, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of each action of the chunks (B, K, A) -> (B, K, A); with the config's
        noise 'chunk', of each dimension's offset over the chunk -> (B, 1, A) (`log_prob_terms`
        above); differentiable (the per-dimension ratio of `train rl --ratio dimension`)."""
        c = self.config
        inputs.expect("actions", actions, (len(obs), c.chunk_length, c.action_dim), "float")
        dist = self._observed(obs)
        return log_prob_terms(dist, inputs.as_tensor(actions, dist.loc.device, torch.float32), self.noise)

    @property
    def noise(self) -> str:
        """How sampled actions explore: 'independent' per action, or 'chunk' (one offset per chunk)."""
        return self.config.noise

    @torch.no_grad()
    def act(self, obs: Observations, deterministic: bool | Sequence[bool] = False,
            seeds: Sequence[int] | None = None) -> ActionChunks:
        """Sample action chunks (see `roles.Policy.act`); one forward pass for the whole batch.

        Actions are not clipped: log_probs must be the density of exactly what was returned;
        the environment clips."""
        return act(self._observed(obs), deterministic, seeds, self.noise)


def restart_scale(policy, scale: float | None, field: str = "exploration_scale") -> None:
    """Restart a Laplace policy's scale at `scale` (normalised action units), as `train rl`
    explores; None leaves the checkpoint's own. A policy with no trainable scale (no
    `reset_scale`) is a ValueError naming `field`."""
    if scale is None:
        return
    if not hasattr(policy, "reset_scale"):
        raise ValueError(f"{field}: the {policy.spec.arch} policy has no Laplace scale to restart; give none")
    policy.reset_scale(scale)
