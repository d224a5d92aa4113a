"""`confirm`: a done verdict counts only after that many chunks in a row with p(done) > eta (the
reward rule scripts/reward_rules.py measures against LIBERO). Inside `Imagination` on tiny real
models, per row; through `imagined.rollouts`; a job carries it through Redis."""
from __future__ import annotations

import numpy as np
import pytest

from worldenv import models
from worldenv.data.start_bank import StartBank
from worldenv.measure import imagined
from worldenv.models.imagination import Imagination
from worldenv.models.roles import StartStates
from worldenv.rl.queue import BadJob, Job


def _tiny():
    return (models.build("world_model", image_size=32, block_out_channels=(8, 16)),
            models.build("reflector", image_size=32, width=16))


def _starts(n: int) -> StartStates:
    rng = np.random.default_rng(0)
    return StartStates(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), np.zeros((n, 8), np.float32),
                       ["pick it up"] * n)


def test_each_row_ends_done_after_its_own_count_of_verdicts_in_a_row():
    world, reflector = _tiny()
    chunk = np.zeros((3, world.spec.chunk_length, world.spec.action_dim), np.float32)
    with Imagination(world, reflector) as imagination:
        rows = imagination.start(_starts(3), horizon=6, eta=1e-9, confirm=[1, 2, 3])   # every step a verdict
        ended = {}
        for t in range(1, 5):
            live = [r for r in rows.tolist() if r not in ended]
            out = imagination.step(live, chunk[:len(live)])
            assert (out.p_done > 1e-9).all()
            ended |= {r: t for r, done in zip(live, out.terminated) if done}
            imagination.end([r for r, done in zip(live, out.terminated) if done])
            if len(ended) == 3:
                break
        assert ended == {0: 1, 1: 2, 2: 3}
        with pytest.raises(ValueError, match="confirm: must be >= 1"):
            imagination.start(_starts(1), horizon=2, confirm=0)


def test_rollouts_wait_for_the_verdicts_in_a_row_and_never_end_done_without_them():
    world, reflector = _tiny()
    policy = models.build("policy", image_size=32, instruction_encoder="hashed", width=16)
    bank = StartBank(frames=_starts(2).frames, proprio=np.zeros((2, 8), np.float32), instructions=["a", "b"],
                     ids=["s/0/1", "s/0/2"], meta={})
    at_once = imagined.rollouts(policy, world, reflector, bank, horizon=4, eta=1e-9)
    waited = imagined.rollouts(policy, world, reflector, bank, horizon=4, eta=1e-9, confirm=3)
    assert [r["chunks"] for r in at_once] == [1, 1] and [r["chunks"] for r in waited] == [3, 3]
    assert all(r["done"] for r in at_once + waited)
    never = imagined.rollouts(policy, world, reflector, bank, horizon=2, eta=1e-9, confirm=3)   # the horizon first
    assert [(r["done"], r["chunks"]) for r in never] == [(False, 2), (False, 2)]


def test_a_job_carries_its_confirm_through_the_queue_and_a_bad_one_is_named():
    job = Job(id="j", frame=np.zeros((8, 8, 3), np.uint8), proprio=np.zeros(8, np.float32), instruction="x",
              confirm=3)
    fields = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in job.to_fields().items()}
    assert Job.from_fields(fields).confirm == 3
    fields[b"confirm"] = b"0"
    with pytest.raises(BadJob, match="job 'j': confirm must be >= 1"):
        Job.from_fields(fields)
    del fields[b"confirm"]
    assert Job.from_fields(fields).confirm == 1                       # a job from before the field: the first verdict
