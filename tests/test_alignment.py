"""Alignment of imagination with LIBERO: the rates on hand-made outcomes, and the whole measure
(closed loop, replays, real videos) over tiny real models on toy episodes."""
from __future__ import annotations

import numpy as np
import pytest

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.measure import alignment


def test_rates_on_hand_made_outcomes():
    real = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    judged = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)     # one missed success, one false positive
    r = alignment.outcome_rates(real, judged)
    assert r["agreement"] == pytest.approx(0.8) and r["recall"] == pytest.approx(0.75)
    assert r["false_positive_rate"] == pytest.approx(1 / 6)
    assert (r["false_positives"], r["missed"], r["real_successes"], r["judged_successes"]) == (1, 1, 4, 4)
    none_real = alignment.outcome_rates(np.zeros(3, bool), np.array([0, 1, 0], bool))
    assert none_real["recall"] is None and none_real["false_positive_rate"] == pytest.approx(1 / 3)


def test_per_task_rates_split_by_task():
    out = alignment.by_task([0, 0, 1, 1], np.array([1, 0, 1, 0], bool), np.array([1, 0, 0, 0], bool))
    assert out["tasks"][0]["agreement"] == 1.0 and out["tasks"][1]["agreement"] == 0.5
    assert out["tasks"][1]["recall"] == 0.0 and out["overall"]["agreement"] == 0.75


def test_measure_runs_every_link_on_tiny_models(tmp_path):
    episodes = chunks.load([toy_episodes.write(tmp_path, successes=2, failures=2)])
    policy = models.build("policy", image_size=32, instruction_encoder="hashed", width=16)
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    reflector = models.build("reflector", image_size=32, width=16)
    result = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5)
    assert result["episodes"] == 4
    for key in ("closed_loop", "replay", "real_video"):
        overall = result[key]["overall"]
        assert overall["n"] == 4 and overall["real_successes"] == 2 and 0 <= overall["agreement"] <= 1
    rows = result["per_episode"]
    assert [r["real"] for r in rows] == [e.succeeded for e in episodes]
    assert all(1 <= r["imagined_chunks"] <= 3 for r in rows)
    gap = result["action_gap"]
    assert gap["n"] == sum(e.chunks - 1 for e in episodes) and gap["imagined"] >= 0
    table = alignment.markdown(result)
    assert "reflector on world-model replays" in table[4] and "| **all** |" in table[-1]


def test_action_gap_is_zero_on_the_real_observations_and_splits_frame_from_proprio(tmp_path):
    """A replay equal to the real observations leaves the policy acting the same (0); imagined
    frames alone move only the frame column, imagined proprio alone only the proprio one."""
    episodes = chunks.load([toy_episodes.write(tmp_path, successes=2, failures=2)])
    policy = models.build("policy", image_size=32, instruction_encoder="hashed", width=16)
    same = [(e.frames, e.proprio) for e in episodes]
    exact = alignment.action_gap(policy, episodes, same)
    assert exact["imagined"] == exact["frame_only"] == exact["proprio_only"] == 0.0
    rng = np.random.default_rng(0)
    noisy_frames = [(rng.integers(0, 256, e.frames.shape, dtype=np.uint8), e.proprio) for e in episodes]
    frames_off = alignment.action_gap(policy, episodes, noisy_frames)
    assert frames_off["frame_only"] > 0.05 and frames_off["proprio_only"] == 0.0
    assert frames_off["imagined"] == pytest.approx(frames_off["frame_only"])
    shifted = [(e.frames, e.proprio + 0.5) for e in episodes]
    proprio_off = alignment.action_gap(policy, episodes, shifted)
    assert proprio_off["proprio_only"] > 0 and proprio_off["frame_only"] == 0.0
    assert sum(s["n"] for s in frames_off["by_span"].values()) == frames_off["n"]
