"""The role interfaces over gRPC: a served model used exactly like an in-process one.

    policy = RemotePolicy(PolicyClient(policy_address).connect())
    chunks = policy.act(Observations(frames, proprio, instructions), seeds=[1, 2])  # + policy_version
    world_model = RemoteWorldModel(WorldModelClient(world_model_address).connect())
    states = world_model.start(StartStates(frames, proprio, instructions))   # session ids
    prediction, states = world_model.step(states, actions)
    reflector = RemoteReflector(ReflectorClient(reflector_address).connect())
    videos = reflector.start(prediction.frames, instructions)               # session ids
    p_done, videos = reflector.observe(videos, next_frames)                 # only the new frames

Code written against `worldenv.models.roles` (the imagination loop, the gym envs, a user's own
RL loop) runs on a model in this process or on a service, unchanged. Each adapter keeps the
`Timing` of its last call in `last_timing` (client round trip and the server's own figures).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldenv.client.clients import PolicyClient, ReflectorClient, Timing, WorldModelClient
from worldenv.models.roles import ActionChunks, Observations, Prediction, Spec, StartStates


def spec_of(reply, role: str) -> Spec:
    """A served ModelSpec message -> the interface's Spec."""
    extra = dict(reply.extra)
    return Spec(role, extra.pop("arch", ""), reply.model_name, reply.image_size, reply.chunk_length,
                reply.action_dim, reply.proprio_dim, extra)


class RemotePolicy:
    """The Policy interface over a Policy service. It acts; it cannot be differentiated or given
    weights through the interface (publish with `PolicyClient.load_weights`)."""

    def __init__(self, client: PolicyClient):
        self.client, self.spec = client, spec_of(client.spec, "policy")
        self.last_timing: Timing | None = None

    def act(self, obs: Observations, deterministic: bool = False, seeds: Sequence[int] | None = None) -> ActionChunks:
        out = self.client.act(obs.frames, obs.proprio, list(obs.instructions), deterministic=bool(deterministic),
                              seed=list(seeds) if seeds is not None else 0)
        self.last_timing = out.timing
        return ActionChunks(out.loc, out.scale, out.actions, out.log_probs, out.policy_version)

    def log_prob(self, obs: Observations, actions) -> None:
        raise NotImplementedError("a served policy cannot be differentiated; load the checkpoint in process")

    def publishable_state(self) -> dict:
        raise NotImplementedError("a served policy's weights stay on the server")

    def check_weights(self, state: dict) -> None:
        raise NotImplementedError("the Policy service checks the weights it is sent")

    def load_weights(self, state: dict) -> int:
        raise NotImplementedError("publish new weights with PolicyClient.load_weights")


class RemoteWorldModel:
    """The WorldModel interface over a WorldModel service: a state is a session id."""

    def __init__(self, client: WorldModelClient):
        self.client, self.spec = client, spec_of(client.spec, "world_model")
        self.last_timing: Timing | None = None

    def start(self, starts: StartStates) -> list[str]:
        return self.client.open(starts.frames, starts.proprio, list(starts.instructions))

    def step(self, states: Sequence[str], actions: np.ndarray) -> tuple[Prediction, list[str]]:
        out = self.client.step(list(states), actions)
        self.last_timing = out.timing
        return Prediction(out.frames, out.proprio), list(states)

    def end(self, states: Sequence[str]) -> None:
        self.client.close_sessions(list(states))


class RemoteReflector:
    """The Reflector interface over a Reflector service: a state is a session id, and each
    episode's video is kept by the server, so `observe` sends only the new frames."""

    def __init__(self, client: ReflectorClient):
        self.client, self.spec = client, spec_of(client.spec, "reflector")
        self.last_timing: Timing | None = None

    def judge(self, videos: np.ndarray, instructions: list[str]) -> np.ndarray:
        out = self.client.judge(videos, list(instructions))
        self.last_timing = out.timing
        return out.p_done

    def start(self, frames: np.ndarray, instructions: list[str]) -> list[str]:
        return self.client.open(frames, list(instructions))

    def observe(self, states: Sequence[str], frames: np.ndarray) -> tuple[np.ndarray, list[str]]:
        out = self.client.observe(list(states), frames)
        self.last_timing = out.timing
        return out.p_done, list(states)

    def end(self, states: Sequence[str]) -> None:
        self.client.close_sessions(list(states))
