"""The three roles a model can play, each a small typed interface (as openpi's `BasePolicy`).

Servicers, the rollout worker, the gym env, benchmarks and the trainer all talk to models
through these, so an architecture is a drop-in: the tiny models here and paper-scale ones
(a 7B VLA, a video U-Net, a VLM reward model) implement the same few methods.

Arrays cross the interface as numpy (frames uint8 (B, H, W, 3), everything else float32); only
`Policy.log_prob`, which the trainer differentiates, speaks torch.

A world model's and a reflector's memory is theirs: `start` returns one opaque state per item
and `step` / `observe` return the next ones. Callers (the servicer's sessions, the gym env)
hold states and pass them back; they never look inside.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # only `log_prob` speaks torch: the interfaces import without it (the light client)
    import torch

Role = Literal["policy", "world_model", "reflector"]
ROLES: tuple[Role, ...] = ("policy", "world_model", "reflector")
State = Any  # one batch item's opaque model state


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a model tells its callers: shapes it takes and gives, plus role-specific extras."""

    role: Role
    arch: str
    name: str
    image_size: int
    chunk_length: int = 0      # K, actions per chunk (policy, world model)
    action_dim: int = 0        # A
    proprio_dim: int = 0       # P
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. history, max_frames


@dataclasses.dataclass(frozen=True)
class Observations:
    """A batch of what the policy sees."""

    frames: np.ndarray          # (B, H, W, 3) uint8
    proprio: np.ndarray         # (B, P) float32
    instructions: list[str]     # B task instructions

    def __len__(self) -> int:
        return len(self.frames)


@dataclasses.dataclass(frozen=True)
class ActionChunks:
    """The policy's answer: Laplace(loc, scale) per dimension and what was drawn from it."""

    loc: np.ndarray             # (B, K, A) float32
    scale: np.ndarray           # (B, K, A) float32, > 0
    actions: np.ndarray         # (B, K, A) float32, unclipped: log_probs is their density
    log_probs: np.ndarray       # (B,) float32, summed over K and A
    policy_version: int = 0     # the weights version that answered (a served policy's; 0 in process)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The four arrays."""
        return {"loc": self.loc, "scale": self.scale, "actions": self.actions, "log_probs": self.log_probs}


@dataclasses.dataclass(frozen=True)
class StartStates:
    """Where imagined episodes begin."""

    frames: np.ndarray          # (B, H, W, 3) or (B, T, H, W, 3) uint8, oldest first
    proprio: np.ndarray         # (B, P) float32
    instructions: list[str]     # B instructions

    def __len__(self) -> int:
        return len(self.frames)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the world model predicts after one action chunk."""

    frames: np.ndarray          # (B, H, W, 3) uint8
    proprio: np.ndarray         # (B, P) float32


@runtime_checkable
class Policy(Protocol):
    """Observations -> action chunks with log-probabilities; weights swap in place."""

    spec: Spec

    def act(self, obs: Observations, deterministic: bool | Sequence[bool] = False,
            seeds: Sequence[int] | None = None) -> ActionChunks:
        """Per item: deterministic -> actions = loc; seed != 0 -> that item's draw depends on
        its seed alone (not on what else is in the batch); seed 0 -> the global RNG."""
        ...

    def log_prob(self, obs: Observations, actions: torch.Tensor) -> torch.Tensor:
        """Differentiable log-density of action chunks (B, K, A), summed over K and A -> (B,)."""
        ...

    def publishable_state(self) -> dict[str, torch.Tensor]:
        """The weights an RL update changes, as `load_weights` takes them: the whole state dict
        of a small model, the LoRA adapters and heads of a paper-scale one."""
        ...

    def check_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Raise ValueError naming the first key missing, unexpected or of the wrong shape."""
        ...

    def load_weights(self, state: dict[str, torch.Tensor]) -> int:
        """Copy `state` into the model in place (no second model); returns tensors loaded."""
        ...


@runtime_checkable
class WorldModel(Protocol):
    """Start states -> opaque per-item states; (states, action chunks) -> frames, proprio, states."""

    spec: Spec

    def start(self, starts: StartStates) -> list[State]:
        ...

    def step(self, states: Sequence[State], actions: np.ndarray) -> tuple[Prediction, list[State]]:
        """actions (B, K, A) float32, clipped to [-1, 1] here as the simulator clips them."""
        ...

    def end(self, states: Sequence[State]) -> None:
        """Release states no one will step again (closes a served model's sessions)."""
        ...


@runtime_checkable
class Reflector(Protocol):
    """p(task done) for videos; whole at once, or frame by frame with the video kept in a state."""

    spec: Spec

    def judge(self, videos: np.ndarray, instructions: list[str]) -> np.ndarray:
        """videos (B, T, H, W, 3) uint8, oldest first -> p_done (B,) float32 in [0, 1]."""
        ...

    def start(self, frames: np.ndarray, instructions: list[str]) -> list[State]:
        """First frames (B, H, W, 3) of B episodes -> their states."""
        ...

    def observe(self, states: Sequence[State], frames: np.ndarray) -> tuple[np.ndarray, list[State]]:
        """Append frames (B, H, W, 3) to each episode -> p_done (B,) of the video so far, states."""
        ...

    def end(self, states: Sequence[State]) -> None:
        """Release states no one will observe again."""
        ...
