"""Alignment: does the learned simulator decide an episode's outcome as LIBERO does?

For one policy and held-out real start states (sampled init states no training used), the
policy runs from the same first frame twice: in the real simulator (LIBERO's success decides)
and in imagination (the world model plays its actions, the reflector decides). Per task and
overall:

    agreement            imagined outcome == real outcome
    imagined recall      imagined done | real success    (a missed success is reward RL never sees)
    imagined FPR         imagined done | real failure    (the reward-hacking case)

and the same three for the reflector on world-model replays of the real actions (open loop,
so the policy's reaction to imagined frames is taken out) and on the real videos themselves.
Reading the three side by side says which link loses the outcome: the reflector (real videos),
the world model's frames (replays), or the closed loop (the policy acting on imagined frames).
"""
from __future__ import annotations

import numpy as np

from worldenv.data.chunks import ChunkedEpisode
from worldenv.data.start_bank import StartBank
from worldenv.measure import imagined, reflector as reflector_measure
from worldenv.models.roles import Policy, Reflector, WorldModel


def outcome_rates(real: np.ndarray, judged: np.ndarray) -> dict:
    """Real outcomes (N,) bool against judged ones (N,) bool -> agreement, recall, false-positive
    rate (None where undefined: no real successes, or no real failures) and the counts."""
    real, judged = np.asarray(real, bool), np.asarray(judged, bool)
    successes, failures = int(real.sum()), int((~real).sum())
    return {"n": len(real), "real_successes": successes, "judged_successes": int(judged.sum()),
            "agreement": float((real == judged).mean()) if len(real) else None,
            "recall": float((judged & real).sum() / successes) if successes else None,
            "false_positive_rate": float((judged & ~real).sum() / failures) if failures else None,
            "false_positives": int((judged & ~real).sum()), "missed": int((~judged & real).sum())}


def by_task(tasks: list[int], real: np.ndarray, judged: np.ndarray) -> dict:
    """outcome_rates overall and per task."""
    tasks_ = np.asarray(tasks)
    return {"overall": outcome_rates(real, judged),
            "tasks": {int(t): outcome_rates(np.asarray(real)[tasks_ == t], np.asarray(judged)[tasks_ == t])
                      for t in sorted(set(tasks))}}


def task_of(episode: ChunkedEpisode) -> int:
    """The task index in an episode id (suite/task/init/policy)."""
    return int(episode.id.split("/")[1])


def first_frames(episodes: list[ChunkedEpisode]) -> StartBank:
    """The real first observation of each episode as a start bank (imagination starts there)."""
    return StartBank(frames=np.stack([e.frames[0] for e in episodes]), proprio=np.stack([e.proprio[0] for e in episodes]),
                     instructions=[e.instruction for e in episodes], ids=[e.id for e in episodes],
                     meta={"source": "alignment: first frames of the real episodes"})


def measure(policy: Policy, world_model: WorldModel, reflector: Reflector, episodes: list[ChunkedEpisode],
            horizon: int, eta: float = 0.5, deterministic: bool = True) -> dict:
    """Closed-loop imagination, world-model replays and real videos against the real outcomes."""
    tasks, real = [task_of(e) for e in episodes], np.array([e.succeeded for e in episodes])
    closed = imagined.rollouts(policy, world_model, reflector, first_frames(episodes), horizon, eta, deterministic)
    replays = reflector_measure.imagine(world_model, episodes)
    texts = [e.instruction for e in episodes]
    replay_done = [bool((p > eta).any()) for p in reflector_measure.judge_videos(reflector, replays, texts)]
    real_done = [bool((p > eta).any()) for p in reflector_measure.judge_videos(reflector, [e.frames for e in episodes], texts)]
    return {"eta": eta, "horizon": horizon, "deterministic": deterministic, "episodes": len(episodes),
            "closed_loop": by_task(tasks, real, np.array([r["done"] for r in closed])),
            "replay": by_task(tasks, real, np.array(replay_done)),
            "real_video": by_task(tasks, real, np.array(real_done)),
            "per_episode": [{"id": e.id, "task": t, "real": bool(r), "imagined": bool(c["done"]), "replay": bool(p),
                             "real_video": bool(v), "imagined_chunks": c["chunks"], "real_chunks": int(e.chunks)}
                            for e, t, r, c, p, v in zip(episodes, tasks, real, closed, replay_done, real_done)]}


def pct(x: float | None) -> str:
    """A rate as a whole percentage; n/a where it is undefined."""
    return "n/a" if x is None else f"{100 * x:.0f} %"


def markdown(result: dict) -> list[str]:
    """A table: per link (closed loop, replay, real video) and task, the three rates and counts."""
    lines = ["| judged by | task | n | real successes | agreement | recall | false-positive rate |",
             "|---|---|---|---|---|---|---|"]
    names = {"closed_loop": "imagination, closed loop", "replay": "reflector on world-model replays",
             "real_video": "reflector on real videos"}
    for key, name in names.items():
        rows = [(str(t), r) for t, r in result[key]["tasks"].items()] + [("**all**", result[key]["overall"])]
        for task, r in rows:
            lines.append(f"| {name} | {task} | {r['n']} | {r['real_successes']} | {pct(r['agreement'])} | "
                         f"{pct(r['recall'])} | {pct(r['false_positive_rate'])} |")
    return lines
