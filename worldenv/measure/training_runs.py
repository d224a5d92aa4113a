"""Two `worldenv train rl` runs on the same draws, paired iteration by iteration: does a run's
policy succeed more often in imagination, on its own rollouts, than its control's does?

Runs with the same seed draw the same start states and the same sampling seeds at every
iteration (`trainer.iteration_rng`; runs from before it drew from a stream their minibatch orders also
used, so a run and its control drew the same starts only until their updates' timesteps first
differed in number), and their policies are the same before the first update, so the
done fraction of iteration k (the imagined success of the policy after k updates, sampled as RL
explores, over groups x N rollouts) is a paired measurement. The unit is the iteration: the sign
test counts the iterations where one run is ahead (McNemar's exact test on them), and the
difference gets an interval from resampling iterations. Iteration 0, where both policies are the
same, is shown as a check and left out of the test. Halves of the iterations say whether a gap
grows. A shuffled-rewards control (`--shuffle-rewards`) is the usual baseline: it moves the
policy as far with no signal.

One pair's verdict is about those two runs' paths: their policies part after the first updates
and stay apart, so a pair can lead or trail at every iteration by where its updates happened to
go (two pairs of 128-group runs at seeds 21 and 31 gave +2.3 and -2.7 points, each with a sign
test near or under 5 %). Whether true rewards beat no signal is a question across seeds: given
several pairs (runs on both sides in the same order, each pair one seed), the pairs are the
unit, each with its mean difference, in an exact sign-flip test."""
from __future__ import annotations

import itertools
import json
import pathlib

import numpy as np

from worldenv.measure import paired
from worldenv.rl.settings import GROUPS_FILE, METRICS_FILE, SETTINGS_FILE

# What makes two runs draw the same rollouts before their updates part them.
PAIRED_SETTINGS = ("policy", "starts", "seed", "groups", "group_size", "horizon", "eta", "grasp_gate", "confirm",
                   "exploration_scale", "replay_open", "value")


def is_run(where: str) -> bool:
    """A `train rl --out` directory, or a metrics file of one (.jsonl)."""
    path = pathlib.Path(where)
    return (path / METRICS_FILE).is_file() or (path.suffix == ".jsonl" and path.is_file())


def by_iteration(path: pathlib.Path, what: str, read) -> dict[int, object]:
    """Iteration -> `read(row)` for each JSON line of `path` (a later row of an iteration replaces
    an earlier one, as a resumed run rewrites); a line that does not parse, or that `read`
    cannot take, is a ValueError naming the file, the line and `what` it should be."""
    out: dict[int, object] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[int(row["iteration"])] = read(row)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} line {n}: not a {what} row of `train rl` ({exc})") from None
    return out


def load_run(where: str) -> dict:
    """{"rows": iteration -> its metrics row, "settings": the run's settings (run.json beside
    metrics.jsonl), or None for a metrics file kept alone or a run from before they were kept,
    "resumes": the resumes run.json logged, "groups": `load_groups`}."""
    path = pathlib.Path(where)
    metrics = path / METRICS_FILE if path.is_dir() else path
    rows = by_iteration(metrics, "metrics", lambda row: row)
    in_run_dir = metrics.name == METRICS_FILE        # else a metrics file kept alone: nothing beside it
    settings_path = metrics.parent / SETTINGS_FILE
    kept = json.loads(settings_path.read_text()) if in_run_dir and settings_path.is_file() else {}
    return {"rows": rows, "settings": kept.get("settings"), "resumes": kept.get("resumes", []),
            "groups": load_groups(metrics.parent / GROUPS_FILE) if in_run_dir else {}}


def load_groups(path: pathlib.Path) -> dict[int, dict]:
    """Iteration -> {"starts": the starts drawn, in group order, "tasks": task -> {"done": the
    done fraction of its groups' rollouts, "informative": the share of its groups the update
    used}}, from groups.jsonl (none: {})."""
    return by_iteration(path, "groups", _groups) if path.is_file() else {}


def _groups(row: dict) -> dict:
    done: dict[str, list[int]] = {}
    used: dict[str, list[bool]] = {}
    for g in row["groups"]:
        done.setdefault(paired.task(g["start"]), []).extend(g["done"])
        used.setdefault(paired.task(g["start"]), []).append(bool(g["used"]))
    return {"starts": [g["start"] for g in row["groups"]],
            "tasks": {t: {"done": float(np.mean(d)), "informative": float(np.mean(used[t]))}
                      for t, d in sorted(done.items())}}


def unpaired_settings(a: dict | None, b: dict | None) -> list[str]:
    """The PAIRED_SETTINGS on which two runs' recorded settings differ (none when either has none)."""
    if a is None or b is None:
        return []
    return [k for k in PAIRED_SETTINGS if a.get(k) != b.get(k)]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def summary(run: dict) -> dict:
    """What one run did: iterations, updates, informative share, KL, the mean's drift."""
    rows = [run["rows"][i] for i in sorted(run["rows"])]
    updated = [r for r in rows if not r.get("skipped")]
    settings = run["settings"] or {}
    groups = settings.get("groups")
    share = [1 - r["zero_advantage_groups"] for r in rows if r.get("zero_advantage_groups") is not None]
    return {"iterations": len(rows), "updates": len(updated), "shuffle_rewards": settings.get("shuffle_rewards"),
            "done_fraction": _mean(rows, "done_fraction"),
            "informative_share": float(np.mean(share)) if share else None,
            "informative_groups": int(round(sum(share) * groups)) if groups and share else None,
            "approx_kl": _mean(updated, "approx_kl"), "clip_fraction": _mean(updated, "clip_fraction"),
            "mean_drift_b": rows[-1].get("mean_drift_b") if rows else None,
            "resumed_at": [r["at_iteration"] for r in run.get("resumes", [])],
            "changed": {r["at_iteration"]: r["changed"] for r in run.get("resumes", []) if r.get("changed")}}


def pair_runs(a: dict, b: dict, resamples: int = 10_000, measure: str = "done_fraction",
              same_starts_only: bool = False, first: int = 1, last: int | None = None) -> dict:
    """Run b against run a on the iterations both have, from iteration `first` on (up to `last`; with
    `same_starts_only`, only those where groups.jsonl shows both drew the same starts); a
    ValueError names a paired setting they differ in, says they share no such iteration, or that
    some of them are one record (a run forked from the other carries its rows up to the fork).
    The check is the first iteration where both collected with one policy: 0, or a fork's first."""
    first = max(first, 1)
    if differ := unpaired_settings(a["settings"], b["settings"]):
        raise ValueError(", ".join(differ) + ": the runs differ here, so they do not draw the same rollouts "
                         "(pair runs started with the same values)")
    common = sorted(i for i in set(a["rows"]) & set(b["rows"])
                    if a["rows"][i].get(measure) is not None and b["rows"][i].get(measure) is not None)
    shared = [i for i in common if i > 0 and a["rows"][i] == b["rows"][i]]   # a fork's rows before it
    check = shared[-1] + 1 if shared else 0
    start = {k: run["rows"][check].get(measure) if check in run["rows"] else None for k, run in (("a", a), ("b", b))}
    starts = same_starts(a["groups"], b["groups"])
    later = [i for i in common if first <= i <= (last if last is not None else i)
             and (not same_starts_only or i in starts["same"])]
    if not later:
        wanted, seen = f"a {measure}", f"iterations: {sorted(a['rows'])} and {sorted(b['rows'])}"
        if same_starts_only:
            wanted, seen = wanted + " and the same starts", seen + f"; the same starts in {starts['same']}"
        span = f"from {first} on" if last is None else f"in {first}-{last}"
        raise ValueError(f"the runs share no iteration {span} with {wanted} ({seen})")
    if shared := [i for i in shared if i in later]:
        raise ValueError(f"from_iteration: iterations {shared[0]}-{shared[-1]} are the same record in both runs "
                         f"(one was forked from the other); pair from the fork on (--from-iteration {check + 1}: "
                         f"iteration {check}, the fork's first, collected with one policy in both: the check)")
    x = np.array([a["rows"][i][measure] for i in later], np.float64)
    y = np.array([b["rows"][i][measure] for i in later], np.float64)
    half = len(later) // 2
    halves = [(later[:half], x[:half], y[:half]), (later[half:], x[half:], y[half:])] if half else []
    return {"measure": measure, "iterations": [later[0], later[-1]], "n": len(later), "check": check, "start": start,
            **_paired(x, y, resamples),
            "halves": [{"iterations": [its[0], its[-1]], "a_mean": float(xs.mean()), "b_mean": float(ys.mean())}
                       for its, xs, ys in halves],
            "by_task": by_task(a["groups"], b["groups"], resamples, later), "same_starts": starts,
            "same_starts_only": same_starts_only, "first": first, "last": last,
            "a_run": summary(a), "b_run": summary(b)}


def same_starts(a: dict, b: dict) -> dict:
    """Of the iterations both runs logged groups for, those whose starts were the same (the
    pairing holds there): {"checked": n, "same": [iterations]}."""
    both = sorted(set(a) & set(b))
    return {"checked": len(both), "same": [i for i in both if a[i]["starts"] == b[i]["starts"]]}


def _paired(x: np.ndarray, y: np.ndarray, resamples: int) -> dict:
    """y against x, paired by iteration: the means, the sign test, the bootstrapped difference."""
    return {"a_mean": float(x.mean()), "b_mean": float(y.mean()),
            "sign_test": paired.mcnemar(x > y, y > x),  # only_a: iterations a is ahead; only_b: b is
            "bootstrap": paired.bootstrap_difference(x, y, resamples)}


def by_task(a: dict[int, dict], b: dict[int, dict], resamples: int, among: list[int] | None = None) -> dict[str, dict]:
    """Per task, the pairing by iteration of its groups' done fractions (from 1 on, where both
    runs logged their groups, and among `among` if given), and each run's mean informative share
    there; {} without groups.jsonl on both sides."""
    later = sorted(i for i in set(a) & set(b) if i > 0 and (among is None or i in among))
    ta, tb = {i: a[i]["tasks"] for i in later}, {i: b[i]["tasks"] for i in later}
    tasks = sorted({t for i in later for t in ta[i]} & {t for i in later for t in tb[i]}, key=lambda t: (len(t), t))
    out = {}
    for t in tasks:
        its = [i for i in later if t in ta[i] and t in tb[i]]
        x, y = np.array([ta[i][t]["done"] for i in its]), np.array([tb[i][t]["done"] for i in its])
        out[t] = {"n": len(its), **_paired(x, y, resamples),
                  "a_informative": float(np.mean([ta[i][t]["informative"] for i in its])),
                  "b_informative": float(np.mean([tb[i][t]["informative"] for i in its]))}
    return out


def verdict(result: dict) -> str:
    """This pair: 'leads' / 'trails' when the sign test over its iterations says so at 5 %,
    else 'no separation'."""
    test = result["sign_test"]
    if test["p_value"] < 0.05:
        return "leads" if test["only_b"] > test["only_a"] else "trails"
    return "no separation"


def across_pairs(pairs: list[dict]) -> dict | None:
    """The pairs as the unit (each one seed's run and control): their mean differences, how many
    lead, and the exact two-sided sign-flip test of the mean difference over every flip of the
    pairs' signs, with the smallest p that many pairs can give. None for fewer than 2 pairs."""
    if len(pairs) < 2:
        return None
    d = np.array([p["bootstrap"]["difference"] for p in pairs], np.float64)
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = np.abs(flips @ d) / len(d)
    return {"differences": d.tolist(), "difference": float(d.mean()), "ahead": int((d > 0).sum()),
            "behind": int((d < 0).sum()), "p_value": float(np.mean(means >= abs(d.mean()) - 1e-12)),
            "smallest_p": 2 / len(flips)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _interval(boot: dict) -> str:
    return f"{100 * boot['difference']:+.1f} ({100 * boot['ci95'][0]:+.1f} to {100 * boot['ci95'][1]:+.1f})"


def markdown(pairs: list[dict], across: dict | None = None) -> str:
    """One row per pair: the candidate's on-policy imagined success against the baseline's; the
    pairs as the unit; where the starts were the same; per task; what each run did."""
    only = any(p.get("same_starts_only") for p in pairs)
    first = min(p.get("first", 1) for p in pairs)
    lasts = [p.get("last") for p in pairs]
    span = f"from {first} on" if None in lasts else f"from {first} to {max(lasts)}"
    lines = ["Measure: the on-policy imagined success per iteration (done fraction of its groups x N rollouts), "
             f"paired by iteration {span} (the same start states and sampling seeds)"
             + (", only the iterations where groups.jsonl shows both runs drew the same starts" if only else "")
             + "; the check is the first iteration where both runs collected with one policy (0, or a fork's "
             "first), so equal there.", "",
             "| baseline | candidate | iterations | check: iteration, baseline / candidate | baseline | candidate | "
             "difference, points (95 % CI) | iterations ahead (candidate / baseline) | sign test p | halves "
             "(baseline / candidate) | this pair |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        test = p["sign_test"]
        halves = "; ".join(f"{h['iterations'][0]}-{h['iterations'][1]}: {_pct(h['a_mean'])} / {_pct(h['b_mean'])}"
                           for h in p["halves"])
        lines.append(f"| {p['baseline']} | {p['candidate']} | {p['iterations'][0]}-{p['iterations'][1]} ({p['n']}) | "
                     f"{p.get('check', 0)}: {_pct(p['start']['a'])} / {_pct(p['start']['b'])} | "
                     f"{_pct(p['a_mean'])} | {_pct(p['b_mean'])} | "
                     f"{_interval(p['bootstrap'])} | {test['only_b']} / {test['only_a']} | {test['p_value']:.3f} | "
                     f"{halves} | {verdict(p)} |")
    lines += ["", _across_line(across)] + _same_start_lines(pairs) + _task_lines(pairs) + _run_lines(pairs)
    return "\n".join(lines)


def _across_line(across: dict | None) -> str:
    if across is None:
        return ("A pair's verdict is about its two runs' paths; whether true rewards beat no signal needs several "
                "seeds: give the runs and their controls in the same order on both sides, and the pairs become the "
                "unit.")
    return (f"Pairs as the unit ({len(across['differences'])} seeds): mean difference "
            f"{100 * across['difference']:+.1f} points (per pair: "
            f"{', '.join(f'{100 * x:+.1f}' for x in across['differences'])}), candidate ahead in "
            f"{across['ahead']}, behind in {across['behind']}; sign-flip test p = {across['p_value']:.3f} (the "
            f"smallest p {len(across['differences'])} pairs can give: {across['smallest_p']:.3f}).")


def _same_start_lines(pairs: list[dict]) -> list[str]:
    lines = []
    for p in pairs:
        if p["same_starts"]["checked"]:
            same = p["same_starts"]["same"]
            run = same and same == list(range(same[0], same[-1] + 1))
            lines += ["", f"{p['candidate']} against {p['baseline']}: the same starts in {len(same)} of the "
                      f"{p['same_starts']['checked']} iterations both logged (groups.jsonl)"
                      + (f", iterations {same[0]}-{same[-1]}" if run else "") + "."]
    return lines


def _task_lines(pairs: list[dict]) -> list[str]:
    tasks = [(p, t, v) for p in pairs for t, v in p["by_task"].items()]
    if not tasks:
        return []
    lines = ["", "Per task (each iteration's groups of that task; groups.jsonl):", "",
             "| baseline | candidate | task | iterations | baseline | candidate | difference, points (95 % CI) | "
             "iterations ahead (candidate / baseline) | sign test p | informative groups (baseline / "
             "candidate) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p, t, v in tasks:
        test = v["sign_test"]
        lines.append(f"| {p['baseline']} | {p['candidate']} | {t} | {v['n']} | {_pct(v['a_mean'])} | "
                     f"{_pct(v['b_mean'])} | {_interval(v['bootstrap'])} | {test['only_b']} / {test['only_a']} | "
                     f"{test['p_value']:.3f} | {_pct(v['a_informative'])} / {_pct(v['b_informative'])} % |")
    return lines


def _run_lines(pairs: list[dict]) -> list[str]:
    lines = ["", "| run | iterations | updates | shuffled rewards | informative groups (share) | mean approx KL | "
             "mean clip fraction | mean's drift (b) | resumed at (settings changed) |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = {}
    for p in pairs:
        runs.setdefault(p["baseline"], p["a_run"])
        runs.setdefault(p["candidate"], p["b_run"])
    for name, s in runs.items():
        informative = f"{_pct(s['informative_share'])} %" if s["informative_groups"] is None else \
            f"{s['informative_groups']} ({_pct(s['informative_share'])} %)"
        kl = "-" if s["approx_kl"] is None else f"{s['approx_kl']:.4f}"
        clip = "-" if s["clip_fraction"] is None else f"{s['clip_fraction']:.2f}"
        drift = "-" if s["mean_drift_b"] is None else f"{s['mean_drift_b']:.3f}"
        shuffled = {None: "not recorded", True: "yes", False: "no"}[s["shuffle_rewards"]]
        resumed = ", ".join(f"{i}" + (f" ({', '.join(f'{k} {a} -> {b}' for k, (a, b) in s['changed'][i].items())})"
                                      if i in s["changed"] else "") for i in s["resumed_at"]) or "-"
        lines.append(f"| {name} | {s['iterations']} | {s['updates']} | {shuffled} | {informative} | {kl} | "
                     f"{clip} | {drift} | {resumed} |")
    return lines
