"""The world model's learned proprio dynamics: the rotation conversions it relies on, its
unrolled loss, training it onto a checkpoint (frames untouched), and serving it with the previous
chunk carried in the memory bank."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import toy_episodes
from worldenv import models
from worldenv.data import chunks
from worldenv.models.proprio import axis_angle_to_matrix
from worldenv.models.proprio_dynamics import ArmState, DynamicsEnsemble, ProprioDynamics, matrix_to_axis_angle
from worldenv.models.roles import StartStates
from worldenv.train import proprio_dynamics as train_dynamics
from worldenv.train import world_model as train_world_model
from worldenv.train.settings import WorldModelTrainConfig

TINY_WORLD = json.dumps({"image_size": 32, "block_out_channels": [8, 16]})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy_episodes.write(tmp_path_factory.mktemp("toy"))


def test_matrix_to_axis_angle_inverts_rodrigues_at_every_angle_and_keeps_libero_s_range():
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    angle = torch.rand(500, 1, generator=g) * (math.pi - 1e-3)
    v = (axis * angle).double()
    back = matrix_to_axis_angle(axis_angle_to_matrix(v))
    torch.testing.assert_close(back, v, atol=1e-6, rtol=0)
    # Near pi (a gripper pointing down) both representations of one rotation give one matrix, and
    # the conversion lands on an angle <= pi, as LIBERO's w >= 0 quaternions do.
    flipped = -axis.double() * (math.pi + 1e-4)      # 2 pi - theta about -n, theta = pi - 1e-4
    near_pi = axis.double() * (math.pi - 1e-4)
    torch.testing.assert_close(axis_angle_to_matrix(flipped), axis_angle_to_matrix(near_pi), atol=1e-6, rtol=0)
    out = matrix_to_axis_angle(axis_angle_to_matrix(near_pi))
    assert (out.norm(dim=-1) <= math.pi + 1e-9).all()
    torch.testing.assert_close(axis_angle_to_matrix(out), axis_angle_to_matrix(near_pi), atol=1e-6, rtol=0)


def test_the_unrolled_loss_scores_only_real_chunks_and_withholds_history_when_asked(data):
    seq = train_dynamics.sequences(chunks.load([data]))
    model = ProprioDynamics(8, 7)
    model.fit_statistics(*seq.boundaries())
    rows = np.arange(len(seq))
    last = seq.chunks - 1
    with torch.no_grad():   # from the last chunk, a window of 5 has one real step: the same as a window of 1
        one = train_dynamics.unrolled_loss(model, seq, rows, last, 1)
        five = train_dynamics.unrolled_loss(model, seq, rows, last, 5)
        torch.testing.assert_close(five, one)
        rest = train_dynamics.unrolled_loss(model, seq, rows, last, 1, at_rest=np.ones(len(seq), bool))
    assert not torch.isclose(rest, one)   # the history is an input: withholding it changes the prediction
    # by hand: the first window of episode 0 from chunk 0 (no history there, the robot at rest)
    state = ArmState.from_raw(torch.from_numpy(seq.proprio[:1, 0]))
    with torch.no_grad():
        nxt = model.step(state, torch.from_numpy(seq.actions[:1, 0]), state, torch.zeros(1, 8, 7))
        expected = (model.standardise(nxt) - model.standardise(ArmState.from_raw(torch.from_numpy(seq.proprio[:1, 1])))).abs().mean()
        got = train_dynamics.unrolled_loss(model, seq, rows[:1], np.zeros(1, np.int64), 1)
    torch.testing.assert_close(got, expected)


def test_proprio_dynamics_trained_onto_a_checkpoint_learns_leaves_the_frames_and_serves_with_history(data, tmp_path):
    """--proprio-dynamics: only the dynamics trains (frames bit for bit), its held-out open-loop
    error falls, and the served model steps it with the previous chunk its memory bank carries."""
    base = WorldModelTrainConfig(data=str(data), out=str(tmp_path / "base"), steps=10, batch_size=8, eval_every=10,
                                 lr=2e-3, warmup=2, model=TINY_WORLD)
    train_world_model.train(base)
    with pytest.raises(ValueError, match="--proprio-dynamics: cannot be combined"):
        WorldModelTrainConfig(data=str(data), out=str(tmp_path), proprio_dynamics=True, reader_only=True)
    run = train_world_model.train(base.model_copy(update={
        "out": str(tmp_path / "dyn"), "model": "{}", "init": str(tmp_path / "base" / "model"), "steps": 120,
        "eval_every": 40, "warmup": 0, "lr": 3e-3, "batch_size": 16, "proprio_dynamics": True, "unroll": 4}))
    losses = [r["val_loss"] for r in run["history"]]
    assert losses[-1] < losses[0], losses
    assert set(run["val_before"]) >= {"loss", "position_m", "chunks_1-4"}
    old, new = models.load(tmp_path / "base" / "model"), models.load(tmp_path / "dyn" / "model")
    assert new.config.proprio_dynamics and new.proprio_dynamics is not None and old.proprio_dynamics is None
    e = chunks.load([data])[0]
    a0, a1 = np.clip(e.actions[:2], -1, 1)
    banks = new.start(StartStates(e.frames[:1], e.proprio[:1], [e.instruction]))
    first, banks = new.step(banks, a0[None])
    second, _ = new.step(banks, a1[None])
    history = np.stack([np.stack([e.frames[0], e.frames[0]])])
    frame_old, _ = old.predict(history, e.proprio[:1], a0[None])
    np.testing.assert_array_equal(first.frames, frame_old)
    with torch.no_grad():   # by hand: step 1 at rest, step 2 with step 1's proprio and chunk as history
        start = ArmState.from_raw(torch.from_numpy(e.proprio[:1]))
        one = new.proprio_dynamics.step(start, torch.from_numpy(a0[None]), start, torch.zeros(1, 8, 7))
        after = ArmState.from_raw(torch.from_numpy(first.proprio))
        two = new.proprio_dynamics.step(after, torch.from_numpy(a1[None]), start, torch.from_numpy(a0[None]))
    np.testing.assert_allclose(first.proprio, one.raw().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second.proprio, two.raw().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="choose one way to predict the proprio"):
        models.build("world_model", proprio_reader=True, proprio_dynamics=True)
    new.drop_proprio_dynamics()   # back to the integrated proprio, the frames as they were
    new.save_pretrained(tmp_path / "dropped")
    dropped = models.load(tmp_path / "dropped")
    assert dropped.proprio_dynamics is None and not dropped.config.proprio_dynamics
    np.testing.assert_array_equal(dropped.step(dropped.start(StartStates(e.frames[:1], e.proprio[:1], [e.instruction])),
                                               a0[None])[0].frames, frame_old)


def test_the_predicted_axis_angle_keeps_libero_s_convention_past_pi():
    """LIBERO's axis-angle is 2 acos(w) of a quaternion whose sign runs continuously (angles up to
    2 pi): a state moved by small turns speaks the same convention, never the flipped one."""
    axis = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, -0.05]]), dim=-1)
    raw = torch.cat([torch.tensor([[0.1, -0.2, 0.9]]), axis * 3.5, torch.tensor([[0.03, -0.03]])], dim=-1)
    state = ArmState.from_raw(raw)
    torch.testing.assert_close(state.raw(), raw, atol=1e-5, rtol=0)
    torch.testing.assert_close(state.moved(torch.zeros(1, 3), torch.eye(3)[None], torch.zeros(1, 2)).raw(), raw,
                               atol=1e-5, rtol=0)
    turned = state.moved(torch.zeros(1, 3), axis_angle_to_matrix(axis * 0.05), torch.zeros(1, 2)).raw()
    torch.testing.assert_close(turned[:, 3:6], axis * 3.55, atol=1e-4, rtol=0)   # not (2 pi - 3.55) about -n


def test_policy_units_add_the_policy_input_error_and_the_open_loop_figures_read_a_known_turn(data):
    """--policy-units: the loss is the dynamics' own error plus the error of a policy's proprio input
    (its standardisation and clamp), by hand; the open-loop figures give a replay turned by a known
    angle that angle in degrees, and no position error."""
    seq = train_dynamics.sequences(chunks.load([data]))
    model = ProprioDynamics(8, 7)
    model.fit_statistics(*seq.boundaries())
    reader = train_dynamics.policy_reader("shipped", "cpu")
    assert reader.std[3:9].max() < 0.2   # the shipped policy's fitted rotation spread, not the default ones
    rows, starts = np.arange(len(seq)), np.zeros(len(seq), np.int64)
    with torch.no_grad():
        plain = train_dynamics.unrolled_loss(model, seq, rows, starts, 1)
        weighted = train_dynamics.unrolled_loss(model, seq, rows, starts, 1, reader=reader)
        state = ArmState.from_raw(torch.from_numpy(seq.proprio[:, 0]))
        nxt = model.step(state, torch.from_numpy(seq.actions[:, 0]), state, torch.zeros(len(seq), 8, 7))
        real = ArmState.from_raw(torch.from_numpy(seq.proprio[:, 1]))
        by_hand = (((nxt.features() - reader.mean) / reader.std).clamp(-10, 10)
                   - ((real.features() - reader.mean) / reader.std).clamp(-10, 10)).abs().mean()
    torch.testing.assert_close(weighted, plain + by_hand)
    # a replay that is the real proprio turned 10 degrees about z at every boundary
    turn = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.radians(10)]))
    real_all = torch.from_numpy(seq.proprio).float()
    flat = ArmState.from_raw(real_all.reshape(-1, 8))
    turned = flat.moved(torch.zeros(len(flat.pos), 3), turn.expand(len(flat.pos), 3, 3), torch.zeros(len(flat.pos), 2))
    predicted = turned.raw().view(real_all.shape).numpy()
    out = train_dynamics.open_loop_errors(model, seq, predicted, reader)
    assert out["rotation_deg"] == pytest.approx(10, abs=1e-2)
    assert out["rotation_deg_1-4"] == pytest.approx(10, abs=1e-2)
    assert out["position_m"] == 0 and out["read_position"] == 0 and out["read_gripper"] == 0
    assert out["read_rotation"] > 0
    with pytest.raises(ValueError, match="--policy-units: .* needs --proprio-dynamics"):
        WorldModelTrainConfig(data=str(data), out="x", policy_units="shipped")


def test_an_ensemble_needs_a_proprio_dynamics(data, tmp_path):
    with pytest.raises(ValueError, match="--proprio-members: .* needs --proprio-dynamics"):
        WorldModelTrainConfig(data=str(data), out=str(tmp_path), proprio_members=2)
    with pytest.raises(ValueError, match="proprio_members .* needs proprio_dynamics"):
        models.build("world_model", proprio_members=2)
    with pytest.raises(ValueError, match="members: an ensemble needs at least 2"):
        DynamicsEnsemble(8, 7, 1)


def test_an_ensemble_of_dynamics_steps_their_mean_delta_trains_every_member_and_round_trips(data, tmp_path):
    """--proprio-members: the served step is the mean of the members' deltas (the position their
    mean position, exactly), every member trains, the checkpoint reloads as an ensemble, and a
    count that does not match an --init checkpoint's is refused."""
    base = WorldModelTrainConfig(data=str(data), out=str(tmp_path / "base"), steps=5, batch_size=8, eval_every=5,
                                 lr=2e-3, warmup=2, model=TINY_WORLD)
    train_world_model.train(base)
    dyn = base.model_copy(update={"out": str(tmp_path / "ens"), "model": "{}", "init": str(tmp_path / "base" / "model"),
                                  "steps": 60, "eval_every": 30, "warmup": 0, "lr": 3e-3, "batch_size": 16,
                                  "proprio_dynamics": True, "unroll": 4, "proprio_members": 2})
    fresh = models.load(tmp_path / "base" / "model")
    fresh.add_proprio_dynamics(2)
    before = [p.detach().clone() for p in fresh.proprio_dynamics.parameters()]
    run = train_world_model.train(dyn)
    model = models.load(tmp_path / "ens" / "model")
    assert model.config.proprio_members == 2 and isinstance(model.proprio_dynamics, DynamicsEnsemble)
    a, b = model.proprio_dynamics.members
    assert not torch.equal(a.net[0].weight, b.net[0].weight)
    assert all(not torch.equal(x, y) for x, y in zip(before, model.proprio_dynamics.parameters()) if x.dim() > 1)
    assert run["members"] == 2 and len(run["val_members"]) == 2
    _, val = chunks.split(chunks.load([data]), dyn.val_fraction, dyn.seed)
    best = min(r["val_loss"] for r in run["history"])   # the kept checkpoint is the ensemble's best held-out figure
    assert train_dynamics.open_loop_errors(model.proprio_dynamics, train_dynamics.sequences(val))["loss"] \
        == pytest.approx(best, rel=1e-5)
    seq = train_dynamics.sequences(chunks.load([data]))
    state = ArmState.from_raw(torch.from_numpy(seq.proprio[:, 0]))
    actions = torch.from_numpy(seq.actions[:, 0])
    with torch.no_grad():
        step = model.proprio_dynamics.step(state, actions, state, torch.zeros_like(actions))
        alone = [m.step(state, actions, state, torch.zeros_like(actions)) for m in (a, b)]
        mean_delta = (a.delta(state, actions, state, torch.zeros_like(actions))
                      + b.delta(state, actions, state, torch.zeros_like(actions))) / 2
    torch.testing.assert_close(step.pos, (alone[0].pos + alone[1].pos) / 2)
    torch.testing.assert_close(step.grip, (alone[0].grip + alone[1].grip) / 2)
    torch.testing.assert_close(step.rot, axis_angle_to_matrix(mean_delta[:, 3:6]) @ state.rot)
    with pytest.raises(ValueError, match="--proprio-members 1: the --init checkpoint's dynamics has 2"):
        train_world_model.train(dyn.model_copy(update={"out": str(tmp_path / "again"), "init": str(tmp_path / "ens" / "model"),
                                                       "proprio_members": 1}))
