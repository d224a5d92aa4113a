"""Where actions come from when running LIBERO: a policy (`worldenv.models.roles.Policy`: a served
one through `worldenv.client.remote.RemotePolicy`, or a checkpoint loaded in this process), or
the scripted expert.

`PolicySource` puts a policy in front of the episode runner: its name and shapes, a seed per
call, one call at a time. The scripted expert is special: it needs the simulator's state, so it
runs inside the env process (`in_env = True`) and the episode runner asks the env for expert
chunks instead. `open_source(spec)` resolves `--policy` and checks it (a remote address is
connected to) before any env starts.
"""
from __future__ import annotations

import pathlib
import re
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from worldenv.models.roles import ActionChunks, Observations, Policy

CHUNK_LENGTH = 8  # K actions per chunk (OpenVLA-OFT's LIBERO default)


class PolicyUnavailable(RuntimeError):
    """--policy names nothing usable (unreachable address, missing checkpoint)."""


class ActionSource(Protocol):
    """What the episode runner takes: a policy's chunks, or the expert's from inside the env."""

    name: str
    chunk_length: int
    image_size: int | None   # frame side the policy expects; None = any
    in_env: bool

    def act(self, frames: np.ndarray, proprio: np.ndarray, instructions: list[str],
            deterministic: bool) -> ActionChunks:
        """frames (B, H, W, 3) uint8 upright, proprio (B, 8) float32 -> the policy's chunks."""

    def close(self) -> None: ...


class ExpertSource:
    """The scripted expert as a policy (runs inside the env process)."""

    name, in_env, image_size = "expert", True, None

    def __init__(self, chunk_length: int = CHUNK_LENGTH):
        self.chunk_length = chunk_length

    def act(self, frames, proprio, instructions, deterministic) -> ActionChunks:
        raise RuntimeError("the expert acts inside the env process; use EnvHost.expert_chunk")

    def close(self) -> None:
        pass


class PolicySource:
    """A `Policy` as an action source. `seeds(call, n)` gives the n items of the call-th call
    (1, 2, ...) their sampling seeds. Episodes run in threads: an in-process policy (`serial`)
    runs one forward at a time; a served one takes concurrent calls (its batcher merges them)."""

    in_env = False

    def __init__(self, policy: Policy, name: str, seeds: Callable[[int, int], list[int]], serial: bool,
                 close: Callable[[], None] = lambda: None):
        self.policy, self.name, self._seeds, self._serial, self._close = policy, name, seeds, serial, close
        self.chunk_length = int(policy.spec.chunk_length or CHUNK_LENGTH)
        self.image_size = int(policy.spec.image_size) or None
        self._calls = 0
        self._lock = threading.Lock()

    def act(self, frames, proprio, instructions, deterministic) -> ActionChunks:
        obs = Observations(frames, proprio, list(instructions))
        with self._lock:
            self._calls += 1
            seeds = self._seeds(self._calls, len(frames))
            if self._serial:
                return self.policy.act(obs, deterministic, seeds)
        return self.policy.act(obs, deterministic, seeds)

    def close(self) -> None:
        self._close()


def remote_source(address: str, auth_token: str | None = None, connect_timeout_s: float = 10.0,
                  timeout_s: float = 120.0) -> PolicySource:
    """A server speaking worldenv's Policy protocol (gRPC); every item of a call shares its seed."""
    from worldenv.client import clients, errors
    from worldenv.client.remote import RemotePolicy
    client = clients.PolicyClient(address, auth_token=auth_token, timeout_s=timeout_s,
                                  connect_timeout_s=connect_timeout_s)
    try:
        client.connect()
    except errors.ServiceError as exc:
        raise PolicyUnavailable(f"policy server {address} unreachable: {exc}") from exc
    return PolicySource(RemotePolicy(client), address, lambda call, n: [call] * n, serial=False, close=client.close)


def checkpoint_source(directory: str, seed: int = 0, exploration_scale: float | None = None) -> PolicySource:
    """A policy of any registered arch, loaded in this process; per-item seeds from `seed`
    (seed 0 still samples reproducibly); `exploration_scale` restarts its Laplace scale, so it
    samples as `train rl` explores."""
    from worldenv import models
    from worldenv.models import laplace
    policy = models.load(directory, role="policy")
    try:
        laplace.restart_scale(policy, exploration_scale, "--exploration-scale")
    except ValueError as exc:
        raise PolicyUnavailable(f"{directory}: {exc}") from exc
    base = seed * 1_000_003
    return PolicySource(policy, str(directory), lambda call, n: [(base + call) * 101 + i + 1 for i in range(n)],
                        serial=True)


_ADDRESS = re.compile(r"^(dns:///)?[\w.\-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


def open_source(spec: str, chunk_length: int = CHUNK_LENGTH, auth_token: str | None = None,
                connect_timeout_s: float = 10.0, seed: int = 0, exploration_scale: float | None = None) -> ActionSource:
    """Resolve `--policy`: 'expert', 'shipped' / 'shipped-rl' (the shipped SFT / RL policy), a
    checkpoint directory, or host:port. Raises PolicyUnavailable (also for an exploration scale
    given with a policy that is not a checkpoint directory)."""
    from worldenv import checkpoints
    if spec == "expert":
        return ExpertSource(chunk_length)
    if spec in (checkpoints.SHIPPED, checkpoints.SHIPPED_RL):
        found = checkpoints.model(spec, "policy")
        if found is None:
            raise PolicyUnavailable(f"{spec}: this install has no such checkpoint")
        spec = str(found)
    path = pathlib.Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PolicyUnavailable(f"{path} is a directory but holds no checkpoint (config.json missing)")
        return checkpoint_source(str(path), seed=seed, exploration_scale=exploration_scale)
    if exploration_scale is not None:
        raise PolicyUnavailable("--exploration-scale: only for a checkpoint directory (a served policy keeps its own)")
    if _ADDRESS.match(spec):
        return remote_source(spec, auth_token=auth_token, connect_timeout_s=connect_timeout_s)
    raise PolicyUnavailable(f"--policy {spec!r} is neither 'expert', 'shipped', 'shipped-rl', a checkpoint directory, "
                            "nor host:port")
