"""Prioritised replay of start states whose outcome is open (worldenv/rl/start_replay.py): what
it draws, what it remembers, and its settings."""
from __future__ import annotations

import numpy as np
import pydantic
import pytest

from worldenv.rl.settings import RLConfig
from worldenv.rl.start_replay import StartReplay


def test_with_no_open_start_seen_every_group_is_a_fresh_distinct_draw():
    replay = StartReplay(size=10, share=0.5, min_spread=0.05)
    indices, replayed = replay.draw(4, np.random.default_rng(0))
    assert len(set(indices.tolist())) == 4 and not replayed.any()


def test_open_starts_are_drawn_again_and_a_start_that_closes_leaves_the_pool():
    replay = StartReplay(size=10, share=0.5, min_spread=0.05)
    assert replay.see(0, np.zeros(8)) is False                                  # all failed: no spread
    assert replay.see(1, np.array([0, 0, 0, 1, 0, 0, 0, 0.0])) is True           # one of eight done
    assert replay.see(2, np.array([1, 1, 0, 0, 1, 1, 0, 0.0])) is True
    assert replay.see(3, np.array([0.01, 0.03, 0, 0, 0, 0, 0, 0])) is False      # the reflector's noise, not an outcome
    assert replay.scores == pytest.approx({1: np.std([0, 0, 0, 1, 0, 0, 0, 0]), 2: 0.5})
    rng = np.random.default_rng(1)
    for _ in range(20):
        indices, replayed = replay.draw(4, rng)
        assert replayed.tolist() == [True, True, False, False]
        assert sorted(indices[:2].tolist()) == [1, 2], "both open starts, once each"
        assert not set(indices[2:].tolist()) & {1, 2}, "fresh draws are other starts"
    replay.see(2, np.ones(8))                                                   # now it always succeeds
    indices, replayed = replay.draw(4, rng)
    assert replay.scores.keys() == {1} and indices[0] == 1 and replayed.sum() == 1, "a pool of one replays one"


def test_wider_spread_is_replayed_more_often():
    replay = StartReplay(size=10, share=0.5, min_spread=0.05)
    replay.scores = {4: 0.5, 7: 0.05}
    rng = np.random.default_rng(2)
    picks = [int(replay.draw(2, rng)[0][0]) for _ in range(2000)]
    assert picks.count(4) / len(picks) == pytest.approx(0.5 / 0.55, abs=0.03)


def test_a_bank_smaller_than_the_groups_is_drawn_with_replacement():
    replay = StartReplay(size=3, share=0.5, min_spread=0.0)
    replay.see(0, np.array([0, 1.0]))
    indices, replayed = replay.draw(8, np.random.default_rng(3))
    assert len(indices) == 8 and replayed.sum() == 1 and set(indices[1:].tolist()) <= {1, 2}


def test_state_round_trips_and_forgets_starts_outside_the_bank():
    replay = StartReplay(size=10, share=0.25, min_spread=0.05)
    replay.see(3, np.array([0, 1.0]))
    again = StartReplay(size=10, share=0.25, min_spread=0.05)
    again.load_state_dict({"scores": {**replay.state_dict()["scores"], "12": 0.4}})
    assert again.scores == replay.scores == {3: 0.5}


def test_the_share_is_checked_and_named():
    with pytest.raises(ValueError, match="replay_open"):
        StartReplay(size=4, share=1.0, min_spread=0.05)
    with pytest.raises(pydantic.ValidationError, match="replay_open"):
        RLConfig(out="x", replay_open=1.0)
    assert RLConfig(out="x").replay_open == 0.0, "uniform draws unless asked"


@pytest.mark.parametrize("size, groups", [(582, 8), (3, 8)])
def test_at_share_zero_the_draws_are_the_plain_uniform_ones(size, groups):
    """--replay-open 0 draws the starts a uniform `rng.choice` over the bank draws, seed for seed."""
    plain, replay = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        indices, replayed = StartReplay(size, share=0.0, min_spread=0.05).draw(groups, replay)
        assert indices.tolist() == plain.choice(size, groups, replace=size < groups).tolist() and not replayed.any()
