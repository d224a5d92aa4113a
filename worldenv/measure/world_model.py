"""The world model against held-out real episodes, open-loop, beside copy-last-frame.

From every chunk boundary c0 of every episode (to a few chunks ahead, and from the first one
to the episode's end), the model starts from the real memory bank (the real frames up to c0)
and is fed the episode's real actions; its own predictions then fill its memory. The prediction h chunks ahead is compared with the real frame at c0 + h, on
the whole frame and on the moving pixels (those that change between the real frames c0+h-1
and c0+h; most of a 64 px frame is static background, which flatters the copy baseline).
Only full chunks are stepped (a short last chunk is not a step the served model takes).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from worldenv.data.chunks import ChunkedEpisode, full_chunks, memory_bank
from worldenv.measure import images
from worldenv.models.roles import StartStates, WorldModel

METRICS = ("psnr", "psnr_moving", "ssim", "ssim_moving")


@dataclasses.dataclass
class Drift:
    """Per (start, horizon) errors of the model and of copy-last-frame."""

    horizon: list[int] = dataclasses.field(default_factory=list)
    from_start: list[bool] = dataclasses.field(default_factory=list)    # c0 == 0: the whole-episode rollout
    model: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {m: [] for m in METRICS})
    copy: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {m: [] for m in METRICS})

    def add(self, h: int, first: bool, pred: np.ndarray, copy: np.ndarray, real: np.ndarray, previous: np.ndarray):
        mask = images.moving_mask(previous, real)
        for name, guess in (("model", pred), ("copy", copy)):
            out = getattr(self, name)
            out["psnr"] += images.psnr(guess, real).tolist()
            out["psnr_moving"] += images.psnr(guess, real, mask).tolist()
            similarity = images.ssim_map(guess, real)                                  # (b, H, W), once
            out["ssim"] += images.masked_mean(similarity, None).tolist()
            out["ssim_moving"] += images.masked_mean(similarity, mask).tolist()
        self.horizon += [h] * len(real)
        self.from_start += [first] * len(real)

    def curve(self, who: str, metric: str, whole_episode: bool = False) -> dict[int, float]:
        """Mean metric per horizon (over every start, or over the episode-start rollouts only)."""
        h, v = np.asarray(self.horizon), np.asarray(getattr(self, who)[metric])
        keep = np.asarray(self.from_start) if whole_episode else np.ones(len(h), bool)
        return {int(k): float(np.nanmean(v[keep & (h == k)])) for k in sorted(set(h[keep].tolist()))}

    def summary(self, horizons=(1, 5)) -> dict:
        """{who: {metric: {"h1": .., "h5": .., "episode": ..}}}; episode = the mean over the
        whole open-loop rollouts from each episode's first chunk."""
        out = {}
        for who in ("model", "copy"):
            out[who] = {}
            for metric in METRICS:
                curve, v = self.curve(who, metric), np.asarray(getattr(self, who)[metric])
                row = {f"h{h}": curve.get(h, float("nan")) for h in horizons}
                row["episode"] = float(np.nanmean(v[np.asarray(self.from_start)]))
                out[who][metric] = row
        return out


def smallest_margin(model: dict, copy: dict) -> tuple:
    """(horizon, gap) where the model's curve {horizon: value} is least above copy's."""
    return min(((h, model[h] - copy[h]) for h in model), key=lambda x: x[1])


def measure(model: WorldModel, episodes: list[ChunkedEpisode], horizon: int = 5, batch: int = 64) -> Drift:
    """Open-loop rollouts: from each episode's first chunk boundary to its end (the whole-episode
    drift), and from every later boundary `horizon` chunks ahead; see the module docstring."""
    history = int(model.spec.extra.get("history", 1))
    starts = [(e, c0) for e in episodes for c0 in range(full_chunks(e))]
    drift = Drift()
    for i in range(0, len(starts), batch):
        _rollout(model, starts[i:i + batch], history, horizon, drift)
    return drift


def _rollout(model: WorldModel, starts, history: int, horizon: int, drift: Drift) -> None:
    frames = np.stack([memory_bank(e, c0, history) for e, c0 in starts])                    # (B, T, H, W, 3)
    states = model.start(StartStates(frames, np.stack([e.proprio[c0] for e, c0 in starts]),
                                     [e.instruction for e, _ in starts]))
    active = list(range(len(starts)))
    for h in range(1, 1000):
        active = [i for i in active if starts[i][1] + h - 1 < full_chunks(starts[i][0])
                  and (starts[i][1] == 0 or h <= horizon)]
        if not active:
            break
        actions = np.stack([starts[i][0].actions[starts[i][1] + h - 1] for i in active])   # (b, K, A)
        prediction, stepped = model.step([states[i] for i in active], actions)
        for i, s in zip(active, stepped):
            states[i] = s
        real = np.stack([starts[i][0].frames[starts[i][1] + h] for i in active])
        previous = np.stack([starts[i][0].frames[starts[i][1] + h - 1] for i in active])
        copy = np.stack([starts[i][0].frames[starts[i][1]] for i in active])
        first = [starts[i][1] == 0 for i in active]
        for flag in (True, False):
            rows = [j for j, f in enumerate(first) if f == flag]
            if rows:
                drift.add(h, flag, prediction.frames[rows], copy[rows], real[rows], previous[rows])


