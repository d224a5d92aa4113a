"""Short imagination with a learned value at the cut (as VLA-MBPO and iVideoGPT do).

Long imagined horizons drift away from what LIBERO would do; RL can instead imagine a few
chunks from real start states and, where an episode reaches its horizon without the reflector
calling it done, score it by a value model: P(the episode ends in success | the video so far,
the instruction), a reflector-arch checkpoint trained on the policy's own real episodes with
every frame labelled by the episode's outcome (`worldenv train reflector --target outcome`).
A terminated episode keeps its reward, p(done) at termination; LOOP's advantages are then
computed as before.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from worldenv.data.episodes import ImaginedEpisode


def cut_rewards(rewards: np.ndarray, truncated: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per episode: the value at the cut where it was truncated, else its own reward (p(done))."""
    return np.where(truncated, values, rewards).astype(np.float32)


def judge(value_model, episodes: list[ImaginedEpisode]) -> np.ndarray:
    """(len(episodes),) P(success) of each whole imagined video under its instruction; videos of
    one length are judged as one batch."""
    out = np.zeros(len(episodes), np.float32)
    by_length: dict[int, list[int]] = {}
    for i, e in enumerate(episodes):
        by_length.setdefault(len(e.frames), []).append(i)
    for idx in by_length.values():
        videos = np.stack([episodes[i].frames for i in idx])                      # (b, T+1, H, W, 3)
        out[idx] = value_model.judge(videos, [episodes[i].instruction for i in idx])
    return out


def bootstrap(value_model, episodes: list[ImaginedEpisode]) -> list[ImaginedEpisode]:
    """The episodes with the value at the cut as the reward of those that reached their horizon
    (the p(done) they had is kept in extra["p_done_at_cut"]); failed and done ones unchanged."""
    cut = [i for i, e in enumerate(episodes) if e.status == "horizon" and len(e.frames)]
    if not cut:
        return list(episodes)
    values = judge(value_model, [episodes[i] for i in cut])
    out = list(episodes)
    for i, v in zip(cut, values):
        e = episodes[i]
        out[i] = dataclasses.replace(e, reward=float(v), extra={**e.extra, "p_done_at_cut": e.reward, "value": float(v)})
    return out
