"""A done verdict that also asks the imagined arm: did the gripper close on something?

Why: the reflector reads imagined frames alone, and late in an imagined episode those frames are
a blur near the basket, where a carried object and an empty gripper look alike; replays of
failed real episodes are then called done (`worldenv align`'s false successes). The imagined
proprio keeps what the frames lose: a parallel gripper commanded closed stops at the object's
width when it holds one and closes to about 1-2 mm when it does not, and the world model's
learned arm dynamics follows that (replaying the real actions of failed grasps, its finger gap
stays below 2 cm where a held object keeps it at 3.6-6.3 cm; `reports/learning-signal.md`).

The gate: a verdict p(done) > eta counts only once the gripper's last closed run held at least
`min_width` metres between the fingers (the median over the run's chunks after its first, which
is still closing). An episode that never closed its gripper is never done. Proprio layout and
action convention are LIBERO's (robosuite Panda): the finger joints are the last two proprio
entries, their gap is q[-2] - q[-1]; the last action dimension is the gripper, > 0 closes.
"""
from __future__ import annotations

import numpy as np


PANDA = {"proprio_dim": 8, "action_dim": 7}   # LIBERO's: the finger joints last in proprio, the gripper last in actions


def check_layout(spec) -> None:
    """Refuse a world model whose proprio and actions are not LIBERO's Panda layout (a `roles.Spec`;
    0 = not told, taken as LIBERO's): the gate would read other numbers as the fingers."""
    found = {key: getattr(spec, key) for key in PANDA}
    if any(found[key] and found[key] != want for key, want in PANDA.items()):
        raise ValueError(f"grasp gate: it reads LIBERO's Panda layout (proprio {PANDA['proprio_dim']} with the two "
                         f"finger joints last, actions {PANDA['action_dim']} with the gripper last); the world model "
                         f"{spec.name!r} has proprio {found['proprio_dim']} and actions {found['action_dim']}")


def finger_gap(proprio: np.ndarray) -> np.ndarray:
    """(..., P) proprio, gripper qpos last two -> (...,) gap between the fingers, metres."""
    proprio = np.asarray(proprio, np.float32)
    return proprio[..., -2] - proprio[..., -1]


class GraspGate:
    """One episode's gripper history, fed chunk by chunk: `update(command, gap)` with the chunk's
    last gripper command and the imagined gap after it; `holds()` says whether a verdict counts."""

    def __init__(self, min_width: float):
        if not min_width > 0:
            raise ValueError(f"grasp gate: min_width must be > 0 metres, got {min_width}")
        self.min_width = float(min_width)
        self.run: list[float] = []      # gaps after each chunk of the last closed run
        self.closed = False             # was the last chunk commanded closed?

    def update(self, command: float, gap: float) -> None:
        if command > 0:
            if not self.closed:
                self.run = []
            self.run.append(float(gap))
        self.closed = command > 0

    def holds(self) -> bool:
        if not self.run:
            return False
        settled = self.run[1:] or self.run
        return float(np.median(settled)) >= self.min_width


class Verdict:
    """One episode's done rule, fed chunk by chunk: `update(p_done, command, gap)` says whether the
    episode ends done there: p_done > eta at `confirm` chunks in a row and, with `min_width` > 0,
    the grasp gate holding after this chunk."""

    def __init__(self, eta: float, min_width: float = 0.0, confirm: int = 1):
        if confirm < 1:
            raise ValueError(f"confirm: must be >= 1, got {confirm}")
        self.eta, self.confirm, self.streak = float(eta), int(confirm), 0
        self.gate = GraspGate(min_width) if min_width > 0 else None

    def update(self, p_done: float, command: float, gap: float) -> bool:
        if self.gate is not None:
            self.gate.update(command, gap)
        self.streak = self.streak + 1 if p_done > self.eta else 0
        return self.streak >= self.confirm and (self.gate is None or self.gate.holds())


def first_done(p_done: np.ndarray, commands: np.ndarray, gaps: np.ndarray, eta: float,
               min_width: float = 0.0, confirm: int = 1) -> int | None:
    """The chunk index at which an episode ends done (`Verdict`): the first t with p_done > eta at
    `confirm` chunks in a row up to t (and, with `min_width` > 0, the gate holding after chunk t).
    p_done (T,), commands (T,) the chunks' last gripper commands, gaps (T,) the finger gap after
    each chunk; None if never done."""
    verdict = Verdict(eta, min_width, confirm)
    for t, p in enumerate(np.asarray(p_done, np.float64)):
        if verdict.update(float(p), float(commands[t]), float(gaps[t])):
            return t
    return None


HELD = 0.01   # metres: a real closed run whose fingers settle this far apart holds something (empty: 1-8 mm)
WIDTHS = tuple(round(0.005 + 0.0025 * i, 4) for i in range(15))   # 0.5-4.0 cm, the calibration's grid


def closed_runs(commands: np.ndarray) -> list[slice]:
    """Each run of chunks commanded closed, as the slice of its settled gaps in a (chunks,) array
    of the gap after each chunk (the run's first chunk dropped, unless it is the only one)."""
    runs, c, n = [], 0, len(commands)
    while c < n:
        if commands[c] > 0:
            start = c
            while c + 1 < n and commands[c + 1] > 0:
                c += 1
            runs.append(slice(start + 1, c + 1) if c > start else slice(start, c + 1))
        c += 1
    return runs


def balanced_accuracy(said: np.ndarray, truth: np.ndarray) -> float:
    """The mean of the true-positive and true-negative rates of verdicts `said` against `truth`
    (bool arrays); nan where one class is absent."""
    said, truth = np.asarray(said, bool), np.asarray(truth, bool)
    tpr = float(said[truth].mean()) if truth.any() else float("nan")
    tnr = float((~said[~truth]).mean()) if (~truth).any() else float("nan")
    return (tpr + tnr) / 2


def calibrate(commands: list[np.ndarray], real_gaps: list[np.ndarray], imagined_gaps: list[np.ndarray]) -> dict:
    """The gate's width from replays of real episodes, without their outcomes: every closed run's
    real median gap says whether it held something (>= HELD), its imagined median predicts that,
    and the width on the grid with the best balanced accuracy (ties: the smallest) is chosen.
    Per episode: the chunks' commands, and the gap after each chunk in LIBERO and in the replay."""
    real, imagined = [], []
    for cmd, r, i in zip(commands, real_gaps, imagined_gaps):
        for run in closed_runs(np.asarray(cmd)):
            real.append(float(np.median(r[run])))
            imagined.append(float(np.median(i[run])))
    if not real:
        return {"runs": 0, "held": 0, "width": None, "balanced_accuracy": None, "by_width": {},
                "imagined_gap_held": [], "imagined_gap_empty": []}
    held = np.array(real) >= HELD
    imagined_arr = np.array(imagined)
    scores = {}
    for width in WIDTHS:
        scores[width] = balanced_accuracy(imagined_arr >= width, held)
    best = max(WIDTHS, key=lambda w: (np.nan_to_num(scores[w], nan=-1.0), -w))
    return {"runs": len(real), "held": int(held.sum()), "width": best, "balanced_accuracy": scores[best],
            "by_width": {str(w): s for w, s in scores.items()},
            "imagined_gap_held": [round(float(x), 4) for x in sorted(imagined_arr[held])],
            "imagined_gap_empty": [round(float(x), 4) for x in sorted(imagined_arr[~held])]}
