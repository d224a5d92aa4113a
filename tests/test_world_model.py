"""The tiny action-conditioned world model: shapes, input dependence, the proprio and action map,
gradients, checkpoints, the memory bank."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.models.roles import StartStates
from worldenv.models.world_model import ActionConditionedWorldModel, WorldModelConfig, eef_path, render_action_map

from tiny_inputs import A, K, P, S, actions, frames, instructions, proprio


@pytest.fixture(scope="module", params=["residual", "diffusion"])
def world_model(request):
    torch.manual_seed(0)
    return models.build("world_model", mode=request.param)


def step_inputs(b, seed=0):
    return frames(b, 2, seed=seed), proprio(b, seed), actions(b, seed)


@pytest.mark.parametrize("b", [1, 3])
def test_world_model_predict_shapes_and_dtypes(world_model, b):
    frame, next_proprio = world_model.predict(*step_inputs(b), generator=torch.Generator().manual_seed(0))
    assert frame.shape == (b, S, S, 3) and frame.dtype == np.uint8
    assert next_proprio.shape == (b, P) and next_proprio.dtype == np.float32


def test_world_model_depends_on_actions_and_history(world_model):
    history, p, a = step_inputs(2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - same noise for both calls
    base, base_p = world_model.predict(history, p, a, generator=gen())
    other_a, other_p = world_model.predict(history, p, -a, generator=gen())
    other_h, _ = world_model.predict(frames(2, 2, seed=7), p, a, generator=gen())
    assert np.abs(base.astype(int) - other_a).mean() > 0.1
    assert np.abs(base_p - other_p).max() > 1e-3
    assert np.abs(base.astype(int) - other_h).mean() > 1.0
    assert np.abs(base.astype(int) - history[:, -1]).mean() > 0.1  # not an echo of the last frame


def test_world_model_proprio_integrates_position_deltas():
    torch.manual_seed(0)
    model = models.build("world_model")
    p, a = torch.zeros(1, P), torch.zeros(1, K, A)
    a[..., 0] = 1.0  # full speed along +x for the whole chunk
    moved = model.predict_proprio(p, a) - model.predict_proprio(p, torch.zeros(1, K, A))
    assert moved[0, 0].item() == pytest.approx(K * model.config.action_gain, abs=0.02)


def test_action_map_draws_the_path():
    config = WorldModelConfig()
    pos = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    a = torch.zeros(2, K, A)
    a[1, :, 1] = 1.0  # the second chunk moves along +y: its markers shift right in the image
    m = render_action_map(eef_path(pos, a, config.action_gain), config)
    assert m.shape == (2, 1, S, S) and 0 <= m.min() and m.max() <= 1
    cols = m[:, 0].amax(dim=1).argmax(dim=-1)  # column of the brightest marker
    assert cols[0] == S // 2 - 1 or cols[0] == S // 2
    assert cols[1] > cols[0]


@pytest.mark.parametrize("mode", ["residual", "diffusion"])
def test_world_model_loss_backward(mode):
    torch.manual_seed(0)
    model = models.build("world_model", mode=mode).train()
    history, p, a = (torch.from_numpy(x) for x in step_inputs(2))
    losses = model.forward_train(history, p, a, torch.from_numpy(frames(2, seed=5)), torch.from_numpy(proprio(2, 5)))
    loss = model.loss(history, p, a, torch.from_numpy(frames(2, seed=5)), torch.from_numpy(proprio(2, 5)))
    assert set(losses) == {"frame", "proprio", "loss"} and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.unet.conv_in.weight.grad.abs().sum() > 0 and model.cond[0].weight.grad.abs().sum() > 0
    assert model.proprio_head[0].weight.grad.abs().sum() > 0


def test_world_model_round_trip_and_dispatch(world_model, tmp_path):
    world_model.save_pretrained(tmp_path)
    loaded = models.load(tmp_path)
    assert isinstance(loaded, ActionConditionedWorldModel) and loaded.config == world_model.config
    inputs = step_inputs(3)
    a = world_model.predict(*inputs, generator=torch.Generator().manual_seed(0))
    b = loaded.predict(*inputs, generator=torch.Generator().manual_seed(0))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_world_model_rejects_bad_shapes_by_name():
    torch.manual_seed(0)
    model = models.build("world_model")
    history, p, a = step_inputs(2)
    with pytest.raises(ValueError, match=r"history: expected \(B, 2, 64, 64, 3\) uint8"):
        model.predict(history[:, :1], p, a)
    with pytest.raises(ValueError, match="actions"):
        model.predict(history, p, a[:, :4])
    with pytest.raises(ValueError, match="proprio"):
        model.predict(history, p[:1], a)


def test_world_model_config_validates():
    with pytest.raises(ValueError, match="divisible"):
        WorldModelConfig(image_size=66)
    with pytest.raises(ValueError, match="sampler_steps"):
        WorldModelConfig(sampler_steps=50)


def test_world_model_memory_bank_rolls_and_actions_are_clipped():
    torch.manual_seed(0)
    model = models.build("world_model", history=3)
    start = frames(2, seed=1)
    states = model.start(StartStates(start, proprio(2), instructions(2)))
    assert states[0].frames.shape == (3, S, S, 3) and (states[0].frames == start[0]).all()  # padded
    a = actions(2) * 3                                            # beyond the action space
    prediction, after = model.step(states, a)
    history = np.repeat(start[:, None], 3, axis=1)
    expected = model.predict(history, proprio(2), np.clip(a, -1, 1))
    np.testing.assert_array_equal(prediction.frames, expected[0])
    np.testing.assert_array_equal(prediction.proprio, expected[1])
    np.testing.assert_array_equal(after[1].frames[-1], prediction.frames[1])
    np.testing.assert_array_equal(after[1].frames[:2], history[1, 1:])
    longer = model.start(StartStates(frames(1, 5), proprio(1), ["t"]))
    np.testing.assert_array_equal(longer[0].frames, frames(1, 5)[0, -3:])  # keeps the latest
