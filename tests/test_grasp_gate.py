"""The grasp gate: a done verdict counts only once the imagined gripper held something. Its rule
on hand-made gripper histories, the verdict it gives over a whole episode, and the same rule
inside `Imagination` (tiny real models) and `alignment.measure`; a job carries it through Redis."""
from __future__ import annotations

import numpy as np
import pytest

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.measure import alignment
from worldenv.models.grasp_gate import GraspGate, calibrate, check_layout, closed_runs, finger_gap, first_done
from worldenv.models.imagination import Imagination
from worldenv.models.roles import StartStates
from worldenv.rl.queue import Job

OPEN, CLOSE = -1.0, 1.0


def gate_after(history: list[tuple[float, float]], width: float = 0.015) -> bool:
    gate = GraspGate(width)
    for command, gap in history:
        gate.update(command, gap)
    return gate.holds()


def test_the_gate_holds_for_an_object_between_the_fingers_not_for_an_empty_grip():
    # closing takes a chunk (its gap is skipped); then the fingers stop on the object or close
    assert gate_after([(OPEN, 0.08), (CLOSE, 0.03), (CLOSE, 0.037), (CLOSE, 0.037)])
    assert not gate_after([(OPEN, 0.08), (CLOSE, 0.03), (CLOSE, 0.002), (CLOSE, 0.001)])
    assert not gate_after([(OPEN, 0.08), (OPEN, 0.08)])              # never closed: never done
    assert not gate_after([])
    # the median of the settled chunks decides: one wide chunk among narrow ones does not
    assert not gate_after([(CLOSE, 0.05), (CLOSE, 0.03), (CLOSE, 0.002), (CLOSE, 0.001)])
    # a one-chunk run has no settled chunk: its only gap decides
    assert gate_after([(CLOSE, 0.02)]) and not gate_after([(CLOSE, 0.01)])


def test_opening_after_a_grasp_keeps_the_grasp_and_a_new_closing_starts_over():
    held = [(CLOSE, 0.03), (CLOSE, 0.037), (CLOSE, 0.037)]
    assert gate_after(held + [(OPEN, 0.06), (OPEN, 0.08)])          # released over the basket: still counts
    assert not gate_after(held + [(OPEN, 0.08), (CLOSE, 0.03), (CLOSE, 0.001)])   # then missed a new grasp


def test_a_width_must_be_positive():
    with pytest.raises(ValueError, match="min_width"):
        GraspGate(0.0)


def test_first_done_waits_for_the_gate_and_without_it_is_the_first_verdict():
    p = np.array([0.9, 0.1, 0.2, 0.7, 0.8, 0.9])
    commands = np.array([OPEN, CLOSE, CLOSE, CLOSE, OPEN, OPEN])
    gaps = np.array([0.08, 0.03, 0.036, 0.036, 0.05, 0.08])
    assert first_done(p, commands, gaps, eta=0.5) == 0
    assert first_done(p, commands, gaps, eta=0.5, min_width=0.015) == 3
    assert first_done(p, commands, np.array([0.08, 0.03, 0.002, 0.001, 0.05, 0.08]), eta=0.5, min_width=0.015) is None
    assert finger_gap(np.array([[0, 0, 0, 0, 0, 0, 0.02, -0.018]]))[0] == pytest.approx(0.038)


def _start(n: int, size: int = 32) -> StartStates:
    rng = np.random.default_rng(0)
    proprio = np.tile(np.array([0, 0, 1, np.pi, 0, 0, 0.04, -0.04], np.float32), (n, 1))
    return StartStates(rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), proprio, ["pick it up"] * n)


def test_imagination_applies_the_gate_per_row_on_the_predicted_proprio():
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    reflector = models.build("reflector", image_size=32, width=16)
    chunk = np.zeros((1, world.spec.chunk_length, world.spec.action_dim), np.float32)
    with Imagination(world, reflector) as imagination:
        # eta tiny: the reflector's verdict is "done" at every step, so the gate alone decides
        rows = imagination.start(_start(3), horizon=5, eta=1e-9, grasp_gate=[0.0, 0.015, 1e-9])
        open_chunk = np.repeat(chunk, 3, 0)
        open_chunk[..., -1] = OPEN
        out = imagination.step(rows, open_chunk)
        assert out.terminated.tolist() == [True, False, False]      # gated rows never closed the gripper
        closed = open_chunk[1:].copy()
        closed[..., -1] = CLOSE
        gaps, expected = [], []
        for _ in range(3):
            out = imagination.step(rows[1:], closed)
            gaps.append(finger_gap(out.prediction.proprio))
            expected.append([gate_after([(CLOSE, g[k]) for g in gaps], w) for k, w in enumerate((0.015, 1e-9))])
            assert out.terminated.tolist() == expected[-1]
            if out.terminated.any():
                break


def test_the_gate_refuses_a_world_model_without_the_panda_layout():
    import dataclasses
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    reflector = models.build("reflector", image_size=32, width=16)
    check_layout(world.spec)                                          # ours: proprio 8, actions 7
    check_layout(dataclasses.replace(world.spec, proprio_dim=0, action_dim=0))   # not told: taken as LIBERO's
    with pytest.raises(ValueError, match="'other' has proprio 6 and actions 7"):
        check_layout(dataclasses.replace(world.spec, name="other", proprio_dim=6))

    class Other:           # the same model behind another spec, as a served world model of another robot
        spec = dataclasses.replace(world.spec, name="other", action_dim=4)
        start, end = world.start, world.end

    with Imagination(Other(), reflector) as imagination:
        with pytest.raises(ValueError, match="actions 4"):
            imagination.start(_start(2), horizon=5, grasp_gate=0.0175)
        assert imagination.start(_start(2), horizon=5).tolist() == [0, 1]     # ungated: any layout


def test_alignment_with_the_gate_judges_no_episode_whose_gripper_never_closed(tmp_path):
    episodes = chunks.load([toy_episodes.write(tmp_path, successes=2, failures=2)])   # the toy gripper stays open
    assert all((alignment.gripper_commands(e) < 0).all() for e in episodes)
    policy = models.build("policy", image_size=32, instruction_encoder="hashed", width=16)
    world = models.build("world_model", image_size=32, block_out_channels=(8, 16))
    reflector = models.build("reflector", image_size=32, width=16)
    plain = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=1e-6)
    gated = alignment.measure(policy, world, reflector, episodes, horizon=3, eta=1e-6, grasp_gate=0.015)
    assert all(r["replay"] and r["real_video"] for r in plain["per_episode"])     # every verdict "done"
    assert not any(r["replay"] or r["real_video"] for r in gated["per_episode"])
    assert gated["grasp_gate"] == 0.015 and gated["replay"]["overall"]["judged_successes"] == 0


def test_a_job_carries_its_gate_through_the_queue_and_an_older_job_reads_as_ungated():
    job = Job(id="j", frame=np.zeros((8, 8, 3), np.uint8), proprio=np.zeros(8, np.float32), instruction="x",
              grasp_gate=0.015)
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in job.to_fields().items()}
    assert Job.from_fields(fields).grasp_gate == 0.015
    del fields[b"grasp_gate"]
    assert Job.from_fields(fields).grasp_gate == 0.0


def test_closed_runs_are_the_settled_chunks_of_each_closing():
    commands = np.array([OPEN, CLOSE, CLOSE, CLOSE, OPEN, CLOSE, OPEN, CLOSE, CLOSE])
    assert closed_runs(commands) == [slice(2, 4), slice(5, 6), slice(8, 9)]
    assert closed_runs(np.array([OPEN, OPEN])) == []


def test_calibration_chooses_the_width_that_tells_held_from_empty_without_outcomes():
    commands = [np.array([OPEN, CLOSE, CLOSE, CLOSE, OPEN])] * 4
    real = [np.array([0.08, 0.03, g, g, 0.08]) for g in (0.037, 0.042, 0.001, 0.002)]    # two held, two empty
    imagined = [np.array([0.08, 0.03, g, g, 0.08]) for g in (0.031, 0.026, 0.004, 0.012)]
    c = calibrate(commands, real, imagined)
    assert (c["runs"], c["held"]) == (4, 2)
    assert c["width"] == 0.0125 and c["balanced_accuracy"] == 1.0        # the smallest width above 1.2 cm
    assert c["by_width"]["0.01"] == 0.75                                   # 1.2 cm counted as held there
    assert calibrate([np.array([OPEN])], [np.zeros(1)], [np.zeros(1)])["width"] is None
