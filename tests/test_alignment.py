"""Alignment of imagination with LIBERO: the rates on hand-made outcomes, and the whole measure
(closed loop, replays, real videos) over tiny real models on toy episodes."""
from __future__ import annotations

import numpy as np
import pytest

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.measure import alignment, reflector as reflector_measure
from worldenv.models.grasp_gate import first_done


def test_rates_on_hand_made_outcomes():
    real = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    judged = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)     # one missed success, one false positive
    r = alignment.outcome_rates(real, judged)
    assert r["agreement"] == pytest.approx(0.8) and r["recall"] == pytest.approx(0.75)
    assert r["false_positive_rate"] == pytest.approx(1 / 6)
    assert (r["false_positives"], r["missed"], r["real_successes"], r["judged_successes"]) == (1, 1, 4, 4)
    none_real = alignment.outcome_rates(np.zeros(3, bool), np.array([0, 1, 0], bool))
    assert none_real["recall"] is None and none_real["false_positive_rate"] == pytest.approx(1 / 3)
    assert r["precision"] == pytest.approx(3 / 4) and none_real["precision"] == 0.0
    assert alignment.outcome_rates(real, np.zeros(10, bool))["precision"] is None   # nothing judged a success


def test_per_task_rates_split_by_task():
    out = alignment.by_task([0, 0, 1, 1], np.array([1, 0, 1, 0], bool), np.array([1, 0, 0, 0], bool))
    assert out["tasks"][0]["agreement"] == 1.0 and out["tasks"][1]["agreement"] == 0.5
    assert out["tasks"][1]["recall"] == 0.0 and out["overall"]["agreement"] == 0.75


def _tiny(tmp_path):
    """Toy episodes (2 successes, 2 failures) and a tiny policy, world model and reflector."""
    return (chunks.load([toy_episodes.write(tmp_path, successes=2, failures=2)]),
            models.build("policy", image_size=32, instruction_encoder="hashed", width=16),
            models.build("world_model", image_size=32, block_out_channels=(8, 16)),
            models.build("reflector", image_size=32, width=16))


def test_measure_runs_every_link_on_tiny_models(tmp_path):
    episodes, policy, world, reflector = _tiny(tmp_path)
    result = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5)
    assert result["episodes"] == 4
    for key in ("closed_loop", "replay", "real_video"):
        overall = result[key]["overall"]
        assert overall["n"] == 4 and overall["real_successes"] == 2 and 0 <= overall["agreement"] <= 1
    rows = result["per_episode"]
    assert [r["real"] for r in rows] == [e.succeeded for e in episodes]
    assert all(1 <= r["imagined_chunks"] <= 3 for r in rows)
    assert all((r["replay_done_frame"] is not None) == r["replay"] for r in rows)
    gap = result["action_gap"]
    assert gap["n"] == sum(e.chunks - 1 for e in episodes) and gap["imagined"] >= 0
    table = alignment.markdown(result)
    assert table[0] == "Verdicts: p(done) > 0.5."
    assert "reflector on world-model replays" in table[6] and "| **all** |" in table[-1]
    assert result["grasp"]["runs"] == 0 and result["grasp"]["width"] is None     # the toy gripper never closes
    assert not any("lower bound" in line for line in table + alignment.console(result))

    # with 3 in a row the real videos and replays (which end at LIBERO's success) say their recall is a bound
    confirmed = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5, confirm=3)
    assert confirmed["confirm"] == 3 and alignment.markdown(confirmed)[0] == "Verdicts: p(done) > 0.5 at 3 chunks in a row."
    assert any("the recall is a lower bound" in line for line in alignment.markdown(confirmed))
    assert alignment.console(confirmed)[-1].startswith("replay and real_video: recall is a lower bound at 3 in a row")


def test_a_false_success_picture_shows_both_worlds_around_the_verdict():
    chunks_, size = 12, 4
    real = np.arange(chunks_ + 1, dtype=np.uint8)[:, None, None, None] * np.ones((1, size, size, 3), np.uint8)
    replay = real + 100
    p_done = np.zeros(chunks_, np.float32)
    p_done[6:8] = 0.9                                   # the verdict after frames 7 and 8
    first = 1 + first_done(p_done, np.zeros(chunks_), np.zeros(chunks_), eta=0.5)   # the frame of the verdict
    picture = alignment.false_success_picture(real, replay, first)
    assert picture.shape == (2 * size, 4 * size, 3)
    assert list(picture[0, ::size, 0]) == [3, 7, 10, 12], "4 before the first done frame, it, 3 after, the last"
    assert list(picture[size, ::size, 0]) == [103, 107, 110, 112], "the replay's frames below the real ones"
    gated = alignment.false_success_picture(real, replay, first=8)   # a verdict the gate delayed
    assert list(gated[0, ::size, 0]) == [4, 8, 11, 12]


def test_false_successes_are_the_replays_judged_done_of_failed_episodes(tmp_path):
    episodes = chunks.load([toy_episodes.write(tmp_path, successes=1, failures=2)])
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    replayed = reflector_measure.replay(world, episodes)
    rows = [{"id": e.id, "real": e.succeeded, "replay": True, "replay_done_frame": 1}   # every replay judged done
            for e in episodes]
    pictures = alignment.false_successes(episodes, replayed, rows, limit=8)
    assert sorted(pictures) == sorted(e.id for e in episodes if not e.succeeded)
    assert all(p.shape[0] == 64 and p.dtype == np.uint8 for p in pictures.values())
    assert len(alignment.false_successes(episodes, replayed, rows, limit=1)) == 1
    assert alignment.false_successes(episodes, replayed, [dict(r, replay=False) for r in rows], 8) == {}


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
    rotated = [(e.frames, e.proprio + np.r_[0, 0, 0, 0.5, 0.5, 0.5, 0, 0].astype(np.float32)) for e in episodes]
    rotation_off = alignment.action_gap(policy, episodes, rotated)   # only the rotation imagined differently
    assert rotation_off["rotation_only"] == pytest.approx(rotation_off["proprio_only"]) and rotation_off["rotation_only"] > 0
    assert rotation_off["position_only"] == rotation_off["gripper_only"] == 0.0
    assert exact["position_only"] == exact["rotation_only"] == exact["gripper_only"] == 0.0


def test_draws_summary_on_hand_made_verdicts_and_jitter_stays_within_its_bound(tmp_path):
    real = np.array([1, 1, 0, 0], bool)
    verdicts = np.array([[1, 0, 0, 0],      # draw 0 (unjittered): 3 of 4 agree
                         [1, 1, 0, 1],      # 3 of 4
                         [1, 0, 0, 1]], bool)  # 2 of 4
    d = alignment.draws_summary(real, verdicts, jitter=1)
    assert d["draws"] == 3 and d["agreement_per_draw"] == [0.75, 0.75, 0.5]
    assert d["agreement"] == pytest.approx(2 / 3)
    assert (d["unstable"], d["unstable_real_successes"]) == (2, 1)          # episodes 1 and 3 change
    assert d["majority"]["agreement"] == 0.5 and d["majority"]["false_positives"] == 1   # 1: 1/3 -> missed; 3: 2/3 -> false
    bank = alignment.first_frames(chunks.load([toy_episodes.write(tmp_path, successes=1, failures=1)]))
    bank.frames[0, 0, 0] = (0, 255, 128)
    moved = alignment.jittered(bank, 2, seed=1)
    change = moved.frames.astype(int) - bank.frames.astype(int)
    assert moved.frames.dtype == np.uint8 and np.abs(change).max() <= 2 and (change != 0).mean() > 0.5
    assert change[0, 0, 0, 0] >= 0 and change[0, 0, 0, 1] <= 0                 # clipped at 0 and 255
    np.testing.assert_array_equal(alignment.jittered(bank, 2, seed=1).frames, moved.frames)
    assert bank.proprio is moved.proprio and bank.ids == moved.ids


def test_measure_with_draws_reports_every_closed_loop_and_the_first_is_the_unjittered_one(tmp_path):
    episodes, policy, world, reflector = _tiny(tmp_path)
    plain = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5)
    drawn = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5, draws=2, jitter=3)
    assert plain["closed_loop_draws"] is None
    d = drawn["closed_loop_draws"]
    assert d["draws"] == 3 and d["jitter"] == 3
    assert d["agreement_per_draw"][0] == plain["closed_loop"]["overall"]["agreement"]
    assert [r["imagined"] for r in drawn["per_episode"]] == [r["imagined"] for r in plain["per_episode"]]
    assert all(r["imagined_draws"] in (0.0, 1 / 3, 2 / 3, 1.0) for r in drawn["per_episode"])
    assert any("jittered by at most 3 grey levels" in line for line in alignment.markdown(drawn))
    printed = alignment.console(drawn)
    assert printed[0].startswith("closed_loop  agreement") and printed[-1].startswith("closed loop over 3 draws")
    assert len(alignment.console(plain)) == 3


class _Executed:
    """LIBERO's part of `measure(in_libero=...)` by hand: each episode's chunks are kept, and they
    succeed where `succeeds` says, at their last chunk, 8 steps a chunk after a 10-step settle."""

    def __init__(self, succeeds: dict[str, bool]):
        self.succeeds, self.calls = succeeds, {}

    def run(self, episode_id, chunks):
        from worldenv.sim.open_loop import OpenLoop
        self.calls[episode_id] = np.asarray(chunks)
        ok = self.succeeds[episode_id]
        return OpenLoop(ok, len(chunks) - 1 if ok else None, np.zeros((len(chunks) + 1, 8), np.float32),
                        10 + 8 * len(chunks))


def test_measure_holds_the_imagined_verdict_against_libero_on_the_imagined_actions(tmp_path):
    episodes, policy, world, reflector = _tiny(tmp_path)
    plain = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5)
    assert plain["imagined_actions"] is None and plain["per_episode"][0]["imagined_in_libero"] is None
    imagined = {r["id"]: r["imagined"] for r in plain["per_episode"]}
    flipped = {e.id: not imagined[e.id] if i % 2 else imagined[e.id] for i, e in enumerate(episodes)}
    executor = _Executed(flipped)
    result = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=0.5, in_libero=executor)
    rows = result["per_episode"]
    assert [r["imagined"] for r in rows] == [r["imagined"] for r in plain["per_episode"]]
    for r in rows:   # the executor got each closed loop's own chunks, as many as it ran
        assert executor.calls[r["id"]].shape == (r["imagined_chunks"], policy.spec.chunk_length, 7)
        assert r["imagined_in_libero"] == flipped[r["id"]]
        assert r["imagined_in_libero_chunk"] == (r["imagined_chunks"] - 1 if flipped[r["id"]] else None)
    overall = result["imagined_actions"]["overall"]
    assert overall == alignment.outcome_rates(np.array([flipped[r["id"]] for r in rows]),
                                              np.array([r["imagined"] for r in rows]))
    assert overall["agreement"] == 0.5                     # every second verdict flipped
    assert result["imagined_actions_sim_steps"] == sum(10 + 8 * r["imagined_chunks"] for r in rows)
    assert result["closed_loop"] == plain["closed_loop"]   # the real episodes' measure is untouched
    assert any("its own actions" in line for line in alignment.markdown(result))
    assert alignment.console(result)[-1].startswith("imagined_actions agreement 50 %")


def test_a_rule_reads_its_verdict_and_libero_outcome_off_one_run_to_the_horizon():
    p = np.array([0.1, 0.6, 0.2, 0.7, 0.8, 0.9])
    commands, gaps = np.array([-1, 1, 1, 1, 1, 1.0]), np.array([0.08, 0.01, 0.0, 0.0, 0.0, 0.0])
    assert first_done(p, commands, gaps, eta=0.5) == 1
    assert first_done(p, commands, gaps, eta=0.5, confirm=2) == 4          # 0.7 then 0.8
    assert first_done(p, commands, gaps, eta=0.85) == 5
    assert first_done(p, commands, gaps, eta=0.5, min_width=0.0175) is None   # the fingers closed empty
    assert first_done(p, commands, np.full(6, 0.04), eta=0.5, min_width=0.0175) == 1   # holding
    # LIBERO's success came at chunk 3: a rollout ended done at chunk 1 had not reached it
    assert alignment.under_rule(1, 3) == (True, False)
    assert alignment.under_rule(4, 3) == (True, True) and alignment.under_rule(3, 3) == (True, True)
    assert alignment.under_rule(None, 3) == (False, True)                             # a missed success
    assert alignment.under_rule(None, None) == (False, False) and alignment.under_rule(2, None) == (True, False)
    assert alignment.under_rule(1, 3, slack=2) == (True, True) and alignment.under_rule(1, 3, slack=1) == (True, False)
