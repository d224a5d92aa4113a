"""The measures of the models' report: image errors, open-loop drift, reflector verdicts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.measure import images, reflector as measure_reflector, world_model as measure_world_model


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    return chunks.load([toy_episodes.write(tmp_path_factory.mktemp("toy"), successes=4, failures=4)])


def test_psnr_ssim_and_moving_pixels_on_known_frames():
    a = np.zeros((1, 16, 16, 3), np.uint8)
    b = a.copy()
    b[0, :4, :4] = 10                                   # 16 pixels off by 10 on every channel
    assert images.psnr(a, a)[0] == 100.0 and images.ssim(a, a)[0] == pytest.approx(1.0)
    mse = 16 * 100 / 256
    assert images.psnr(a, b)[0] == pytest.approx(10 * np.log10(255 ** 2 / mse))
    mask = images.moving_mask(a, b)
    assert mask.sum() == 16 and images.psnr(a, b, mask)[0] == pytest.approx(10 * np.log10(255 ** 2 / 100))
    assert np.isnan(images.psnr(a, a, images.moving_mask(a, a))[0])
    assert images.ssim(a, b)[0] < 1.0


def test_open_loop_drift_has_every_horizon_and_the_copy_baseline(episodes):
    torch.manual_seed(0)
    model = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    drift = measure_world_model.measure(model, episodes, horizon=3)
    curve = drift.curve("copy", "psnr")
    assert sorted(curve)[:3] == [1, 2, 3] and curve[1] > curve[3]         # the copy baseline drifts too
    whole = drift.curve("copy", "psnr", whole_episode=True)
    assert max(whole) == max(measure_world_model.full_chunks(e) for e in episodes)   # from the start, to the end
    summary = drift.summary(horizons=(1, 3))
    assert set(summary) == {"model", "copy"} and set(summary["model"]) == set(measure_world_model.METRICS)
    json.dumps(summary)


def test_reflector_verdicts_are_hand_checkable():
    p = [np.array([0.1, 0.7, 0.9]), np.array([0.2, 0.6]), np.array([0.1, 0.1])]
    labels = [np.array([0, 0, 1]), np.array([0, 0]), np.array([0, 0])]
    out = measure_reflector.verdicts(p, labels, [True, False, False], eta=0.5)
    assert out["frames"]["false_positive_rate"] == pytest.approx(2 / 6) and out["frames"]["recall"] == 1.0
    assert out["episodes"]["false_positive_rate"] == pytest.approx(1 / 2)      # the second failure was judged done
    assert out["episodes"]["termination_error_chunks"]["mean"] == -1           # one chunk early


def test_reflector_on_real_and_imagined_videos(episodes):
    torch.manual_seed(0)
    reflector = models.build("reflector", image_size=32, width=16)
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    real = measure_reflector.on_real(reflector, episodes)
    imagined = measure_reflector.on_imagined(reflector, world, episodes)
    assert real["episodes"]["n"] == imagined["episodes"]["n"] == len(episodes)
    assert real["frames"]["n"] == sum(e.chunks for e in episodes) == imagined["frames"]["n"]
    video = measure_reflector.imagine(world, episodes[:1])[0]
    np.testing.assert_array_equal(video[0], episodes[0].frames[0])
    assert len(video) == episodes[0].chunks + 1
