"""The mean-action path the trainer logs: steps and drift in units of the start's scale, the
cosine of successive steps, straightness, and a resume that continues the path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.data.start_bank import synthetic_bank
from worldenv.rl.mean_path import MeanPath


@torch.no_grad()
def _shift(policy, delta: float) -> None:
    """Move every mean action the same way: the loc head's bias (before its tanh)."""
    policy.loc_head.bias += delta


def test_a_straight_walk_a_step_back_and_a_resume():
    torch.manual_seed(0)
    policy = models.build("policy")
    policy.eval()
    path = MeanPath(synthetic_bank(6), probe=4)
    assert len(path.obs) == 4
    path.begin(policy)
    scale = policy.act(path.obs, deterministic=True).scale
    loc0 = policy.act(path.obs, deterministic=True).loc

    _shift(policy, 0.01)
    one = path.see(policy)
    loc1 = policy.act(path.obs, deterministic=True).loc
    assert one["mean_step_b"] == pytest.approx(np.abs((loc1 - loc0) / scale).mean(), rel=1e-5)
    assert one["mean_drift_b"] == pytest.approx(one["mean_step_b"]) and one["straightness"] == pytest.approx(1.0)
    assert "step_cosine" not in one

    _shift(policy, 0.01)
    two = path.see(policy)
    assert two["step_cosine"] > 0.99 and two["straightness"] > 0.99, "the same direction twice: a straight line"
    assert two["mean_drift_b"] > 1.9 * one["mean_drift_b"]

    resumed = MeanPath(synthetic_bank(6), probe=4)
    resumed.load_state_dict(path.state_dict())
    _shift(policy, -0.02)
    back, again = path.see(policy), resumed.see(policy)
    assert back == again, "a resumed path continues where it was"
    assert back["step_cosine"] < -0.99 and back["mean_drift_b"] < 0.05 * two["mean_drift_b"]
    assert back["straightness"] < 0.05, "back at the start after walking away: no net drift"


def test_a_state_from_another_probe_starts_a_new_path():
    path = MeanPath(synthetic_bank(6), probe=4)
    path.load_state_dict({"start": np.zeros((3, 1, 1)), "last": None, "last_step": None, "scale": None, "path": 1.0})
    assert path.start is None and path.path == 0.0
    path.load_state_dict({})
    assert path.start is None
