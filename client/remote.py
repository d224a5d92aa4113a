"""The role interfaces over gRPC: a served model used exactly like an in-process one.

    world_model = RemoteWorldModel(WorldModelClient(world_model_address).connect())
    states = world_model.start(StartStates(frames, proprio, instructions))   # session ids
    prediction, states = world_model.step(states, actions)
    reflector = RemoteReflector(ReflectorClient(reflector_address).connect())
    videos = reflector.start(prediction.frames, instructions)               # session ids
    p_done, videos = reflector.observe(videos, next_frames)                 # only the new frames

Code written against `worldenv.models.roles` (the gym env, a user's own RL loop) runs on a
model in this process or on a service, unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldenv.client.clients import ReflectorClient, WorldModelClient
from worldenv.models.roles import Prediction, Spec, StartStates


def spec_of(reply, role: str) -> Spec:
    """A served ModelSpec message -> the interface's Spec."""
    extra = dict(reply.extra)
    return Spec(role, extra.pop("arch", ""), reply.model_name, reply.image_size, reply.chunk_length,
                reply.action_dim, reply.proprio_dim, extra)


class RemoteWorldModel:
    """The WorldModel interface over a WorldModel service: a state is a session id."""

    def __init__(self, client: WorldModelClient):
        self.client, self.spec = client, spec_of(client.spec, "world_model")

    def start(self, starts: StartStates) -> list[str]:
        return self.client.open(starts.frames, starts.proprio, list(starts.instructions))

    def step(self, states: Sequence[str], actions: np.ndarray) -> tuple[Prediction, list[str]]:
        out = self.client.step(list(states), actions)
        return Prediction(out.frames, out.proprio), list(states)

    def end(self, states: Sequence[str]) -> None:
        self.client.close_sessions(list(states))


class RemoteReflector:
    """The Reflector interface over a Reflector service: a state is a session id, and each
    episode's video is kept by the server, so `observe` sends only the new frames."""

    def __init__(self, client: ReflectorClient):
        self.client, self.spec = client, spec_of(client.spec, "reflector")

    def judge(self, videos: np.ndarray, instructions: list[str]) -> np.ndarray:
        return self.client.judge(videos, list(instructions)).p_done

    def start(self, frames: np.ndarray, instructions: list[str]) -> list[str]:
        return self.client.open(frames, list(instructions))

    def observe(self, states: Sequence[str], frames: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.client.observe(list(states), frames).p_done, list(states)

    def end(self, states: Sequence[str]) -> None:
        self.client.close_sessions(list(states))
