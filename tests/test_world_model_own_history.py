"""The world model's frames trained on their own predicted history (`train world-model --own-history`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.train import world_model as train_world_model
from worldenv.train.settings import WorldModelTrainConfig

TINY_WORLD = {"image_size": 32, "block_out_channels": [8, 16]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_episodes.write(tmp_path_factory.mktemp("toy"))


def test_at_depth_zero_the_windows_are_the_real_transitions(data):
    episodes = chunks.load([data])[:4]
    model = models.build("world_model", **TINY_WORLD)
    w = train_world_model.windows(episodes, 2, 0)
    real = train_world_model.transitions(episodes, 2)
    assert len(w) == len(real)
    got = train_world_model.own_history(model, w, np.arange(len(w)), 0)
    for name in ("history", "proprio", "actions", "next_frame", "next_proprio"):
        np.testing.assert_array_equal(getattr(got, name), getattr(real, name))


def test_a_deeper_history_is_the_model_s_own_roll_from_the_real_start(data):
    torch.manual_seed(0)
    e = max(chunks.load([data]), key=lambda e: (e.lengths == 8).sum())   # a failure: it wanders all its steps
    model = models.build("world_model", **TINY_WORLD)
    depth = 3
    w = train_world_model.windows([e], 2, depth)
    assert len(w) == (e.lengths == 8).sum() - depth             # every start with depth + 1 full chunks after it
    got = train_world_model.own_history(model, w, np.array([0, 1]), depth)
    padded = np.concatenate([e.frames[:1], e.frames])            # by hand: predict chunk by chunk on the real inputs
    history = np.stack([padded[0:2], padded[1:3]])               # starts 0 and 1, batched as the windows are
    for j in range(depth):
        frames, _ = model.predict(history, e.proprio[[j, 1 + j]], np.clip(e.actions[[j, 1 + j]], -1, 1))
        history = np.concatenate([history[:, 1:], frames[:, None]], axis=1)
    np.testing.assert_array_equal(got.history, history)
    np.testing.assert_array_equal(got.next_frame, e.frames[[depth + 1, depth + 2]])   # the target stays real
    np.testing.assert_array_equal(got.actions, np.clip(e.actions[[depth, depth + 1]], -1, 1))
    np.testing.assert_array_equal(got.proprio, e.proprio[[depth, depth + 1]])
    assert not np.array_equal(got.history[:, -1], e.frames[None, depth]), "the last history frame is predicted"


def test_training_on_its_own_history_lowers_the_held_out_loss_at_the_deepest_roll(data, tmp_path):
    config = WorldModelTrainConfig(data=str(data), out=str(tmp_path / "run"), steps=40, batch_size=8, eval_every=20,
                                   warmup=5, lr=2e-3, model=json.dumps(TINY_WORLD), seed=0, own_history=2, patience=0)
    run = train_world_model.train(config)
    assert run["own_history"] == 2 and run["steps"] == 40 and run["train_windows"] > 0
    first, last = run["history"][0], run["history"][-1]
    assert {"val_loss", "val_frame_real_history"} <= set(last)
    model = models.load(tmp_path / "run" / "model")
    fresh = models.build("world_model", **TINY_WORLD | {"action_gain": model.config.action_gain})
    episodes = chunks.load([data])
    w = train_world_model.windows(episodes, 2, 2)
    idx = np.arange(len(w))
    trained = train_world_model.losses(model, train_world_model.own_history(model, w, idx, 2))["frame"]
    before = train_world_model.losses(fresh, train_world_model.own_history(fresh, w, idx, 2))["frame"]
    assert trained.item() < 0.5 * before.item()
    assert last["val_loss"] <= first["val_loss"]


def test_own_history_trains_frames_only_and_refuses_other_paths(data, tmp_path):
    with pytest.raises(ValueError, match="--own-history"):
        WorldModelTrainConfig(data=str(data), out=str(tmp_path), own_history=2, teacher="shipped")
    with pytest.raises(ValueError, match="--own-history"):
        WorldModelTrainConfig(data=str(data), out=str(tmp_path), own_history=2, proprio_dynamics=True)
    with pytest.raises(ValueError, match="own-history 9"):
        train_world_model.windows(chunks.load([data])[:2], 2, 9)    # toy episodes have 5 chunks


def test_one_roll_gives_every_depth_as_separate_rolls_do(data):
    torch.manual_seed(0)
    episodes = chunks.load([data])
    model = models.build("world_model", **TINY_WORLD)
    w = train_world_model.windows(episodes, 2, 3)
    idx = np.arange(len(w))
    for d, at in enumerate(train_world_model.rolled(model, w, idx, 3)):
        alone = train_world_model.own_history(model, w, idx, d)
        np.testing.assert_array_equal(at.history, alone.history)
        np.testing.assert_array_equal(at.next_frame, alone.next_frame)


def test_the_memory_bank_repeats_the_first_frame_before_the_start(data):
    e = chunks.load([data])[0]
    np.testing.assert_array_equal(chunks.memory_bank(e, 0, 3), e.frames[[0, 0, 0]])
    np.testing.assert_array_equal(chunks.memory_bank(e, 1, 3), e.frames[[0, 0, 1]])
    np.testing.assert_array_equal(chunks.memory_bank(e, 2, 2), e.frames[1:3])
