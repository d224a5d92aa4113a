"""A policy's success inside the learned simulator, from given start states: what the reflector
reports when the world model plays the policy's actions. Held against the real success of the
same policy from the same init states, it gives the reward-hacking gap."""
from __future__ import annotations

import numpy as np

from worldenv.data.start_bank import StartBank
from worldenv.models.imagination import Imagination, imagine
from worldenv.models.roles import Policy, Reflector, StartStates, WorldModel


def rollouts(policy: Policy, world_model: WorldModel, reflector: Reflector, bank: StartBank, horizon: int,
             eta: float, deterministic: bool = True, batch: int = 16) -> list[dict]:
    """One imagined episode per bank entry, `batch` at a time: {"id", "done", "p_done", "chunks"}."""
    out = []
    with Imagination(world_model, reflector) as imagination:
        for lo in range(0, len(bank), batch):
            part = bank.subset(range(lo, min(lo + batch, len(bank))))
            starts = StartStates(np.stack([part.start_frames(i) for i in range(len(part))]),
                                 part.proprio.astype(np.float32), list(part.instructions))
            episodes = imagine(policy, imagination, starts, horizon, eta, deterministic)
            out += [{"id": part.ids[i], "done": e.done, "p_done": e.p_done[-1], "chunks": len(e.actions)}
                    for i, e in enumerate(episodes)]
    return out
