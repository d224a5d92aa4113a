"""`worldenv sensitivity`: fixed offsets of one chunk on the policy's mean episode, by size. The
offset lands on exactly one chunk of the episode it names, whatever the batch; size 0 replays
the base; the command end to end on tiny checkpoints, and its bad flags named."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldenv import models
from worldenv.data.start_bank import synthetic_bank
from worldenv.measure import sensitivity
from worldenv.models.imagination import Imagination, imagine
from worldenv.models.roles import StartStates


def test_the_offset_lands_on_one_chunk_of_the_episode_it_names():
    torch.manual_seed(0)
    policy, world_model, reflector = models.build("policy"), models.build("world_model"), models.build("reflector")
    bank = synthetic_bank(1).subset([0, 0, 0])
    starts = StartStates(np.stack([bank.start_frames(i) for i in range(3)]), bank.proprio.astype(np.float32),
                         list(bank.instructions))
    vector = np.full(7, 0.3, np.float32)
    seeds = [11, 12, 13]
    with Imagination(world_model, reflector) as imagination:
        mean = imagine(policy, imagination, starts, 3, 0.999999, True, seeds)
        acting = sensitivity.OffsetPolicy(policy, seeds, {1: sensitivity.Offset(2, vector)}, 3)
        changed = imagine(acting, imagination, starts, 3, 0.999999, True, seeds)
    for i in (0, 2):
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(changed[i].actions, mean[i].actions)), "untouched"
    assert np.allclose(changed[1].actions[0], mean[1].actions[0], atol=1e-5)
    assert np.allclose(changed[1].actions[1], mean[1].actions[1], atol=1e-5), "before the chunk: the same state"
    assert np.allclose(changed[1].actions[2] - mean[1].actions[2], vector[None], atol=1e-4), "the chunk, offset"
    with pytest.raises(ValueError, match="seeds"):
        acting.act(None, True, None)


def test_summary_counts_flips_against_the_base():
    base = [{"done": True, "p_done": 0.9}, {"done": False, "p_done": 0.1}]
    changed = [{"done": True, "p_done": 0.8}, {"done": False, "p_done": 0.2},
               {"done": False, "p_done": 0.1}, {"done": False, "p_done": 0.3}]
    s = sensitivity.summary(base, changed, 2)
    assert s["flips"] == 1 and s["episodes"] == 4 and s["flip_rate"] == 0.25
    assert s["starts_with_a_flip"] == 0.5 and s["flip_rate_done_base"] == 0.5 and s["flip_rate_failed_base"] == 0.0
    assert s["p_done_change"] == pytest.approx((0.1 + 0.7 + 0.0 + 0.2) / 4)
    assert s["pairs_with_a_flip"] == 1 and s["one_sided"] == 1 and s["one_sided_done_base"] == 1
    both = sensitivity.summary(base, [{"done": False, "p_done": 0.0}] * 2 + [{"done": True, "p_done": 1.0}] * 2, 2)
    assert both["one_sided"] == 0 and both["both_sides_done_base"] == 1 and both["both_sides_failed_base"] == 1


def test_sensitivity_command_on_tiny_checkpoints(tmp_path, capsys, tiny_model_flags):
    from worldenv import cli
    args = ["sensitivity", *tiny_model_flags(6), "--groups", "4", "--offsets", "4",
            "--sizes", "0,0.5", "--horizon", "3", "--eta", "0.5", "--batch", "5", "--out", str(tmp_path / "s.json")]
    assert cli.main(args) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert [s["size"] for s in result["sizes"]] == [0.0, 0.5]
    assert len(result["ids"]) == 4 and all(0 <= t < c for t, c in zip(result["offset_chunk"], result["base_chunks"]))
    zero = result["sizes"][0]
    assert zero["episodes"] == 16 and zero["flips"] == 0, "size 0 replays the base in other batches"
    assert zero["done"] == [d for d in result["base_done"] for _ in range(4)]
    out = capsys.readouterr().out
    assert "m=0: outcome flipped in 0 of 16 episodes" in out and "m=0.5: outcome flipped in" in out


@pytest.mark.parametrize("flag,value,message", [("--sizes", "0,-1", "comma-separated numbers >= 0"),
                                                ("--sizes", "a", "comma-separated numbers >= 0"),
                                                ("--groups", "0", "--groups: must be >= 1"),
                                                ("--offsets", "3", "--offsets: Input should be a multiple of 2"),
                                                ("--policy", "/no/such/policy", "--policy")])
def test_sensitivity_command_names_the_bad_flag(flag, value, message, capsys):
    from worldenv import cli
    try:
        code = cli.main(["sensitivity", flag, value])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
