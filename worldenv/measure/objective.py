"""`worldenv objective`: RL's own objective, measured in imagination only.

Each policy plays one fixed draw of a start bank inside the world model, the reflector deciding,
with its mean and with actions sampled from its Laplace head (at the checkpoint's own scale or
restarted at each --exploration-scales value, as `train rl` explores). Two questions are answered
here without a real simulator step, so settings can be chosen on them:
- which exploration scale keeps success (sampled / mean, per scale);
- does an RL run raise what it optimises (each policy against the first, or --against, paired on the
  same starts), and by more than no-signal controls part by chance (--controls: every other row's
  lead over each control against the controls' own gap).
`--results` compares the rows of earlier `--out` files (policies measured at different times, on
the same draw and settings) without measuring again.
"""
from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from worldenv.config import Settings, comma_list, confirm_field, grasp_gate_field

if TYPE_CHECKING:
    import numpy as np

OBJECTIVE_DRAW = 12345   # the seed of the fixed draw of start states (the experiment's too)
DRAW_KEYS = ("starts", "per_task", "draw_seed", "horizon", "eta", "grasp_gate", "confirm")   # what rows must share to pair


def scales_list(value: str | None) -> list[float]:
    """Comma-separated exploration scales (each > 0) -> floats; none or empty -> []."""
    if not value:
        return []
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {value!r}") from None
    if any(v <= 0 for v in out):
        raise ValueError(f"every scale must be > 0, got {value!r}")
    return out


class ObjectiveConfig(Settings):
    """Imagined success of policies (mean and sampled) on one fixed draw of a start bank."""

    policies: str = Field("shipped", description="comma-separated policy checkpoint directories ('shipped', "
                          "'shipped-rl' or a path); the first is the one the others are compared with")
    starts: str = Field("shipped", description="start-state bank (.npz); 'shipped' = worldenv's keyframes")
    world_model: str = Field("shipped", description="world-model checkpoint directory; 'shipped' = worldenv's")
    reflector: str = Field("shipped", description="reflector checkpoint directory; 'shipped' = worldenv's")
    per_task: int = Field(24, ge=1, description="start states per task in the fixed draw")
    draw_seed: int = Field(OBJECTIVE_DRAW, ge=0, description="seed of the fixed draw (the experiment's by default)")
    horizon: int = Field(30, ge=1, description="max action chunks per imagined episode (RL's)")
    eta: float = Field(0.0, ge=0, lt=1, description="done threshold on p(done); 0 = the reflector's default")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    exploration_scales: str | None = Field(
        None, description="comma-separated Laplace scales (normalised action units) to restart each policy's scale "
        "at before its sampled episodes, e.g. 0.02,0.05,0.1; none = each checkpoint's own scale")
    samples: int = Field(1, ge=1, le=16, description="sampled episodes per start state (seeds 1..K)")
    batch: int = Field(16, ge=1, le=256, description="imagined episodes run as one batch")
    out: str | None = Field(None, description="JSON file of every episode's outcome; none = print only")
    against: str | None = Field(
        None, description="the policy the others are compared with, as --policies or the rows name it, or its "
        "directory's name (e.g. the control of an RL run); none = the first. Each row is held against its row "
        "at the same scale. When measuring, the rows are printed again against it at the end")
    controls: str | None = Field(
        None, description="comma-separated names (as --against takes them) of at least two runs trained with no "
        "signal (`train rl --shuffle-rewards`, other shuffle seeds): each other row's lead over every control, "
        "mean and sampled, held against the largest gap between two controls at its scale, the distance chance "
        "alone put between them; none = no such line")
    resamples: int = Field(
        2000, ge=0, le=100_000, description="--controls: how often to redraw the starts with replacement (the same "
        "draw for every row) and say in what share of the redraws each row would still lead every control by more "
        "than the controls' gap: how far the verdict rests on which starts were drawn; 0 = not redrawn")
    results: str | None = Field(
        None, description="comma-separated JSON files of earlier --out runs: print their rows, each against the "
        "first policy's (or --against), instead of measuring (the policy and model flags are then not used); the "
        "files must share the draw and the settings (" + ", ".join(DRAW_KEYS) + "); --out writes them as one")

    @field_validator("exploration_scales")
    @classmethod
    def _scales(cls, value: str | None) -> str | None:
        scales_list(value)
        return value

    @field_validator("controls")
    @classmethod
    def _controls(cls, value: str | None) -> str | None:
        if value is not None and len(set(comma_list(value))) < 2:
            raise ValueError("name at least two control runs: their gap is what a lead is held against")
        return value

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: str) -> str:
        if not comma_list(value):
            raise ValueError("name at least one policy checkpoint")
        return value


def measure(config: ObjectiveConfig) -> dict:
    """{"starts": n, "rows": [{"policy", "scale", "mean": [...], "sampled": [[...] per seed]}]}."""
    from worldenv import checkpoints, models
    from worldenv.data.start_bank import StartBank
    from worldenv.measure import imagined
    from worldenv.measure.align import load_checkpoint, resolve
    from worldenv.models import laplace
    bank_path = checkpoints.start_bank(config.starts)
    if bank_path is None or not bank_path.is_file():
        raise ValueError(f"--starts: no start bank at {config.starts}")
    bank = imagined.fixed_draw(StartBank.load(bank_path), config.per_task, config.draw_seed)
    paths = {name: resolve(name, "policy", "--policies") for name in comma_list(config.policies)}
    world_model = load_checkpoint(config.world_model, "world_model")
    reflector = load_checkpoint(config.reflector, "reflector")
    rows = []
    for name, path in paths.items():
        policy = models.load(path, role="policy")
        mean = imagined.rollouts(policy, world_model, reflector, bank, config.horizon, config.eta, batch=config.batch,
                                 grasp_gate=config.grasp_gate, confirm=config.confirm)
        for scale in scales_list(config.exploration_scales) or [None]:
            laplace.restart_scale(policy, scale, "--exploration-scales")   # resets the head whole: no earlier scale left
            sampled = [imagined.rollouts(policy, world_model, reflector, bank, config.horizon, config.eta,
                                         deterministic=False, batch=config.batch, seed=seed,
                                         grasp_gate=config.grasp_gate, confirm=config.confirm)
                       for seed in range(1, config.samples + 1)]
            rows.append({"policy": name, "scale": scale, "mean": mean, "sampled": sampled})
            print(line(rows[-1], reference(rows, rows[-1], None)), flush=True)
    return {"starts": len(bank), "per_task": config.per_task, "draw_seed": config.draw_seed,
            "horizon": config.horizon, "eta": config.eta, "grasp_gate": config.grasp_gate,
            "confirm": config.confirm, "rows": rows}


def load_results(value: str) -> dict:
    """The rows of earlier --out files as one result, refused (naming --results) where a file is
    missing, is not such a file, or differs from the first in the draw or a setting."""
    files = comma_list(value)
    if not files:
        raise ValueError("--results: name at least one JSON file written by --out")
    merged: dict | None = None
    for name in files:
        path = pathlib.Path(name)
        if not path.is_file():
            raise ValueError(f"--results: no file {name}")
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"--results: {name} is not JSON ({exc})") from None
        if not isinstance(result, dict) or not isinstance(result.get("rows"), list) or not result["rows"]:
            raise ValueError(f"--results: {name} has no rows; expected a file written by `worldenv objective --out`")
        if merged is None:
            merged = {**result, "rows": list(result["rows"]), "results": files}
            continue
        for key in DRAW_KEYS:
            if result.get(key) != merged.get(key):
                raise ValueError(f"--results: {name} has {key} = {result.get(key)!r} and {files[0]} has "
                                 f"{merged.get(key)!r}; rows measured on different draws or settings do not pair")
        merged["rows"].extend(result["rows"])
    return merged


def sampled_outcomes(row: dict) -> dict[str, bool]:
    """A row's sampled episodes by start id and seed ("suite/task/.../#seed"), so two rows with the
    same number of seeds pair episode for episode."""
    return {f"{r['id']}/#{seed}": r["done"] for seed, draw in enumerate(row["sampled"], 1) for r in draw}


def pick(names: list[str], against: str | None, flag: str = "--against") -> str:
    """The one of `names` that `flag` names (exactly, or as the last part of its path); the first when none."""
    if against is None:
        return names[0]
    matches = [n for n in names if n == against] or [n for n in names if pathlib.PurePath(n).name == against]
    if len(matches) != 1:
        raise ValueError(f"{flag}: {against!r} names {len(matches)} of the policies {', '.join(names)}; "
                         "name exactly one")
    return matches[0]


def reference(rows: list[dict], row: dict, against: str | None) -> dict:
    """The row `row` is compared with: the --against policy's (the first policy's when none) at
    `row`'s scale, else that policy's first row. A name matches a row's policy exactly or as the
    last part of its path; a name no row has, or that two policies share, is refused."""
    chosen = pick(list(dict.fromkeys(r["policy"] for r in rows)), against)
    own = [r for r in rows if r["policy"] == chosen]
    return next((r for r in own if r["scale"] == row["scale"]), own[0])


def report(rows: list[dict], against: str | None) -> None:
    """Every row's line, each against its reference row."""
    for row in rows:
        print(line(row, reference(rows, row, against)), flush=True)


def line(row: dict, first: dict) -> str:
    """One printed row: mean and sampled success per task, sampled/mean, and the paired difference
    from the row it is held against, `first` (McNemar; "the first" in the text): the mean's, with the
    discordant starts per task, and the sampled episodes' (start and seed paired) where both rows
    drew as many seeds."""
    from worldenv.measure import paired
    from worldenv.measure.imagined import by_task
    n, k = len(row["mean"]), len(row["sampled"])
    mean, sampled = done_counts(row)
    drawn = [r for s in row["sampled"] for r in s]
    ratio = f"{sampled / (k * mean):.2f}" if mean else "-"
    scale = "own" if row["scale"] is None else f"{row['scale']:g}"
    text = (f"{row['policy']}  b={scale}  mean {mean}/{n} {by_task(row['mean'])}  sampled {sampled}/{n * k} "
            f"{by_task(drawn)}  sampled/mean {ratio}")
    if row is not first and row["policy"] != first["policy"]:
        first_done, done = {r["id"]: r["done"] for r in first["mean"]}, {r["id"]: r["done"] for r in row["mean"]}
        a, b = paired.pairs(first_done, done)
        test = paired.mcnemar(a, b)
        tasks = " ".join(f"{t or '-'}: {m['only_a']}/{m['only_b']}" for t, m in paired.by_task(first_done, done).items())
        text += (f"  vs {first['policy']}: {int(b.sum()) - int(a.sum()):+d} (McNemar p = {test['p_value']:.2g}; "
                 f"per task, only the first / only this: {tasks})")
        if len(first["sampled"]) == k:
            a, b = paired.pairs(sampled_outcomes(first), sampled_outcomes(row))
            test = paired.mcnemar(a, b)
            text += (f"; sampled {int(b.sum()) - int(a.sum()):+d} (only the first / only this "
                     f"{test['only_a']}/{test['only_b']}, McNemar p = {test['p_value']:.2g})")
    return text


def done_counts(row: dict) -> tuple[int, int]:
    """A row's successes: (mean, sampled over all its seeds)."""
    return sum(r["done"] for r in row["mean"]), sum(r["done"] for s in row["sampled"] for r in s)


def against_controls(rows: list[dict], controls: list[str], resamples: int = 0) -> list[dict]:
    """Per scale, every row that is not a control against the controls (each named as --against
    takes it): its lead in successes over each control, mean and sampled, and the controls' gap,
    the largest difference between two of them; `above` where every lead exceeds the gap on both
    measures, and (resamples > 0) `resampled_above`, the share of redraws of the starts where it
    still does. Rows are compared at one scale, so a control lacking a scale leaves it out."""
    names = list(dict.fromkeys(r["policy"] for r in rows))
    chosen = [pick(names, c, "--controls") for c in controls]
    if len(set(chosen)) < len(chosen):
        raise ValueError(f"--controls: {', '.join(controls)} name one policy twice")
    out = []
    for scale in dict.fromkeys(r["scale"] for r in rows):
        at = {r["policy"]: r for r in rows if r["scale"] == scale}
        if not all(c in at for c in chosen):
            continue
        seeds = {name: len(row["sampled"]) for name, row in at.items()}
        if len(set(seeds.values())) > 1:
            raise ValueError(f"--controls: the rows drew different numbers of sampled seeds ({seeds}); their sampled "
                             "successes are not counts of the same episodes")
        base = [done_counts(at[c]) for c in chosen]
        gap = tuple(max(b[m] for b in base) - min(b[m] for b in base) for m in (0, 1))
        for name, row in at.items():
            if name in chosen:
                continue
            own = done_counts(row)
            leads = [tuple(own[m] - b[m] for m in (0, 1)) for b in base]
            verdict = {"policy": name, "scale": scale, "controls": chosen, "gap": {"mean": gap[0], "sampled": gap[1]},
                       "leads": {"mean": [lead[0] for lead in leads], "sampled": [lead[1] for lead in leads]},
                       "above": all(lead[m] > gap[m] for lead in leads for m in (0, 1))}
            if resamples:
                verdict["resampled_above"] = resampled_above(row, [at[c] for c in chosen], resamples)
                verdict["resamples"] = resamples
            out.append(verdict)
    return out


def per_start(row: dict, ids: list[str]) -> np.ndarray:
    """A row's successes per start in the order `ids`: (starts, 2), the mean's and the sampled
    seeds' summed. A row that did not play exactly those starts is refused."""
    import numpy as np
    if any(sorted(r["id"] for r in draw) != sorted(ids) for draw in [row["mean"], *row["sampled"]]):
        raise ValueError(f"--controls: {row['policy']} did not play the controls' starts; rows from different draws "
                         "do not pair")
    mean = {r["id"]: r["done"] for r in row["mean"]}
    sampled = dict.fromkeys(ids, 0)
    for draw in row["sampled"]:
        for r in draw:
            sampled[r["id"]] += r["done"]
    return np.array([[mean[i], sampled[i]] for i in ids], dtype=np.int64)


def resampled_above(row: dict, controls: list[dict], resamples: int, seed: int = 0) -> float:
    """The share of `resamples` redraws of the starts (with replacement, one redraw for every row, so
    the pairing holds) in which `row` leads every control by more than the controls' gap, on the
    mean and on the sampled episodes: 1 when the verdict `above` does not hang on the draw, about
    half when it does."""
    import numpy as np
    ids = [r["id"] for r in controls[0]["mean"]]
    counts = np.stack([per_start(r, ids) for r in [row, *controls]])           # (rows, starts, 2)
    redraws = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    totals = counts[:, redraws].sum(axis=2)                                      # (rows, resamples, 2)
    own, base = totals[0], totals[1:]
    gap = base.max(axis=0) - base.min(axis=0)
    above = ((own[None] - base) > gap[None]).all(axis=(0, 2))
    return float(above.mean())


def controls_line(verdict: dict) -> str:
    """One row against the controls, as printed."""
    scale = "own" if verdict["scale"] is None else f"{verdict['scale']:g}"
    parts = [f"{m} {' / '.join(f'{v:+d}' for v in verdict['leads'][m])} (gap {verdict['gap'][m]})"
             for m in ("mean", "sampled")]
    said = ("leads every control by more than the controls' gap on both" if verdict["above"] else
            "does not lead every control by more than the controls' gap on both")
    held = (f"; with the starts redrawn {verdict['resamples']} times it leads so in {verdict['resampled_above']:.0%}"
            if "resampled_above" in verdict else "")
    return (f"{verdict['policy']}  b={scale}  over the controls {', '.join(verdict['controls'])}: "
            f"{'; '.join(parts)}: {said}{held}")


def write_out(result: dict, out: str | None) -> None:
    """`result` as JSON at --out (its folder made), and where it went; none = nothing."""
    if out:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"-> {path}", flush=True)


def run(config: ObjectiveConfig) -> int:
    """Measure (or read --results), print one line per policy and scale, write --out."""
    if config.results:
        result = load_results(config.results)
        report(result["rows"], config.against)
    else:
        pick(comma_list(config.policies), config.against)   # before hours of measuring
        for control in comma_list(config.controls or ""):
            pick(comma_list(config.policies), control, "--controls")
        result = measure(config)
        if config.against:
            print(f"against {config.against}:", flush=True)
            report(result["rows"], config.against)
    if config.controls:
        result["against_controls"] = against_controls(result["rows"], comma_list(config.controls), config.resamples)
        for verdict in result["against_controls"]:
            print(controls_line(verdict), flush=True)
    write_out(result, config.out)
    return 0
