"""`worldenv sensitivity`: how the imagined outcome answers a small change of one action chunk.

A policy gradient finds a direction only where the outcome is a function of the actions that
changes little when they change little. This measures that on the imagination itself, with no
sampling: from each start the policy's mean episode (the base), then the same episode with one
chunk offset by a fixed vector of size m (normalised action units: m times each dimension's
spread, a random sign per dimension, the same at every step of the chunk, as `--noise chunk`
explores), at a chunk drawn uniformly among the chunks the base ran, its mean everywhere else.
Per size m it reports how often the outcome differs from the base's (flips), the mean change of
the final p(done), and the share of starts where at least one of the offsets flipped it (what a
group of N would see). Size 0 replays the base in other batches: the flips of the numerics alone.
Offsets come in pairs v, -v: a flip on one side only is a direction (the outcome's first order,
what a gradient follows); a flip on both sides is a ridge (a mean at a local best or worst,
whose groups give large advantages and no expected direction).

Where the outcome answers its action smoothly, flips grow with m from none at m -> 0; where the
closed loop amplifies any change into another episode, flips are as frequent at m = 1e-4 as at
m = 0.1, and the outcome carries nothing a gradient could follow.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from pydantic import Field, field_validator

from worldenv.config import Settings, comma_list, confirm_field, grasp_gate_field
from worldenv.measure.objective import write_out
from worldenv.models.imagination import step_seed
from worldenv.models.roles import ActionChunks, Observations


class SensitivityConfig(Settings):
    """Flips of the imagined outcome under fixed offsets of one chunk, by offset size."""

    policy: str = Field("shipped", description="policy checkpoint directory ('shipped', 'shipped-rl' or a path)")
    starts: str = Field("shipped", description="start-state bank (.npz); 'shipped' = worldenv's keyframes")
    world_model: str = Field("shipped", description="world-model checkpoint directory; 'shipped' = worldenv's")
    reflector: str = Field("shipped", description="reflector checkpoint directory; 'shipped' = worldenv's")
    groups: int = Field(32, ge=1, le=4096, description="start states drawn (uniformly, without replacement)")
    offsets: int = Field(8, ge=2, le=64, multiple_of=2, description="offsets per start and size, in pairs v, -v "
                         "(v a random sign vector): whether a flip has a side")
    sizes: str = Field("0,0.0001,0.001,0.01,0.1", description="comma-separated offset sizes m >= 0, normalised "
                       "action units (times each dimension's spread); 0 = the base replayed in other batches")
    horizon: int = Field(30, ge=1, description="max action chunks per imagined episode (RL's)")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold on p(done); 0 = the reflector's default")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    draw_seed: int = Field(0, ge=0, description="seed of the draw of start states")
    seed: int = Field(1, ge=1, description="seed of the offset chunks and directions")
    batch: int = Field(32, ge=1, le=256, description="imagined episodes run as one batch")
    out: str | None = Field(None, description="JSON file of the figures and every episode's outcome; none = print only")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: str) -> str:
        sizes_list(value)
        return value


@dataclasses.dataclass
class Offset:
    """Episode i's change: `vector` (A,) added to every step of its chunk `at`."""

    at: int
    vector: np.ndarray


class OffsetPolicy:
    """The policy's mean, with a fixed offset added to one chunk of chosen episodes. `imagine`
    gives each live row its step seed (`step_seed(seeds[i], t)`), which names the episode and the
    chunk here."""

    def __init__(self, policy, seeds: Sequence[int], offsets: dict[int, Offset], horizon: int):
        self.policy, self.spec = policy, policy.spec
        self.offsets = offsets
        self.rows = {step_seed(s, t): (i, t) for i, s in enumerate(seeds) for t in range(horizon)}

    def act(self, obs: Observations, deterministic=True, seeds: Sequence[int] | None = None) -> ActionChunks:
        if seeds is None:
            raise ValueError("seeds: OffsetPolicy needs the step seeds that name each row")
        out = self.policy.act(obs, True)
        actions = out.actions.copy()
        for k, s in enumerate(seeds):
            i, t = self.rows[int(s)]
            change = self.offsets.get(i)
            if change is not None and change.at == t:
                actions[k] += change.vector[None, :]
        return ActionChunks(out.loc, out.scale, actions, out.log_probs)


def sizes_list(value: str) -> list[float]:
    """Comma-separated offset sizes, each finite and >= 0, at least one; else a ValueError."""
    try:
        sizes = [float(v) for v in comma_list(value)]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers >= 0, got {value!r}") from None
    if not sizes or any(not np.isfinite(s) or s < 0 for s in sizes):
        raise ValueError(f"expected comma-separated numbers >= 0, got {value!r}")
    return sizes


def run_episodes(policy, world_model, reflector, bank, offsets: dict[int, Offset], config: SensitivityConfig,
                 order: np.ndarray) -> list[dict]:
    """One episode per bank entry, the mean with `offsets`; run in the batches `order` makes
    (a permutation of the entries), returned in bank order: {"done", "p_done", "chunks"}."""
    from worldenv.measure.imagined import start_states
    from worldenv.models.imagination import Imagination, imagine
    out: list[dict | None] = [None] * len(bank)
    seeds = [i + 1 for i in range(len(bank))]
    acting = OffsetPolicy(policy, seeds, offsets, config.horizon)
    with Imagination(world_model, reflector) as imagination:
        for lo in range(0, len(bank), config.batch):
            rows = order[lo:lo + config.batch]
            episodes = imagine(acting, imagination, start_states(bank.subset(rows)), config.horizon, config.eta, True,
                               [seeds[r] for r in rows], grasp_gate=config.grasp_gate, confirm=config.confirm)
            for r, e in zip(rows, episodes):
                out[int(r)] = {"done": bool(e.done), "p_done": float(e.p_done[-1]), "chunks": len(e.actions)}
    return out  # type: ignore[return-value]


def summary(base: list[dict], changed: list[dict], offsets: int) -> dict:
    """Per size: flips against the base, the mean |change| of the final p(done), and the share
    of starts where at least one of their `offsets` episodes flipped."""
    done = np.array([[c["done"] for c in changed[g * offsets:(g + 1) * offsets]] for g in range(len(base))])
    p = np.array([[c["p_done"] for c in changed[g * offsets:(g + 1) * offsets]] for g in range(len(base))])
    base_done = np.array([b["done"] for b in base])[:, None]
    base_p = np.array([b["p_done"] for b in base])[:, None]
    flips = done != base_done
    sides = flips.reshape(len(base), -1, 2).sum(axis=2)              # flips of each pair (v, -v): 0, 1 or 2
    was_done = base_done[:, 0]
    return {"flip_rate": float(flips.mean()), "flips": int(flips.sum()), "episodes": int(flips.size),
            "starts_with_a_flip": float(flips.any(axis=1).mean()),
            "p_done_change": float(np.abs(p - base_p).mean()),
            "flip_rate_done_base": float(flips[was_done].mean()) if was_done.any() else float("nan"),
            "flip_rate_failed_base": float(flips[~was_done].mean()) if (~was_done).any() else float("nan"),
            "pairs_with_a_flip": int((sides > 0).sum()), "one_sided": int((sides == 1).sum()),
            "one_sided_done_base": int((sides == 1)[was_done].sum()),
            "one_sided_failed_base": int((sides == 1)[~was_done].sum()),
            "both_sides_done_base": int((sides == 2)[was_done].sum()),
            "both_sides_failed_base": int((sides == 2)[~was_done].sum())}


def measure(config: SensitivityConfig) -> dict:
    from worldenv import models
    from worldenv.measure.align import load_checkpoint, resolve
    from worldenv.measure.imagined import draw_starts
    from worldenv.measure.update_signal import explored_chunks
    bank = draw_starts(config.starts, config.groups, config.draw_seed)
    policy = models.load(resolve(config.policy, "policy", "--policy"), role="policy")
    world_model = load_checkpoint(config.world_model, "world_model")
    reflector = load_checkpoint(config.reflector, "reflector")
    policy.eval()
    c = policy.config
    spread = np.asarray(getattr(c, "action_spread", None) or [1.0] * c.action_dim, np.float32)
    base = run_episodes(policy, world_model, reflector, bank, {}, config, np.arange(len(bank)))
    rng = np.random.default_rng([config.seed, config.draw_seed])
    at = explored_chunks([b["chunks"] for b in base], rng)
    half = rng.choice([-1.0, 1.0], size=(len(bank), config.offsets // 2, 1, c.action_dim)).astype(np.float32)
    signs = np.concatenate([half, -half], axis=2).reshape(len(bank), config.offsets, c.action_dim)   # v, -v, ...
    many = bank.subset(np.repeat(np.arange(len(bank)), config.offsets))
    results = []
    for size in sizes_list(config.sizes):
        offsets = {g * config.offsets + j: Offset(at[g], size * spread * signs[g, j])
                   for g in range(len(bank)) for j in range(config.offsets)}
        order = np.random.default_rng([config.seed, len(results)]).permutation(len(many))   # other batches than the base's
        changed = run_episodes(policy, world_model, reflector, many, offsets, config, order)
        results.append({"size": size, **summary(base, changed, config.offsets),
                        "done": [c["done"] for c in changed]})
        r = results[-1]
        print(f"m={size:g}: outcome flipped in {r['flips']} of {r['episodes']} episodes ({100 * r['flip_rate']:.1f} %; "
              f"base done {100 * r['flip_rate_done_base']:.1f} %, base failed {100 * r['flip_rate_failed_base']:.1f} %), "
              f"starts with a flip {100 * r['starts_with_a_flip']:.0f} %, mean |p(done) change| {r['p_done_change']:.3f}; "
              f"pairs v, -v with a flip {r['pairs_with_a_flip']}: one side only {r['one_sided']} (base done "
              f"{r['one_sided_done_base']}, failed {r['one_sided_failed_base']}), both sides: base done "
              f"{r['both_sides_done_base']}, failed {r['both_sides_failed_base']}", flush=True)
    return {"config": config.model_dump(), "ids": list(bank.ids), "base_done": [b["done"] for b in base],
            "base_chunks": [b["chunks"] for b in base], "offset_chunk": at, "sizes": results}


def run(config: SensitivityConfig) -> int:
    result = measure(config)
    print(f"{len(result['ids'])} starts, base done {sum(result['base_done'])}, {config.offsets} offsets per start and size")
    write_out(result, config.out)
    return 0
