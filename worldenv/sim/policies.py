"""Where actions come from when running LIBERO: a remote Policy service, a checkpoint, or the expert.

All three meet one interface, `ActionSource.act(frames, proprio, instructions, deterministic)
-> Chunk`. The scripted expert is special: it needs the simulator's state, so it runs inside the
env process (`in_env = True`) and the episode runner asks the env for expert chunks instead.
`open_source(spec)` resolves `--policy` and checks it (a remote address is connected to) before
any env starts.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import threading
from typing import Protocol

import numpy as np

CHUNK_LENGTH = 8  # K actions per chunk (OpenVLA-OFT's LIBERO default)


class PolicyUnavailable(RuntimeError):
    """--policy names nothing usable (unreachable address, missing checkpoint)."""


@dataclasses.dataclass
class Chunk:
    actions: np.ndarray               # (B, K, 7) float32, as sampled (the env clips to [-1, 1])
    log_probs: np.ndarray | None      # (B,) float32 log-density of each sampled chunk; None for the expert


class ActionSource(Protocol):
    """Anything that maps observations to action chunks."""

    name: str
    chunk_length: int
    image_size: int | None   # frame side the policy expects; None = any
    in_env: bool

    def act(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str],
            deterministic: bool) -> Chunk:
        """frames (B, H, W, 3) uint8 upright, proprio (B, 8) float32 -> Chunk."""

    def close(self) -> None: ...


class ExpertSource:
    """The scripted expert as a policy (runs inside the env process)."""

    name, in_env, image_size = "expert", True, None

    def __init__(self, chunk_length: int = CHUNK_LENGTH):
        self.chunk_length = chunk_length

    def act(self, frames, proprio, instructions, deterministic) -> Chunk:
        raise RuntimeError("the expert acts inside the env process; use EnvHost.expert_chunk")

    def close(self) -> None:
        pass


class RemoteSource:
    """A server speaking worldenv's Policy protocol (gRPC)."""

    in_env = False

    def __init__(self, address: str, auth_token: str | None = None, connect_timeout_s: float = 10.0,
                 timeout_s: float = 120.0):
        from worldenv.client import clients, errors
        self.name = address
        self._client = clients.PolicyClient(address, auth_token=auth_token, timeout_s=timeout_s,
                                            connect_timeout_s=connect_timeout_s)
        try:
            self._client.connect()
        except errors.ServiceError as exc:
            raise PolicyUnavailable(f"policy server {address} unreachable: {exc}") from exc
        spec = getattr(self._client, "spec", None)
        self.chunk_length = int(getattr(spec, "chunk_length", 0) or CHUNK_LENGTH)
        self.image_size = int(getattr(spec, "image_size", 0)) or None
        self._seed = 0

    def act(self, frames, proprio, instructions, deterministic) -> Chunk:
        self._seed += 1
        reply = self._client.act(frames, proprio, instructions, deterministic=deterministic, seed=self._seed)
        return Chunk(np.asarray(reply.actions, np.float32), np.asarray(reply.log_probs, np.float32))

    def close(self) -> None:
        self._client.close()


class CheckpointSource:
    """A policy of any registered arch, loaded in this process from a checkpoint directory."""

    in_env = False

    def __init__(self, directory: str, seed: int = 0, exploration_scale: float | None = None):
        from worldenv import models
        self.name = str(directory)
        self._policy = models.load(directory, role="policy")
        if exploration_scale is not None:   # sample as `train rl` explores
            if not hasattr(self._policy, "reset_scale"):
                raise PolicyUnavailable(f"{directory}: the {self._policy.spec.arch} policy has no reset_scale")
            self._policy.reset_scale(exploration_scale)
        self.chunk_length = int(self._policy.spec.chunk_length)
        self.image_size = int(self._policy.spec.image_size)
        self._seed = seed * 1_000_003  # per-call seeds: seed 0 still samples reproducibly
        self._lock = threading.Lock()  # episodes run in threads; one forward at a time

    def act(self, frames, proprio, instructions, deterministic) -> Chunk:
        from worldenv.models.roles import Observations
        with self._lock:
            self._seed += 1
            seeds = [self._seed * 101 + i + 1 for i in range(len(frames))]
            out = self._policy.act(Observations(frames, proprio, list(instructions)), deterministic, seeds)
        return Chunk(out.actions, out.log_probs)

    def close(self) -> None:
        pass


_ADDRESS = re.compile(r"^(dns:///)?[\w.\-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


def open_source(spec: str, chunk_length: int = CHUNK_LENGTH, auth_token: str | None = None,
                connect_timeout_s: float = 10.0, seed: int = 0, exploration_scale: float | None = None) -> ActionSource:
    """Resolve `--policy`: 'expert', a checkpoint directory, or host:port. Raises PolicyUnavailable
    (also for an exploration scale given with a policy that is not a checkpoint directory)."""
    if spec == "expert":
        return ExpertSource(chunk_length)
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PolicyUnavailable(f"{path} is a directory but holds no checkpoint (config.json missing)")
        return CheckpointSource(str(path), seed=seed, exploration_scale=exploration_scale)
    if exploration_scale is not None:
        raise PolicyUnavailable("--exploration-scale: only for a checkpoint directory (a served policy keeps its own)")
    if _ADDRESS.match(spec):
        return RemoteSource(spec, auth_token=auth_token, connect_timeout_s=connect_timeout_s)
    raise PolicyUnavailable(f"--policy {spec!r} is neither 'expert', a checkpoint directory, nor host:port")
