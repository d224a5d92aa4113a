"""A policy's success inside the learned simulator, from given start states: what the reflector
reports when the world model plays the policy's actions. Held against the real success of the
same policy from the same init states, it gives the reward-hacking gap."""
from __future__ import annotations

import numpy as np

from worldenv.data.start_bank import StartBank
from worldenv.models.roles import Observations, Policy, Reflector, StartStates, WorldModel


def rollouts(policy: Policy, world_model: WorldModel, reflector: Reflector, bank: StartBank, horizon: int,
             eta: float, deterministic: bool = True, batch: int = 16) -> list[dict]:
    """One imagined episode per bank entry, `batch` at a time: {"id", "done", "p_done", "chunks"}."""
    out = []
    for lo in range(0, len(bank), batch):
        out += _batch(policy, world_model, reflector, bank.subset(range(lo, min(lo + batch, len(bank)))), horizon,
                      eta, deterministic)
    return out


def _batch(policy, world_model, reflector, bank: StartBank, horizon: int, eta: float, deterministic: bool) -> list[dict]:
    n = len(bank)
    frames, proprio, texts = bank.frames.copy(), bank.proprio.astype(np.float32), list(bank.instructions)
    wm = world_model.start(StartStates(np.stack([bank.start_frames(i) for i in range(n)]), proprio, texts))
    rf = reflector.start(frames, texts)
    p_final, chunks, done = np.zeros(n, np.float32), np.zeros(n, np.int64), np.zeros(n, bool)
    live = np.arange(n)
    for _ in range(horizon):
        acts = policy.act(Observations(frames[live], proprio[live], [texts[i] for i in live]), deterministic)
        prediction, wm_live = world_model.step([wm[i] for i in live], acts.actions)
        p, rf_live = reflector.observe([rf[i] for i in live], prediction.frames)
        for k, i in enumerate(live):
            wm[i], rf[i] = wm_live[k], rf_live[k]
        frames[live], proprio[live] = prediction.frames, prediction.proprio
        p_final[live], chunks[live] = p, chunks[live] + 1
        done[live] = p > eta
        live = live[p <= eta]
        if not len(live):
            break
    world_model.end(wm)
    reflector.end(rf)
    return [{"id": bank.ids[i], "done": bool(done[i]), "p_done": float(p_final[i]), "chunks": int(chunks[i])}
            for i in range(n)]
