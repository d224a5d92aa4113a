"""Where RL moves the policy's mean action, iteration by iteration.

On a fixed probe of start states (up to `PROBE` bank entries, evenly spaced), the policy's mean
action chunk is taken at the start of the run and after every update. Distances are in units of
the policy's Laplace scale at the start (b, per dimension), averaged over every action of the
probe, so they read as "how many exploration widths did the mean move":

- `mean_step_b`: this iteration's move;
- `mean_drift_b`: the distance from the start;
- `step_cosine`: the cosine between this move and the previous one (near 0: the updates do not
  agree on a direction; near 1: they keep pushing the same way);
- `straightness`: the distance from the start over the length of the path walked (1 for a
  straight line; about 1/sqrt(t) after t steps of a random walk).

An update that adds up like a random walk is steered by noise, whatever its clip fraction says;
these read that off the run itself, with no imagined episode and no real step.
"""
from __future__ import annotations

import numpy as np

from worldenv.data.start_bank import StartBank
from worldenv.models.roles import Observations

PROBE = 64


class MeanPath:
    def __init__(self, bank: StartBank, probe: int = PROBE):
        idx = np.unique(np.linspace(0, len(bank) - 1, min(probe, len(bank))).round().astype(np.int64))
        self.obs = Observations(bank.frames[idx], bank.proprio[idx], [bank.instructions[i] for i in idx])
        self.start: np.ndarray | None = None     # (B, K, A) mean at the start, in units of b
        self.last: np.ndarray | None = None
        self.last_step: np.ndarray | None = None
        self.scale: np.ndarray | None = None     # (B, K, A) the start's Laplace scale
        self.path = 0.0                          # L2 length walked, summed over iterations

    def _mean(self, policy) -> np.ndarray:
        chunks = policy.act(self.obs, deterministic=True)
        if self.scale is None:
            self.scale = np.maximum(chunks.scale.astype(np.float64), 1e-12)
        return chunks.loc.astype(np.float64) / self.scale

    def begin(self, policy) -> None:
        """The start of the path: the policy before the first update this path sees."""
        self.start = self.last = self._mean(policy)

    def see(self, policy) -> dict[str, float]:
        """The metrics after an update (see the module doc); `begin` (or a loaded state) first."""
        now = self._mean(policy)
        step, drift = now - self.last, now - self.start
        norm = float(np.linalg.norm(step))
        self.path += norm
        row = {"mean_step_b": float(np.abs(step).mean()), "mean_drift_b": float(np.abs(drift).mean()),
               "straightness": float(np.linalg.norm(drift) / self.path) if self.path > 0 else 1.0}
        if self.last_step is not None:
            denom = norm * float(np.linalg.norm(self.last_step))
            row["step_cosine"] = float((step * self.last_step).sum() / denom) if denom > 0 else 0.0
        self.last, self.last_step = now, step
        return row

    def state_dict(self) -> dict:
        return {"start": self.start, "last": self.last, "last_step": self.last_step, "scale": self.scale,
                "path": self.path}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run continues the same path (a state from before these metrics: a new one)."""
        if state.get("start") is None or state["start"].shape[0] != len(self.obs):
            return
        self.start, self.last, self.last_step = state["start"], state["last"], state["last_step"]
        self.scale, self.path = state["scale"], float(state["path"])
