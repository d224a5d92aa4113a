"""The openvla-oft policy arch: OFT's directory layout (names, keys, refusals), the Laplace maths in
env units, LoRA + heads as the only weights RL changes, and serving through the unchanged servicer."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from servers import serving
from worldenv import models
from worldenv.client.clients import PolicyClient
from worldenv.rl.trainer import weights_bytes
from worldenv.models import oft_policy
from worldenv.models.oft_policy import OFTPolicy, Statistics
from worldenv.models.roles import Observations

S, K, A, P, STEP, KEY = 64, 8, 7, 8, 150000, "libero_spatial_no_noops"
HEAD = f"action_head--{STEP}_checkpoint.pt"
TASKS = ["pick up the black bowl and place it on the plate", "open the top drawer", "put the bowl on the stove"]
STATS = {"action": {"q01": [-0.7, -0.8, -0.9, -0.1, -0.2, -0.3, -1.0], "q99": [0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 1.0],
                    "mask": [True] * 6 + [False], "mean": [0.0] * 7},
         "proprio": {"q01": [-0.2, -0.3, 0.0, 2.0, -1.0, -0.5, 0.0, -0.04],
                     "q99": [0.2, 0.3, 1.2, 3.3, 1.0, 0.5, 0.04, 0.0]},
         "num_transitions": 100}


def observations(b: int, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations(rng.integers(0, 256, (b, S, S, 3), dtype=np.uint8),
                        rng.normal(0, 0.3, (b, P)).astype(np.float32), [TASKS[i % 3] for i in range(b)])


def randomise(model: OFTPolicy, seed: int, scale: float = 0.05) -> None:
    """Move every publishable tensor off its init (LoRA B is zero at init)."""
    g = torch.Generator().manual_seed(seed)
    model.load_weights({k: v + scale * torch.randn(v.shape, generator=g) for k, v in model.publishable_state().items()})


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[OFTPolicy, pathlib.Path]:
    """A tiny model with trained-looking LoRA and heads and LIBERO-like statistics, saved."""
    torch.manual_seed(0)
    model = OFTPolicy.build(image_size=S, lora_rank=8)
    randomise(model, 1)
    model.statistics = Statistics.parse({KEY: STATS}, KEY, pathlib.Path("stats"), A, P)
    path = tmp_path_factory.mktemp("oft")
    model.save_pretrained(path, step=STEP)
    return model, path


@pytest.fixture()
def copy(saved, tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(saved[1], tmp_path / "ckpt"))


def test_save_load_round_trip_gives_the_same_chunks(saved):
    model, path = saved
    loaded = models.load(path, role="policy")
    assert isinstance(loaded, OFTPolicy) and loaded.step == STEP and loaded.spec == model.spec
    assert loaded.spec == models.Spec("policy", "openvla-oft", "openvla-oft", S, K, A, P)
    obs = observations(3)
    before, after = model.act(obs, True), loaded.act(obs, True)
    np.testing.assert_allclose(after.loc, before.loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.scale, before.scale, rtol=1e-5, atol=1e-7)
    # env units: loc of the unmasked gripper dim is the head's own output; b scales by (q99 - q01) / 2
    loc, b = loaded(*(torch.from_numpy(x) for x in (obs.frames, obs.proprio)), obs.instructions)
    half = (np.array(STATS["action"]["q99"]) - STATS["action"]["q01"]) / 2
    np.testing.assert_allclose(after.scale[..., :6], b.detach().numpy()[..., :6] * half[:6], rtol=1e-5)
    np.testing.assert_allclose(after.loc[..., 6], loc.detach().numpy()[..., 6], rtol=1e-5, atol=1e-6)


def test_the_directory_has_oft_names_and_keys(saved):
    path = saved[1]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", HEAD,
                 f"proprio_projector--{STEP}_checkpoint.pt", f"scale_head--{STEP}_checkpoint.pt",
                 "dataset_statistics.json", "worldenv.json", "lora_adapter/adapter_config.json",
                 "lora_adapter/adapter_model.safetensors"):
        assert (path / name).is_file(), name
    head = torch.load(path / HEAD, weights_only=True)
    assert {"model.fc1.weight", "model.layer_norm1.weight", "model.mlp_resnet_blocks.1.ffn.1.weight",
            "model.layer_norm2.bias", "model.fc2.weight"} <= set(head)
    assert head["model.fc1.weight"].shape == (32, 32 * A)     # input llm_dim * A, hidden llm_dim (tiny: 32)
    assert set(torch.load(path / f"proprio_projector--{STEP}_checkpoint.pt", weights_only=True)) == {
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert json.loads((path / "config.json").read_text())["model_type"] == "llava"
    assert json.loads((path / "dataset_statistics.json").read_text()) == {KEY: STATS}
    marker = json.loads((path / "worldenv.json").read_text())
    assert marker["arch"] == "openvla-oft" and marker["unnorm_key"] == KEY and marker["lora_rank"] == 8
    adapter = json.loads((path / "lora_adapter/adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"}


def _drop_stats(path):
    (path / "dataset_statistics.json").unlink()


def _rename_key(path):
    state = torch.load(path / HEAD, weights_only=True)
    state["model.fc1.weights"] = state.pop("model.fc1.weight")
    torch.save(state, path / HEAD)


def _short_stats(path):
    stats = {KEY: {**STATS, "action": {**STATS["action"], "q01": STATS["action"]["q01"][:6]}}}
    (path / "dataset_statistics.json").write_text(json.dumps(stats))


def _short_proprio_mask(path):
    stats = {KEY: {**STATS, "proprio": {**STATS["proprio"], "mask": [True] * 7}}}
    (path / "dataset_statistics.json").write_text(json.dumps(stats))


def _other_key(path):
    marker = json.loads((path / "worldenv.json").read_text())
    (path / "worldenv.json").write_text(json.dumps({**marker, "unnorm_key": "bridge_orig"}))


def _drop_adapter_weights(path):
    (path / "lora_adapter/adapter_model.safetensors").unlink()


@pytest.mark.parametrize("damage, error, words", [
    (_drop_stats, FileNotFoundError, ["dataset_statistics.json"]),
    (lambda p: (p / HEAD).unlink(), FileNotFoundError, ["action head", "action_head"]),
    (lambda p: (p / f"proprio_projector--{STEP}_checkpoint.pt").unlink(), FileNotFoundError, ["proprio_projector"]),
    (lambda p: (p / f"scale_head--{STEP}_checkpoint.pt").unlink(), FileNotFoundError, ["scale_head"]),
    (_rename_key, ValueError, [HEAD, "'model.fc1.weight'"]),
    (_short_stats, ValueError, ["dataset_statistics.json", "'q01'", "6 values", "action_dim"]),
    (_short_proprio_mask, ValueError, ["'proprio'", "'mask'", "proprio_dim"]),
    (_other_key, ValueError, ["'bridge_orig'", KEY]),
    (_drop_adapter_weights, FileNotFoundError, ["adapter_model.safetensors"]),
])
def test_a_damaged_directory_is_refused_naming_the_file_and_key(copy, damage, error, words):
    damage(copy)
    with pytest.raises(error) as info:
        models.load(copy, role="policy")
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_ddp_prefixed_head_files_load(saved, copy):
    state = torch.load(copy / HEAD, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, copy / HEAD)
    obs = observations(2)
    np.testing.assert_allclose(models.load(copy).act(obs, True).loc, saved[0].act(obs, True).loc, rtol=1e-5, atol=1e-6)


def test_act_log_probs_are_log_prob_and_seeds_fix_each_item(saved):
    model, obs = saved[0], observations(3)
    drawn = model.act(obs, [False, True, False], seeds=[3, 4, 5])
    np.testing.assert_array_equal(drawn.actions[1], drawn.loc[1])
    with torch.no_grad():
        scored = model.log_prob(obs, torch.from_numpy(drawn.actions)).numpy()
    np.testing.assert_allclose(scored, drawn.log_probs, rtol=1e-6)
    again = model.act(obs, False, seeds=[3, 4, 5])
    np.testing.assert_array_equal(again.actions[[0, 2]], drawn.actions[[0, 2]])
    alone = model.act(Observations(obs.frames[2:], obs.proprio[2:], obs.instructions[2:]), False, seeds=[5])
    np.testing.assert_allclose(alone.actions[0], drawn.actions[2], rtol=1e-5, atol=1e-5)   # padding-free slots
    model_scale = model.act(obs, True).scale
    assert not np.allclose(model.act(obs, False, seeds=[9, 9, 9]).actions, drawn.actions) and (model_scale > 0).all()


def test_reset_scale_sets_b_in_the_normalised_space(saved):
    model = models.load(saved[1])
    model.reset_scale(0.1)
    scale = model.act(observations(2), True).scale
    half = (np.array(STATS["action"]["q99"]) - STATS["action"]["q01"]) / 2
    np.testing.assert_allclose(scale, np.broadcast_to(0.1 * np.append(half[:6], 1.0), scale.shape), rtol=1e-5)
    with pytest.raises(ValueError, match="exploration scale"):
        model.reset_scale(1e-4)


def test_a_lora_step_changes_only_publishable_tensors_which_round_trip(saved):
    model, obs = models.load(saved[1]), observations(2)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model._trainable().values()}
    publishable = {t.data_ptr() for t in model.publishable_state().values()}
    assert publishable == {p.data_ptr() for p in model.parameters() if p.requires_grad}
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if "lora_" not in n)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    actions = torch.from_numpy(model.act(obs, False, seeds=[1, 2]).actions)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    (-model.log_prob(obs, actions).mean()).backward()
    optimiser.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any("lora_B" in n for n in changed) and any(n.startswith("action_head.") for n in changed)
    assert all(dict(model.named_parameters())[n].requires_grad for n in changed)
    second = models.load(saved[1])
    assert not np.allclose(second.act(obs, True).loc, model.act(obs, True).loc)
    assert second.load_weights(model.publishable_state()) == len(model.publishable_state())
    np.testing.assert_array_equal(second.act(obs, True).loc, model.act(obs, True).loc)
    state = model.publishable_state()
    with pytest.raises(ValueError, match="missing key 'scale_head.bias'"):
        second.check_weights({k: v for k, v in state.items() if k != "scale_head.bias"})
    with pytest.raises(ValueError, match="'lora.layers.0.self_attn.q_proj.lora_A.weight' has shape"):
        second.check_weights({**state, "lora.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 2)})


def test_served_act_and_load_weights_over_grpc(saved):
    model, obs = models.load(saved[1]), observations(3, seed=7)
    with serving("policy", model) as server, PolicyClient(server.address) as client:
        assert client.spec.extra["arch"] == "openvla-oft" and client.spec.image_size == S
        served = client.act(obs.frames, obs.proprio, obs.instructions, True)
        np.testing.assert_array_equal(served.loc, model.act(obs, True).loc)
        trained = models.load(saved[1])
        randomise(trained, 2)
        version = client.load_weights(weights_bytes(trained), note="a LoRA + heads update")
        assert version >= 1
        served = client.act(obs.frames, obs.proprio, obs.instructions, True)
        np.testing.assert_array_equal(served.loc, trained.act(obs, True).loc)


def test_no_lora_and_bfloat16_and_the_full_size_on_the_meta_device(tmp_path):
    torch.manual_seed(0)
    model = OFTPolicy.build(dtype="bfloat16", image_size=S, lora_rank=0)
    assert model.dtype == torch.bfloat16 and not any(k.startswith("lora.") for k in model.publishable_state())
    chunks = model.act(observations(2), True)
    assert chunks.loc.dtype == np.float32 and np.isfinite(chunks.log_probs).all()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "lora_adapter").exists() and models.load(tmp_path, dtype="bfloat16").dtype == torch.bfloat16
    full = OFTPolicy.build(device="meta", dtype="bfloat16", size="full")    # sizes only: nothing allocated
    assert full.device.type == "meta" and full.dtype == torch.bfloat16
    assert 7.0e9 < sum(p.numel() for p in full.parameters()) < 7.8e9
    assert oft_policy.SIZES["full"]["text"]["hidden_size"] == 4096
