"""The reflector against LIBERO's own success labels, on real and on imagined videos.

Per judged video (an episode up to chunk boundary c, as the rollout worker judges it): the
verdict p > eta against LIBERO's success in that frame's state - accuracy, precision, recall
and the false-positive rate. Per episode: the verdict "done" at any step (the episode would
have stopped there) against LIBERO's outcome, the false-positive rate (a failure judged done:
the reward-hacking case), and for successes the error of the first done step against LIBERO's.
Imagined videos: the world model replays a real episode's actions from its start, and the
reflector's verdict on that video is held against LIBERO's label of the real episode.
"""
from __future__ import annotations

import numpy as np

from worldenv.data.chunks import ChunkedEpisode, memory_bank
from worldenv.models.roles import Reflector, StartStates, WorldModel


def _rates(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    tp, fp = int((pred & label).sum()), int((pred & ~label).sum())
    fn, tn = int((~pred & label).sum()), int((~pred & ~label).sum())
    return {"n": len(pred), "positives": int(label.sum()), "accuracy": (tp + tn) / max(len(pred), 1),
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "false_positive_rate": fp / max(fp + tn, 1)}


def judge_videos(reflector: Reflector, videos: list[np.ndarray], instructions: list[str]) -> list[np.ndarray]:
    """p_done after each frame but the first, per video (T, H, W, 3) -> (T-1,), incrementally."""
    out = [np.zeros(len(v) - 1, np.float32) for v in videos]
    states = reflector.start(np.stack([v[0] for v in videos]), instructions)
    for t in range(1, max(len(v) for v in videos)):
        rows = [i for i, v in enumerate(videos) if t < len(v)]
        p, stepped = reflector.observe([states[i] for i in rows], np.stack([videos[i][t] for i in rows]))
        for j, i in enumerate(rows):
            states[i], out[i][t - 1] = stepped[j], p[j]
    return out


def verdicts(p_done: list[np.ndarray], labels: list[np.ndarray], outcomes: list[bool], eta: float) -> dict:
    """Frame- and episode-level scores; labels[i] (T-1,) LIBERO's success after each chunk."""
    frame = _rates(np.concatenate(p_done) > eta, np.concatenate(labels).astype(bool))
    judged_done = np.array([bool((p > eta).any()) for p in p_done])
    episode = _rates(judged_done, np.asarray(outcomes, bool))
    errors = [int(np.argmax(p > eta)) - int(np.argmax(lab)) for p, lab, ok, d in zip(p_done, labels, outcomes, judged_done)
              if ok and d and lab.any()]
    episode["termination_error_chunks"] = {"mean_abs": float(np.mean(np.abs(errors))) if errors else float("nan"),
                                           "mean": float(np.mean(errors)) if errors else float("nan"), "n": len(errors)}
    return {"eta": eta, "frames": frame, "episodes": episode}


def on_real(reflector: Reflector, episodes: list[ChunkedEpisode], eta: float = 0.5) -> dict:
    """The reflector on the real videos of `episodes`."""
    p = judge_videos(reflector, [e.frames for e in episodes], [e.instruction for e in episodes])
    return verdicts(p, [e.success[1:] for e in episodes], [e.succeeded for e in episodes], eta)


def _chunk_actions(e: ChunkedEpisode, c: int) -> np.ndarray:
    """Chunk c's (K, A) actions; a short last chunk (the episode succeeded mid-chunk) is
    completed with its last executed action, as a policy's whole chunk would be stepped."""
    actions, n = e.actions[c].copy(), int(e.lengths[c])
    actions[n:] = actions[n - 1]
    return actions


def imagine(world_model: WorldModel, episodes: list[ChunkedEpisode]) -> list[np.ndarray]:
    """Each episode's real actions replayed open-loop through the world model from its start:
    (1 + chunks, H, W, 3) videos, the real first frame then the predictions."""
    return [frames for frames, _ in replay(world_model, episodes)]


def first_observations(world_model: WorldModel, episodes: list[ChunkedEpisode]) -> StartStates:
    """The episodes' real first observations as start states, the first frame repeated over the
    world model's history."""
    history = int(world_model.spec.extra.get("history", 1))
    return StartStates(np.stack([memory_bank(e, 0, history) for e in episodes]),
                       np.stack([e.proprio[0] for e in episodes]), [e.instruction for e in episodes])


def replay(world_model: WorldModel, episodes: list[ChunkedEpisode]) -> list[tuple[np.ndarray, np.ndarray]]:
    """As `imagine`, with the predicted proprio: per episode (frames (1 + C, H, W, 3) uint8,
    proprio (1 + C, P) float32), the real first observation then the predictions."""
    states = world_model.start(first_observations(world_model, episodes))
    videos, proprio = [[e.frames[0]] for e in episodes], [[e.proprio[0]] for e in episodes]
    for c in range(max(e.chunks for e in episodes)):
        rows = [i for i, e in enumerate(episodes) if c < e.chunks]
        prediction, stepped = world_model.step([states[i] for i in rows], np.stack([_chunk_actions(episodes[i], c) for i in rows]))
        for j, i in enumerate(rows):
            states[i] = stepped[j]
            videos[i].append(prediction.frames[j])
            proprio[i].append(prediction.proprio[j])
    return [(np.stack(v), np.stack(p).astype(np.float32)) for v, p in zip(videos, proprio)]


def on_imagined(reflector: Reflector, world_model: WorldModel, episodes: list[ChunkedEpisode], eta: float = 0.5) -> dict:
    """The reflector on imagined replays, scored against the real episodes' LIBERO labels."""
    videos = imagine(world_model, episodes)
    p = judge_videos(reflector, videos, [e.instruction for e in episodes])
    return verdicts(p, [e.success[1:] for e in episodes], [e.succeeded for e in episodes], eta)
