"""`worldenv compare`: LIBERO evaluations of policies on the same init states, paired; or the
alignment of world models (`worldenv align` outputs), each episode scored by whether imagination's
verdict agrees with LIBERO's outcome, since one world model's figure is one draw of its training.

One candidate against one baseline is McNemar's exact test and a paired bootstrap. Several runs
on a side (RL at several training seeds, their shuffled-rewards controls, SFT at several seeds)
are compared as groups: per init state, the candidates' mean success minus the baselines', with
an interval from resampling init states. That interval holds the runs fixed; how far runs of one
side differ from each other (the training seed's spread) is printed beside it, because a gain
smaller than that spread is not one a single run would show. With at least two runs a side, the
runs themselves are compared too (a permutation test of their success rates), with how many runs
a side a gain of 5 or 10 points would need at the spread they show.

Two `worldenv train rl` runs on the same seed (a run and its shuffled-rewards control) are
compared by their on-policy imagined success, paired by iteration (`training_runs`)."""
from __future__ import annotations

import itertools
import json
import pathlib
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from worldenv.config import Settings, comma_list
from worldenv.measure import paired, training_runs
from worldenv.sim.report import rate


POSITIONAL = {"positional": True}


class CompareConfig(Settings):
    """LIBERO evaluations (`worldenv eval` outputs) compared on the episodes they share."""

    baseline: str = Field(description="the reference runs: eval output directories (or their eval.json), "
                          "comma-separated, e.g. SFT, or the shuffled-rewards controls at several seeds; or align "
                          "outputs (alignment.json), e.g. world models trained at several seeds; or `train rl --out` "
                          "directories (metrics.jsonl), e.g. a shuffled-rewards control, compared by on-policy imagined "
                          "success iteration by iteration",
                          json_schema_extra=POSITIONAL)
    candidate: str = Field(description="the runs compared with them, comma-separated, e.g. RL at several seeds",
                           json_schema_extra=POSITIONAL)
    alignment: Literal["closed_loop", "replay", "real_video", "imagined_actions"] = Field(
        "closed_loop", description="for `worldenv align` outputs (directories or their alignment.json): whose verdict "
        "is scored, 1 where it agrees with LIBERO's outcome: the policy's closed loop in imagination, the reflector "
        "on the world model's replay of the real actions, or on the real video; imagined_actions: the closed loop's "
        "verdict against LIBERO's outcome of the closed loop's own actions (`align --in-libero`)")
    resamples: int = Field(10_000, ge=100, le=1_000_000, description="bootstrap resamples of the init states")
    same_starts_only: bool = Field(False, description="for `train rl` runs: pair only the iterations where both "
                                   "runs drew the same starts (from their groups.jsonl), e.g. a run whose draws "
                                   "parted from its control's for a while")
    from_iteration: int = Field(1, ge=1, description="for `train rl` runs: pair only the iterations from this one "
                                "on, e.g. a second control's after it was forked from the first (the fork carries "
                                "the rows before it, which compare refuses to pair; the fork's first iteration, "
                                "collected with one policy in both, is then the check)")
    to_iteration: int | None = Field(None, ge=1, description="for `train rl` runs: pair only the iterations up to "
                                     "this one, e.g. two pairs at the same distance from where each parted; "
                                     "none = every iteration both have")
    out: str | None = Field(None, description="also write the comparison as JSON to this file")

    @model_validator(mode="after")
    def _a_range(self) -> "CompareConfig":
        if self.to_iteration is not None and self.to_iteration < self.from_iteration:
            raise ValueError(f"to_iteration: {self.to_iteration} is before --from-iteration {self.from_iteration}")
        return self


def outcomes(evaluation: dict) -> dict[str, bool]:
    """Episode id (suite/task/init) -> LIBERO's success, from a `worldenv eval` result (eval.json)."""
    return {e["id"]: bool(e["success"]) for e in evaluation["episodes"]}


# alignment.json's per-episode keys: the verdict, and the LIBERO outcome it is held against
VERDICT = {"closed_loop": ("imagined", "real"), "replay": ("replay", "real"), "real_video": ("real_video", "real"),
           "imagined_actions": ("imagined", "imagined_in_libero")}


class MissingVerdict(ValueError):
    """An align output without the per-episode outcome a --alignment choice needs."""


def agreement(result: dict, verdict: str = "closed_loop") -> dict[str, bool]:
    """Episode id -> whether `verdict` agrees with LIBERO's outcome, from a `worldenv align` result."""
    judged, truth = VERDICT[verdict]
    if verdict == "imagined_actions" and any(e.get(truth) is None for e in result["per_episode"]):
        raise MissingVerdict(f"no {truth} per episode: --alignment {verdict} needs `worldenv align --in-libero` "
                             "outputs")
    return {e["id"]: bool(e[judged]) == bool(e[truth]) for e in result["per_episode"]}


def load(where: str, verdict: str = "closed_loop") -> tuple[str, dict[str, bool]]:
    """("success", episode id -> LIBERO's success) from an eval directory or its eval.json, or
    ("agreement", episode id -> `agreement`) from an align directory or its alignment.json."""
    path = pathlib.Path(where)
    if path.is_dir():
        path = next((path / f for f in ("eval.json", "alignment.json") if (path / f).is_file()), path / "eval.json")
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no eval.json or alignment.json (give a `worldenv eval --out` or "
                                "`worldenv align --out` directory, or the file)")
    try:
        result = json.loads(path.read_text())
        if isinstance(result, dict) and "per_episode" in result:
            return "agreement", agreement(result, verdict)
        return "success", outcomes(result)
    except MissingVerdict as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a `worldenv eval` or `worldenv align` result ({exc})") from None


def pair(a: dict[str, bool], b: dict[str, bool], resamples: int = 10_000) -> dict:
    """b against a on the episodes both have: rates, McNemar, the bootstrapped difference, per task."""
    x, y = paired.pairs(a, b)
    return {"n": len(x), "a": rate(int(x.sum()), len(x)), "b": rate(int(y.sum()), len(y)),
            "mcnemar": paired.mcnemar(x, y), "bootstrap": paired.bootstrap_difference(x, y, resamples),
            "by_task": paired.by_task(a, b)}


def groups(baselines: list[dict[str, bool]], candidates: list[dict[str, bool]], resamples: int = 10_000) -> dict:
    """Per init state the candidates' mean success minus the baselines', on the ids all runs share,
    and the spread (highest minus lowest success rate) of the runs on each side."""
    common = sorted(set.intersection(*(set(run) for run in baselines + candidates)))
    if not common:
        raise ValueError("the evaluations share no episode ids")
    a = np.array([[run[i] for i in common] for run in baselines], np.float64)
    b = np.array([[run[i] for i in common] for run in candidates], np.float64)
    out = {"n": len(common), "baseline_rates": a.mean(axis=1).tolist(), "candidate_rates": b.mean(axis=1).tolist(),
           **paired.bootstrap_difference(a.mean(axis=0), b.mean(axis=0), resamples),
           "baseline_spread": float(np.ptp(a.mean(axis=1))), "candidate_spread": float(np.ptp(b.mean(axis=1)))}
    return out | {"runs": runs(a.mean(axis=1), b.mean(axis=1))}


GAINS = (0.05, 0.10)   # gains (success-rate points / 100) whose runs-a-side are printed


def runs(a: np.ndarray, b: np.ndarray) -> dict | None:
    """The runs as the unit (the training seed's spread included): the permutation test of their
    rates, their pooled standard deviation, and the runs a side GAINS would need. None
    unless both sides have at least two runs."""
    if min(len(a), len(b)) < 2:
        return None
    sd = float(np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)))
    return {**paired.permutation_test(a, b), "sd": sd,
            "runs_needed": {f"{g:.2f}": paired.runs_needed(sd, g) for g in GAINS}}


def compare(config: CompareConfig) -> dict:
    """Every candidate against every baseline, and the two sides as groups when either has several."""
    names = {side: comma_list(getattr(config, side)) for side in ("baseline", "candidate")}
    for side, found in names.items():
        if not found:
            raise ValueError(f"{side}: give at least one eval directory")
    if any(training_runs.is_run(w) for found in names.values() for w in found):
        return compare_training(names, config.resamples, config.same_starts_only, config.from_iteration,
                                config.to_iteration)
    loaded = {side: [load(w, config.alignment) for w in found] for side, found in names.items()}
    kinds = {kind for side in loaded.values() for kind, _ in side}
    if len(kinds) > 1:
        raise ValueError("baseline, candidate: give all eval outputs (success) or all align outputs (agreement), "
                         "not both")
    runs = {side: [r for _, r in side_runs] for side, side_runs in loaded.items()}
    measure = "success" if kinds == {"success"} else f"{config.alignment} agreement"
    pairs = [{"baseline": names["baseline"][i], "candidate": names["candidate"][j],
              **pair(runs["baseline"][i], runs["candidate"][j], config.resamples)}
             for i, j in itertools.product(range(len(names["baseline"])), range(len(names["candidate"])))]
    several = len(runs["baseline"]) > 1 or len(runs["candidate"]) > 1
    return {"measure": measure, "baseline": names["baseline"], "candidate": names["candidate"], "pairs": pairs,
            "groups": groups(runs["baseline"], runs["candidate"], config.resamples) if several else None}


ON_POLICY = "on-policy imagined success"


def compare_training(names: dict[str, list[str]], resamples: int, same_starts_only: bool = False,
                     first: int = 1, last: int | None = None) -> dict:
    """Each candidate run against the baseline run in the same place of its list (one seed's run
    and its control), paired by iteration; with several pairs, the pairs as the unit."""
    if not all(training_runs.is_run(w) for found in names.values() for w in found):
        raise ValueError("baseline, candidate: give all `train rl` run directories (metrics.jsonl), or none")
    if len(names["baseline"]) != len(names["candidate"]):
        raise ValueError(f"baseline, candidate: {len(names['baseline'])} and {len(names['candidate'])} runs; give "
                         "one control run per run, in the same order (each pair on one seed)")
    runs = {w: training_runs.load_run(w) for found in names.values() for w in found}
    pairs = [{"baseline": a, "candidate": b, **training_runs.pair_runs(runs[a], runs[b], resamples,
                                                                       same_starts_only=same_starts_only,
                                                                       first=first, last=last)}
             for a, b in zip(names["baseline"], names["candidate"])]
    return {"measure": ON_POLICY, "baseline": names["baseline"], "candidate": names["candidate"], "pairs": pairs,
            "groups": None, "across_pairs": training_runs.across_pairs(pairs)}


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def markdown(result: dict) -> str:
    """The comparison as a table per pair and, for groups, one line with the seeds' spread."""
    measure = result.get("measure", "success")
    if measure == ON_POLICY:
        return training_runs.markdown(result["pairs"], result.get("across_pairs"))
    lines = [f"Measure: {measure} per episode (1 = {'LIBERO success' if measure == 'success' else 'agrees with LIBERO'}).",
             "",
             "| baseline | candidate | n | baseline | candidate | difference, points (95 % CI) | "
             "only candidate / only baseline | McNemar p | per task: only candidate / only baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in result["pairs"]:
        boot, test = p["bootstrap"], p["mcnemar"]
        tasks = ", ".join(f"{t}: {v['only_b']}/{v['only_a']}" for t, v in p["by_task"].items())
        lines.append(f"| {p['baseline']} | {p['candidate']} | {p['n']} | {p['a']['successes']} | {p['b']['successes']} | "
                     f"{_pct(boot['difference'])} ({_pct(boot['ci95'][0])} to {_pct(boot['ci95'][1])}) | "
                     f"{test['only_b']} / {test['only_a']} | {test['p_value']:.3f} | {tasks} |")
    g = result["groups"]
    if g:
        rates = lambda rs: ", ".join(f"{100 * r:.1f}" for r in rs)  # noqa: E731
        lines += ["", f"Groups on {g['n']} shared episodes: candidates' mean minus baselines' mean "
                  f"{_pct(g['difference'])} points (95 % CI {_pct(g['ci95'][0])} to {_pct(g['ci95'][1])}, "
                  f"init states resampled, runs held fixed). Rates (%): baselines {rates(g['baseline_rates'])} "
                  f"(spread {100 * g['baseline_spread']:.1f}), candidates {rates(g['candidate_rates'])} "
                  f"(spread {100 * g['candidate_spread']:.1f})."]
        r = g.get("runs")
        if r:
            need = ", ".join(f"{100 * float(k):.0f} points: {v}" for k, v in r["runs_needed"].items())
            lines += ["", f"Runs as the unit (the seed's spread included): permutation test p = {r['p_value']:.3f} "
                      f"over {r['splits']} splits (the smallest p these numbers of runs can give: "
                      f"{r['smallest_p']:.3f}); the runs' standard deviation {100 * r['sd']:.1f} points, so a "
                      f"true gain needs, per side, for 80 % power at 5 %: {need} runs."]
    return "\n".join(lines)


def run(config: CompareConfig) -> int:
    """Print the comparison; with --out write it as JSON too."""
    result = compare(config)
    print(markdown(result))
    if config.out:
        pathlib.Path(config.out).write_text(json.dumps(result, indent=2))
    return 0
