"""The tiny policy and reflector: shapes, input dependence, Laplace maths, checkpoints, gradients
(the world model's in test_world_model.py; all three against their role interfaces here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_bytes

from worldenv import models
from worldenv.models import checkpoint, text
from worldenv.models.roles import Observations
from worldenv.models.policy import LaplacePolicy, PolicyConfig
from worldenv.models.reflector import Reflector, sample_indices

from tiny_inputs import A, K, TASKS, actions, frames, instructions, proprio


def act(policy, f, p, ins, deterministic=False, seed=None) -> dict:
    """The Policy interface's act as a dict; `seed` seeds every item alike."""
    seeds = None if seed is None else [seed] * len(f)
    return policy.act(Observations(f, p, ins), deterministic, seeds).as_dict()


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return models.build("policy")


@pytest.fixture(scope="module")
def reflector():
    torch.manual_seed(0)
    return models.build("reflector")


# --- text ---------------------------------------------------------------------------------

def test_tokenize_is_deterministic_padded_and_masked():
    ids, mask = text.tokenize(["Pick up the RED block", ""], vocab_size=1024, max_tokens=6)
    assert ids.shape == mask.shape == (2, 6) and ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert mask[0].tolist() == [True] * 5 + [False] and not mask[1].any()
    assert ids[0, 3] == text.word_id("red", 1024) == 913  # pinned: checkpoints rely on stable ids
    assert (ids[~mask] == 0).all() and ((ids[mask] >= 1) & (ids[mask] < 1024)).all()


# --- policy -------------------------------------------------------------------------------

@pytest.mark.parametrize("b", [1, 3])
def test_policy_act_shapes_and_dtypes(policy, b):
    out = act(policy, frames(b), proprio(b), instructions(b), seed=11)
    for key in ("loc", "scale", "actions"):
        assert out[key].shape == (b, K, A) and out[key].dtype == np.float32, key
    assert out["log_probs"].shape == (b,) and out["log_probs"].dtype == np.float32
    assert np.all(np.abs(out["loc"]) <= 1) and np.all(out["scale"] > 0)
    lo, hi = np.exp(PolicyConfig().min_log_scale), np.exp(PolicyConfig().max_log_scale)
    assert np.all((out["scale"] >= lo) & (out["scale"] <= hi))


def test_policy_loc_depends_on_frames_proprio_and_instruction(policy):
    base = act(policy, frames(2), proprio(2), [TASKS[0]] * 2, deterministic=True)["loc"]
    other_frames = act(policy, frames(2, seed=1), proprio(2), [TASKS[0]] * 2, deterministic=True)["loc"]
    other_proprio = act(policy, frames(2), proprio(2, seed=1), [TASKS[0]] * 2, deterministic=True)["loc"]
    other_text = act(policy, frames(2), proprio(2), [TASKS[1]] * 2, deterministic=True)["loc"]
    for other in (other_frames, other_proprio, other_text):
        assert np.abs(other - base).max() > 1e-4


def test_policy_log_prob_matches_torch_laplace(policy):
    f, p, ins = frames(3), proprio(3), instructions(3)
    out = act(policy, f, p, ins, seed=1)
    ref = torch.distributions.Laplace(torch.from_numpy(out["loc"]), torch.from_numpy(out["scale"]))
    expected = ref.log_prob(torch.from_numpy(out["actions"])).sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(out["log_probs"], expected, rtol=1e-5, atol=1e-4)
    lp = policy.log_prob(Observations(f, p, ins), torch.from_numpy(out["actions"]))
    np.testing.assert_allclose(lp.detach().numpy(), expected, rtol=1e-5, atol=1e-4)


def test_policy_deterministic_act_returns_loc_and_sampling_is_seeded(policy):
    f, p, ins = frames(3), proprio(3), instructions(3)
    det = act(policy, f, p, ins, deterministic=True)
    np.testing.assert_array_equal(det["actions"], det["loc"])
    a = act(policy, f, p, ins, seed=5)["actions"]
    b = act(policy, f, p, ins, seed=5)["actions"]
    c = act(policy, f, p, ins, seed=6)["actions"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_policy_log_prob_is_differentiable():
    torch.manual_seed(0)
    model = models.build("policy").train()
    obs, acts = Observations(frames(3), proprio(3), instructions(3)), torch.from_numpy(actions(3))
    before = model.log_prob(obs, acts)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    (-before.mean()).backward()
    optimizer.step()
    after = model.log_prob(obs, acts)
    assert after.mean() > before.mean().detach()


def test_policy_reset_scale_sets_b_everywhere_keeps_loc_and_stays_learnable():
    torch.manual_seed(0)
    model = models.build("policy")
    obs = Observations(frames(3), proprio(3), instructions(3))
    loc_before = model.act(obs, deterministic=True).loc
    model.reset_scale(0.05)
    out = model.act(obs, deterministic=True)
    np.testing.assert_array_equal(out.loc, loc_before)
    np.testing.assert_allclose(out.scale, 0.05, rtol=1e-5)
    (-model.log_prob(obs, torch.from_numpy(actions(3))).mean()).backward()
    assert model.scale_head.weight.grad.abs().sum() > 0, "mid-sigmoid: the scale head still gets gradient"
    with pytest.raises(ValueError, match="must lie inside"):
        model.reset_scale(1e-4)          # below the e^-5 floor


def test_restart_scale_is_the_one_check_for_train_rl_explore_and_align(reflector):
    """laplace.restart_scale: None keeps the checkpoint's scale, a value restarts it as reset_scale
    does, and a model with no Laplace scale is a ValueError naming the caller's field."""
    from worldenv.models import laplace
    torch.manual_seed(0)
    model = models.build("policy")
    obs = Observations(frames(2), proprio(2), instructions(2))
    before = model.act(obs, deterministic=True).scale
    laplace.restart_scale(model, None)
    np.testing.assert_array_equal(model.act(obs, deterministic=True).scale, before)
    laplace.restart_scale(model, 0.05)
    np.testing.assert_allclose(model.act(obs, deterministic=True).scale, 0.05, rtol=1e-5)
    with pytest.raises(ValueError, match="--exploration-scale: the tiny-reflector"):
        laplace.restart_scale(reflector, 0.05, "--exploration-scale")


def test_policy_rejects_bad_shapes_by_name(policy):
    with pytest.raises(ValueError, match="frames"):
        act(policy, frames(2)[:, :32], proprio(2), instructions(2))
    with pytest.raises(ValueError, match="proprio"):
        act(policy, frames(2), proprio(3), instructions(2))
    with pytest.raises(ValueError, match="instructions"):
        act(policy, frames(2), proprio(2), instructions(3))


def test_policy_config_validates():
    from worldenv.models.oft_policy import OFTConfig
    for config in (PolicyConfig, OFTConfig):   # one validator for both Laplace archs
        with pytest.raises(ValueError, match=r"min_log_scale \(2.0\) must be below max_log_scale \(1.0\)"):
            config(min_log_scale=2.0)
    with pytest.raises(ValueError, match="image_size"):
        PolicyConfig(image_size=4)


# --- reflector ----------------------------------------------------------------------------

@pytest.mark.parametrize("b", [1, 3])
def test_reflector_judge_shapes_and_range(reflector, b):
    p = reflector.judge(frames(b, 5), instructions(b))
    assert p.shape == (b,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))


def test_reflector_depends_on_frames_and_instruction(reflector):
    video = frames(2, 12)
    base = reflector.judge(video, [TASKS[0]] * 2)
    other_last = video.copy()
    other_last[:, -1] = frames(2, seed=3)
    assert np.abs(reflector.judge(other_last, [TASKS[0]] * 2) - base).max() > 1e-5
    assert np.abs(reflector.judge(video, [TASKS[1]] * 2) - base).max() > 1e-5


def test_reflector_samples_uniformly_with_last_frame():
    assert sample_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    idx = sample_indices(30, 8).tolist()
    assert len(idx) == 8 and idx[0] == 0 and idx[-1] == 29 and idx == sorted(set(idx))


def test_reflector_loss_backward():
    torch.manual_seed(0)
    model = models.build("reflector").train()
    loss = model.loss(torch.from_numpy(frames(3, 4)), instructions(3), torch.tensor([0.0, 1.0, 1.0]))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.head[-1].weight.grad.abs().sum() > 0 and model.vision.convs[0][0].weight.grad.abs().sum() > 0


# --- checkpoints --------------------------------------------------------------------------

def test_policy_round_trip_and_dispatch(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["role"], config["arch"]) == ("policy", "tiny-laplace-policy")
    loaded = models.load(tmp_path)
    assert isinstance(loaded, LaplacePolicy)
    f, p, ins = frames(3), proprio(3), instructions(3)
    a = act(policy, f, p, ins, seed=11)
    b = act(loaded, f, p, ins, seed=11)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_reflector_round_trip_and_dispatch(reflector, tmp_path):
    reflector.save_pretrained(tmp_path)
    loaded = models.load(tmp_path)
    assert isinstance(loaded, Reflector)
    video = frames(3, 6)
    np.testing.assert_array_equal(reflector.judge(video, instructions(3)), loaded.judge(video, instructions(3)))


def test_loading_refuses_another_role_or_arch(reflector, tmp_path):
    reflector.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tiny-reflector"):
        LaplacePolicy.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'reflector'.*not a 'policy'"):
        models.load(tmp_path, role="policy")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "arch"}))
    with pytest.raises(ValueError, match="'arch' missing"):
        models.load(tmp_path)


def test_from_pretrained_casts_dtype(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    loaded = models.load(tmp_path, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    out = act(loaded, frames(2), proprio(2), instructions(2), deterministic=True)
    assert out["loc"].dtype == np.float32


def test_load_weights_is_strict_and_in_place():
    torch.manual_seed(1)
    source = models.build("policy")
    torch.manual_seed(2)
    target = models.build("policy")
    pointers = [t.data_ptr() for t in target.state_dict().values()]
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    assert target.load_weights(checkpoint.state_from_bytes(save_bytes(state))) == len(state)
    assert [t.data_ptr() for t in target.state_dict().values()] == pointers, "loaded into the same storage"
    f, p, ins = frames(2), proprio(2), instructions(2)
    np.testing.assert_array_equal(act(source, f, p, ins, deterministic=True)["loc"],
                                  act(target, f, p, ins, deterministic=True)["loc"])
    bad = dict(state, **{"loc_head.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="loc_head.weight"):
        target.check_weights(bad)
    missing = {k: v for k, v in state.items() if k != "scale_head.bias"}
    with pytest.raises(ValueError, match="scale_head.bias"):
        target.load_weights(missing)
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint.state_from_bytes(b"not a checkpoint")


def test_build_rejects_unknown_arch_and_bad_override():
    with pytest.raises(ValueError, match="arch"):
        models.build("critic")
    with pytest.raises(ValueError, match="width"):
        models.build("policy", width="wide")


# --- the role interfaces ---------------------------------------------------------------------

def test_each_model_implements_its_role(policy, reflector):
    torch.manual_seed(0)
    world = models.build("world_model")
    assert isinstance(policy, models.Policy) and isinstance(world, models.WorldModel)
    assert isinstance(reflector, models.Reflector)
    assert [m.spec.role for m in (policy, world, reflector)] == ["policy", "world_model", "reflector"]
    assert world.spec.extra["history"] == 2 and reflector.spec.extra["max_frames"] == 8


def test_policy_seeded_items_do_not_depend_on_the_batch(policy):
    f, p, ins = frames(4), proprio(4), instructions(4)
    alone = policy.act(Observations(f[2:3], p[2:3], ins[2:3]), seeds=[42])
    merged = policy.act(Observations(f, p, ins), seeds=[0, 7, 42, 0])
    np.testing.assert_allclose(merged.actions[2], alone.actions[0], rtol=1e-5, atol=1e-6)
    mixed = policy.act(Observations(f, p, ins), deterministic=[True, False, True, False], seeds=[1, 2, 3, 4])
    np.testing.assert_array_equal(mixed.actions[[0, 2]], mixed.loc[[0, 2]])
    assert not np.allclose(mixed.actions[[1, 3]], mixed.loc[[1, 3]])
    at_loc = (-np.log(2 * mixed.scale[[0, 2]])).sum(axis=(1, 2))
    np.testing.assert_allclose(mixed.log_probs[[0, 2]], at_loc, rtol=1e-5)
    with pytest.raises(ValueError, match="seeds"):
        policy.act(Observations(f, p, ins), seeds=[1, 2])


def test_reflector_observe_matches_judging_the_whole_video(reflector):
    video = frames(3, 4)
    states = reflector.start(video[:, 0], instructions(3))
    for t in range(1, 4):
        p_done, states = reflector.observe(states, video[:, t])
        np.testing.assert_allclose(p_done, reflector.judge(video[:, :t + 1], instructions(3)), rtol=1e-5, atol=1e-6)
    uneven = [states[0], reflector.start(video[1:2, 0], instructions(1))[0]]
    p_done, _ = reflector.observe(uneven, video[:2, 1])
    np.testing.assert_allclose(p_done[1], reflector.judge(video[1:2, :2], instructions(1))[0], rtol=1e-5)


def test_sharded_checkpoint_round_trip_and_missing_shard(policy, tmp_path):
    policy.save_pretrained(tmp_path, max_shard_bytes=200_000)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / checkpoint.INDEX_FILE).is_file()
    assert not (tmp_path / checkpoint.WEIGHTS_FILE).exists()
    loaded = models.load(tmp_path, role="policy")
    f, p, ins = frames(2), proprio(2), instructions(2)
    np.testing.assert_array_equal(act(policy, f, p, ins, seed=3)["actions"], act(loaded, f, p, ins, seed=3)["actions"])
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        models.load(tmp_path)


# --- instruction and proprio features ----------------------------------------------------------

def test_sentence_encoder_is_pretrained_frozen_and_cached():
    from worldenv.models import language
    enc = language.encoder()
    a = enc.encode(["pick up the alphabet soup and place it in the basket",
                    "pick up the cream cheese and place it in the basket", "open the top drawer"])
    assert a.shape == (3, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2], "a pretrained encoder puts the two pick-and-place tasks closer"
    assert not any(p.requires_grad for p in enc.model.parameters())
    model = models.build("policy")
    assert not any(k.startswith("instruction.encoder") or "bert" in k for k in model.state_dict()), \
        "the frozen encoder is not part of the checkpoint"


def test_loading_the_sentence_encoder_draws_no_progress_bar_and_leaves_the_others_on(capfd):
    from transformers.utils import logging as hf_logging

    from worldenv.models import language
    assert hf_logging.is_progress_bar_enabled()
    language.SentenceEncoder(language.model_dir())       # a fresh load, not the process's cached one
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the user's own progress bars stay on"


def test_hashed_instructions_remain_an_option():
    torch.manual_seed(0)
    model = models.build("policy", instruction_encoder="hashed")
    out = act(model, frames(2), proprio(2), instructions(2), deterministic=True)
    assert out["loc"].shape == (2, K, A)


def test_proprio_features_are_continuous_across_the_axis_angle_flip():
    from worldenv.models.proprio import ProprioNorm, features
    n = torch.tensor([0.0, 0.6, 0.8])
    near_pi = torch.cat([torch.zeros(1, 3), (3.1415 * n)[None], torch.zeros(1, 2)], dim=1)
    flipped = torch.cat([torch.zeros(1, 3), ((2 * np.pi - 3.1415) * -n)[None], torch.zeros(1, 2)], dim=1)
    assert torch.allclose(features(near_pi), features(flipped), atol=1e-4)   # same rotation
    norm = ProprioNorm()
    data = torch.from_numpy(proprio(64))
    norm.fit(data)
    z = norm(data)
    assert z.shape == (64, 11) and torch.allclose(z.mean(0), torch.zeros(11), atol=1e-4)


def test_exploration_scale_is_in_normalised_action_units():
    """reset_scale(s) gives b = s x each dimension's action spread (fitted from training actions),
    the same at every step; under the floor a dimension sits just above it; log-probs of sampled
    actions recomputed equal the ones returned."""
    policy = models.build("policy", instruction_encoder="hashed", width=16)
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4000, 7)).astype(np.float32))
    actions[:, 3:6] *= 0.04                                      # rotations move little, as in the demos
    policy.fit_action_spread(actions)
    spread = np.array(policy.config.action_spread)
    assert np.allclose(spread[[0, 1, 2, 6]], 0.98, atol=0.02) and np.allclose(spread[3:6], 0.04, atol=0.002)
    policy.reset_scale(0.2)
    obs = Observations(np.zeros((3, 64, 64, 3), np.uint8), np.zeros((3, 8), np.float32), ["pick up the bowl"] * 3)
    out = policy.act(obs, deterministic=False, seeds=[1, 2, 3])
    assert np.allclose(out.scale[..., [0, 1, 2, 6]], 0.2 * spread[[0, 1, 2, 6]], rtol=1e-3)
    assert np.allclose(out.scale[..., 3:6], 0.2 * spread[3:6], rtol=1e-3)
    assert np.allclose(out.scale[:, 0], out.scale[:, -1])        # every step of the chunk alike
    recomputed = policy.log_prob(obs, torch.from_numpy(out.actions)).detach().numpy()
    np.testing.assert_allclose(recomputed, out.log_probs, rtol=1e-5)
    policy.reset_scale(0.01)                                     # 0.01 x 0.04 is under the floor e^-5
    floor = np.exp(policy.config.min_log_scale)
    assert (policy.act(obs, deterministic=True).scale[..., 3:6] > floor).all()
