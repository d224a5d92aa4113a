"""A policy's success inside the learned simulator, from given start states: what the reflector
reports when the world model plays the policy's actions. Held against the real success of the
same policy from the same init states, it gives the reward-hacking gap."""
from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from worldenv.data.start_bank import StartBank
from worldenv.measure.paired import task
from worldenv.models.imagination import Imagination, imagine
from worldenv.models.roles import Policy, Reflector, StartStates, WorldModel


def start_states(bank: StartBank) -> StartStates:
    """Every entry of `bank` as imagination's start states (frames with their history)."""
    return StartStates(np.stack([bank.start_frames(i) for i in range(len(bank))]), bank.proprio.astype(np.float32),
                       list(bank.instructions))


def draw_starts(starts: str, n: int, seed: int) -> StartBank:
    """`n` start states of the bank `starts` names, drawn uniformly without replacement with
    `seed`, in bank order; a missing bank or too few states is a ValueError naming the flag."""
    from worldenv import checkpoints
    bank_path = checkpoints.start_bank(starts)
    if bank_path is None or not bank_path.is_file():
        raise ValueError(f"--starts: no start bank at {starts}")
    full = StartBank.load(bank_path)
    if n > len(full):
        raise ValueError(f"--groups: {n} start states asked, the bank holds {len(full)}")
    return full.subset(np.sort(np.random.default_rng(seed).choice(len(full), n, replace=False)))


def rollouts(policy: Policy, world_model: WorldModel, reflector: Reflector, bank: StartBank, horizon: int,
             eta: float, deterministic: bool = True, batch: int = 16, seed: int = 0,
             grasp_gate: float = 0.0, episodes: bool = False, confirm: int = 1,
             explore: Sequence[Collection[int] | None] | None = None) -> list[dict]:
    """One imagined episode per bank entry, `batch` at a time: {"id", "done", "p_done", "chunks"},
    and with `episodes` the whole imagined `Episode` as "episode" (its chunks, p(done), proprio; not JSON).
    Sampled (not `deterministic`) episodes draw with per-episode seeds from `seed` (0 = the
    policy's own RNG), so the same call gives the same episodes whatever the batch. `grasp_gate`,
    `confirm`: see `Imagination.start`; `explore` (one entry per bank entry): see `imagine`."""
    out = []
    with Imagination(world_model, reflector) as imagination:
        for lo in range(0, len(bank), batch):
            part = bank.subset(range(lo, min(lo + batch, len(bank))))
            starts = start_states(part)
            seeds = None if deterministic or not seed else [seed * 100_003 + lo + i + 1 for i in range(len(part))]
            imagined = imagine(policy, imagination, starts, horizon, eta, deterministic, seeds, grasp_gate=grasp_gate,
                               confirm=confirm, explore=None if explore is None else explore[lo:lo + len(part)])
            out += [{"id": part.ids[i], "done": e.done, "p_done": e.p_done[-1], "chunks": len(e.actions)}
                    | ({"episode": e} if episodes else {})
                    for i, e in enumerate(imagined)]
    return out


def by_task(records: list[dict]) -> dict[str, int]:
    """Successes per task of `rollouts` records, in task order."""
    out: dict[str, int] = {}
    for r in records:
        out[task(r["id"])] = out.get(task(r["id"]), 0) + int(r["done"])
    return dict(sorted(out.items()))


def fixed_draw(bank: StartBank, per_task: int, seed: int = 0) -> StartBank:
    """`per_task` entries of each task (ids suite/task/...), drawn once with `seed`, in bank order:
    the same start states at every snapshot of an RL run, whatever it drew while training."""
    by_task: dict[str, list[int]] = {}
    for i, sid in enumerate(bank.ids):
        by_task.setdefault(task(sid), []).append(i)
    rng = np.random.default_rng(seed)
    picked = [int(j) for t in sorted(by_task) for j in rng.choice(by_task[t], min(per_task, len(by_task[t])),
                                                                 replace=False)]
    return bank.subset(sorted(picked))


def objective(policy: Policy, world_model: WorldModel, reflector: Reflector, bank: StartBank, horizon: int,
              eta: float, seed: int = 1, grasp_gate: float = 0.0, confirm: int = 1) -> dict:
    """What RL in imagination optimises, measured on fixed start states: each entry's imagined
    episode with the policy's mean and with actions sampled as RL samples them (its Laplace head,
    seeded): {"mean": [...], "sampled": [...]} of `rollouts` records."""
    return {"mean": rollouts(policy, world_model, reflector, bank, horizon, eta, deterministic=True,
                             grasp_gate=grasp_gate, confirm=confirm),
            "sampled": rollouts(policy, world_model, reflector, bank, horizon, eta, deterministic=False, seed=seed,
                                grasp_gate=grasp_gate, confirm=confirm)}
