"""Two policies evaluated on the same init states: is the difference in success real?

McNemar's exact test looks only at the discordant pairs (one policy succeeded, the other
failed); the paired bootstrap resamples init states and gives an interval on the difference.
Several runs a side (training seeds) are compared with the runs as the unit: a permutation test
of their success rates, and how many runs a side a gain of a given size would need."""
from __future__ import annotations

import itertools
import math

import numpy as np


def pairs(a: dict[str, bool], b: dict[str, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of the episodes both runs have (by id, e.g. suite/task/init), in id order."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two evaluations share no episode ids")
    return np.array([a[i] for i in common], bool), np.array([b[i] for i in common], bool)


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact two-sided McNemar test of paired outcomes a, b (bool, same order).

    only_a = a succeeded where b failed, only_b the reverse; under the null each discordant
    pair goes either way with probability 1/2."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": min(1.0, 2 * tail)}


def by_task(a: dict[str, bool], b: dict[str, bool]) -> dict[str, dict]:
    """McNemar per task of the episodes both runs have (ids suite/task/...), in task order: a change
    that is one-sided on one task and hidden in the total (one task lost while another gained)."""
    a_pairs, b_pairs = pairs(a, b)                                   # in sorted id order
    tasks = np.array([task(i) for i in sorted(set(a) & set(b))])
    out = {}
    for t in sorted(set(tasks), key=lambda t: (len(t), t)):           # "2" before "10"
        at, bt = a_pairs[tasks == t], b_pairs[tasks == t]
        out[t] = mcnemar(at, bt) | {"n": len(at), "a": int(at.sum()), "b": int(bt.sum())}
    return out


def task(episode_id: str) -> str:
    """The task of a start or episode id (suite/task/...); "" for an id without one."""
    return episode_id.split("/")[1] if "/" in episode_id else ""


def bootstrap_difference(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """Success rate of b minus a, with a 95 % percentile interval from resampling pairs."""
    rng = np.random.default_rng(seed)
    diff = b.astype(np.float64) - a.astype(np.float64)
    draws = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"difference": float(diff.mean()), "ci95": [float(lo), float(hi)], "resamples": resamples}


MAX_SPLITS = 20_000   # a permutation test lists every split up to this many, else draws this many
Z_975, Z_80 = 1.959964, 0.841621   # standard normal quantiles: two-sided 5 %, power 80 %


def permutation_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Runs as the unit (each a success rate, e.g. one training seed's): the exact two-sided
    permutation test of mean(b) - mean(a) over every way to split the pooled runs into sides of
    these sizes. Its smallest possible p is 2 / C(n_a + n_b, n_a) when the sides are equal in size
    (0.1 with 3 runs a side), which says how many runs a side a conclusion needs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    pooled, k = np.concatenate([a, b]), len(b)
    observed = b.mean() - a.mean()
    if math.comb(len(pooled), k) <= MAX_SPLITS:
        splits = [np.fromiter(c, int, k) for c in itertools.combinations(range(len(pooled)), k)]
    else:   # too many to list: random splits (a Monte Carlo permutation test)
        rng = np.random.default_rng(0)
        splits = [rng.choice(len(pooled), k, replace=False) for _ in range(MAX_SPLITS)]
    diffs = np.array([pooled[s].mean() - np.delete(pooled, s).mean() for s in splits])
    return {"difference": float(observed), "p_value": float(np.mean(np.abs(diffs) >= abs(observed) - 1e-12)),
            "smallest_p": float(np.mean(np.abs(diffs) >= np.abs(diffs).max() - 1e-12)), "splits": len(splits)}


def runs_needed(sd: float, gain: float) -> int:
    """Runs a side for a two-sided test at 5 % to find a true `gain` with 80 % power when runs
    differ with standard deviation `sd` (normal approximation, at least 2)."""
    if gain <= 0:
        raise ValueError(f"gain: expected > 0, got {gain}")
    return max(2, math.ceil(2 * (Z_975 + Z_80) ** 2 * sd ** 2 / gain ** 2))
