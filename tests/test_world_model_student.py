"""A cheaper world model: the U-Net on patch x patch pixel blocks (`patch`), and a student
distilled from a trained world model (`train world-model --teacher`)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.train import world_model as train_world_model
from worldenv.train.settings import WorldModelTrainConfig

TINY_WORLD = {"image_size": 32, "block_out_channels": [8, 16]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_episodes.write(tmp_path_factory.mktemp("toy"))


def test_a_patched_u_net_runs_at_a_fraction_of_the_side_and_predicts_full_frames():
    torch.manual_seed(0)
    model = models.build("world_model", patch=2, **TINY_WORLD)
    assert model.unet.config.sample_size == 16 and model.unet.conv_in.in_channels == 4 * (3 * 2 + 1)
    image, embed = torch.randn(3, 7, 32, 32), torch.randn(3, 32)
    with torch.no_grad():
        out = model._unet_out(image, 0, embed)
        by_hand = F.pixel_shuffle(model.unet(F.pixel_unshuffle(image, 2), 0, class_labels=embed).sample, 2)
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(out, by_hand)
    rng = np.random.default_rng(0)
    frames, _ = model.predict(rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8),
                              rng.standard_normal((2, 8)).astype(np.float32),
                              rng.standard_normal((2, 8, 7)).astype(np.float32))
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8
    with pytest.raises(ValueError, match="patch 4"):   # 48 / 4 = 12 px cannot be halved three times
        models.build("world_model", patch=4, image_size=48, block_out_channels=[8, 16, 16, 16])


def test_the_teacher_s_share_of_the_frame_loss(data):
    torch.manual_seed(0)
    model = models.build("world_model", **TINY_WORLD)
    batch = train_world_model.transitions(chunks.load([data])[:3], 2)
    plain = train_world_model.losses(model, batch)
    other = np.roll(batch.next_frame, 1, axis=0)
    half = train_world_model.losses(model, dataclasses.replace(batch, teacher_frame=other), 0.5)
    same = train_world_model.losses(model, dataclasses.replace(batch, teacher_frame=batch.next_frame), 0.5)
    torch.testing.assert_close(half["frame"], plain["frame"])          # "frame" stays the real frame's L1
    torch.testing.assert_close(same["distill"], plain["frame"])        # a teacher that predicts reality = no change
    torch.testing.assert_close(same["loss"], plain["loss"])
    expected = 0.5 * plain["frame"] + 0.5 * half["distill"] + model.config.proprio_weight * plain["proprio"]
    torch.testing.assert_close(half["loss"], expected)


def test_a_student_distilled_from_a_teacher_keeps_its_proprio_path_and_learns_its_frames(data, tmp_path):
    base = WorldModelTrainConfig(data=str(data), out=str(tmp_path / "teacher"), steps=20, batch_size=8, eval_every=20,
                                 model=json.dumps(TINY_WORLD), seed=0)
    train_world_model.train(base)
    teacher_dir = tmp_path / "teacher" / "model"
    teacher = models.load(teacher_dir)
    config = WorldModelTrainConfig(data=str(data), out=str(tmp_path / "student"), steps=30, batch_size=8,
                                   eval_every=15, lr=2e-3, warmup=5, teacher=str(teacher_dir), teacher_weight=1.0,
                                   model=json.dumps({"patch": 2}), patience=0)
    run = train_world_model.train(config)
    student = models.load(tmp_path / "student" / "model")
    expected = teacher.config.model_copy(update={"patch": 2})
    assert student.config == expected, "the teacher's config (its action gain included) with the overrides"
    for name, value in teacher.proprio_head.state_dict().items():    # copied and frozen
        torch.testing.assert_close(student.proprio_head.state_dict()[name], value)
    assert run["steps"] == 30 and "train_distill" in run["history"][-1]
    # the student is nearer its teacher's frames than a fresh model of its shape
    e = chunks.load([data])[0]
    batch = train_world_model.transitions([e], 2)
    taught = train_world_model.taught(batch, teacher)
    torch.manual_seed(1)
    fresh = models.build("world_model", **expected.model_dump(exclude={"role", "arch"}))
    with torch.no_grad():
        gap = {name: train_world_model.losses(m, taught, 1.0)["distill"].item()
               for name, m in (("student", student), ("fresh", fresh))}
    assert gap["student"] < gap["fresh"]
    # trained further from its checkpoint (--init): its frames only, its proprio path as it was
    again = train_world_model.train(config.model_copy(update={"out": str(tmp_path / "further"), "steps": 10,
                                                              "eval_every": 10, "model": "{}",
                                                              "init": str(tmp_path / "student" / "model")}))
    further = models.load(tmp_path / "further" / "model")
    assert again["steps"] == 10 and further.config == expected
    for name, value in teacher.proprio_head.state_dict().items():
        torch.testing.assert_close(further.proprio_head.state_dict()[name], value)
    assert any(not torch.equal(a, b) for a, b in zip(further.unet.parameters(), student.unet.parameters()))


def test_a_teacher_cannot_be_combined_with_training_the_proprio_path(tmp_path):
    with pytest.raises(ValueError, match="--teacher"):
        WorldModelTrainConfig(data="x", out=str(tmp_path), teacher="shipped", proprio_dynamics=True)


def test_init_and_teacher_take_the_word_shipped(tmp_path):
    from worldenv import checkpoints
    from worldenv.train import supervised

    config = WorldModelTrainConfig(data="x", out=str(tmp_path), init="shipped", teacher="shipped")
    model = supervised.initial_model("world_model", config)
    assert model.config == models.load(checkpoints.model_dir("world_model")).config
    assert train_world_model._teacher(config.teacher, "cpu").config == model.config
