"""Short imagination with a learned value at the cut: the reward target by hand, outcome labels,
a value trained on real (toy) episodes that scores truncated imagined episodes in the trainer."""
from __future__ import annotations

import json

import numpy as np
import pytest

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.data.episodes import ImaginedEpisode
from worldenv.rl import loop_ppo, value
from worldenv.rl.settings import RLConfig
from worldenv.train import reflector as train_reflector
from worldenv.train.settings import ReflectorTrainConfig

VALUE = json.dumps({"image_size": 32, "width": 16, "instruction_encoder": "hashed", "max_frames": 4})


def _imagined(i: int, status: str, reward: float, frames: np.ndarray) -> ImaginedEpisode:
    t = len(frames) - 1
    return ImaginedEpisode(id=f"e{i}", status=status, policy_version=1, instruction="reach green", start_id="s",
                           group_id="g", reward=reward, frames=frames, actions=np.zeros((t, 8, 7), np.float32),
                           log_probs=np.zeros(t, np.float32), p_done=np.full(t, reward, np.float32))


def test_the_target_by_hand():
    """Rewards (G=1, N=4): two episodes terminated by the reflector keep p(done); two cut at the
    horizon take the value there; the leave-one-out advantages follow from those."""
    rewards = np.array([0.9, 0.05, 0.8, 0.02], np.float32)
    truncated = np.array([False, True, False, True])
    values = np.array([0.1, 0.6, 0.2, 0.3], np.float32)
    target = value.cut_rewards(rewards, truncated, values)
    np.testing.assert_allclose(target, [0.9, 0.6, 0.8, 0.3])
    import torch
    adv = loop_ppo.leave_one_out(torch.tensor(target)[None]).numpy()[0]
    np.testing.assert_allclose(adv, [0.9 - 1.7 / 3, 0.6 - 2.0 / 3, 0.8 - 1.8 / 3, 0.3 - 2.3 / 3], rtol=1e-5)


def test_outcome_labels_mark_every_frame_of_an_episode_with_its_outcome(tmp_path):
    data = toy_episodes.write(tmp_path, successes=2, failures=2, instruction="reach green")
    episodes = chunks.load([data])
    labelled = train_reflector.as_outcome(episodes)
    assert any(e.succeeded for e in episodes) and not all(e.succeeded for e in episodes)
    for e, o in zip(episodes, labelled):
        assert o.success.all() if e.succeeded else not o.success.any()     # the first frame too: not done, bound to
        assert not e.success[0] and o.frames is e.frames


@pytest.fixture(scope="module")
def value_dir(tmp_path_factory):
    """A value trained on toy episodes (8 successes, 8 failures) with --target outcome."""
    tmp = tmp_path_factory.mktemp("value")
    data = toy_episodes.write(tmp / "data", successes=8, failures=8, instruction="reach green")
    config = ReflectorTrainConfig(data=str(data), out=str(tmp / "run"), steps=150, batch_size=16, eval_every=150,
                                  lr=3e-3, warmup=5, model=VALUE, val_fraction=0.0, mismatch_fraction=0.0,
                                  target="outcome")
    train_reflector.train(config)
    return tmp / "run" / "model", chunks.load([data])


def test_a_value_trained_on_outcomes_rates_early_frames_of_successes_above_failures(value_dir):
    path, episodes = value_dir
    model = models.load(path, role="reflector")
    early = {True: [], False: []}
    for e in episodes:
        c = max(1, e.chunks // 3)                  # a third of the way: the task is not done yet
        if not e.success[c]:
            early[e.succeeded].append(model.judge(train_reflector.clip(e, c, 4)[None], [e.instruction])[0])
    assert early[True] and early[False]
    assert np.mean(early[True]) > np.mean(early[False]) + 0.1, early


def test_bootstrap_scores_only_the_episodes_cut_at_the_horizon(value_dir):
    path, episodes = value_dir
    model = models.load(path, role="reflector")
    real = episodes[0]
    imagined = [_imagined(0, "done", 0.9, real.frames[:3]), _imagined(1, "horizon", 0.01, real.frames[:3]),
                _imagined(2, "horizon", 0.02, real.frames[:4]), _imagined(3, "failed", 0.0, real.frames[:1])]
    out = value.bootstrap(model, imagined)
    assert out[0].reward == 0.9 and out[3].reward == 0.0 and "value" not in out[0].extra
    for i in (1, 2):
        expected = model.judge(imagined[i].frames[None], ["reach green"])[0]
        assert out[i].reward == pytest.approx(float(expected), abs=1e-6)
        assert out[i].extra["p_done_at_cut"] == imagined[i].reward


def test_the_value_setting_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="value"):
        RLConfig(out=str(tmp_path / "run"), value=str(tmp_path / "nowhere"))
