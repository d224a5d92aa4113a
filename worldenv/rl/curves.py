"""The trainer's curves as one PNG: the metrics.jsonl rows, a panel per quantity."""
from __future__ import annotations

import pathlib

PANELS = (("reward_mean", "reward (p(done) at termination)"), ("zero_advantage_groups", "groups with zero advantage"),
          ("clip_fraction", "clip fraction"), ("approx_kl", "approximate KL"), ("episode_length", "episode length (chunks)"),
          ("imagined_steps_per_s", "imagined steps/s"), ("first_act_ms", "first Act latency, median (ms)"),
          ("stale_episodes", "stale episodes dropped"), ("mean_drift_b", "mean action's drift from the start (b)"),
          ("step_cosine", "cosine of successive mean steps"))


def plot(rows: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 5, figsize=(17, 6))
    x = [r["iteration"] for r in rows]
    for ax, (key, title) in zip(axes.flat, PANELS):
        y = [r.get(key, float("nan")) for r in rows]     # an iteration that skipped its update has no PPO stats
        ax.plot(x, y, "-o", ms=3)
        if key == "reward_mean":
            std = [r.get("reward_std", 0.0) for r in rows]
            ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)], alpha=0.2)
        ax.set(title=title, xlabel="iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
