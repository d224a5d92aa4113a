"""OpenVLA-OFT's released layout (OpenVLA's Prismatic directory + OFT's head files) served by the
openvla-oft arch with our scale head: a tiny checkpoint written with OpenVLA's key names and a
LoRA adapter over every Linear, the vision tower included -> `worldenv models attach-head`
-> `worldenv models inspect` -> the served Act equals the in-process one."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import prismatic_checkpoint as tiny
from worldenv import cli, models
from worldenv.client.clients import PolicyClient
from worldenv.config import ServeConfig
from worldenv.models.roles import Observations
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

OPTIONS = {"unnorm_key": tiny.UNNORM_KEY, "image_size": 32, "lora_rank": 4, "vision_heads": [2, 2]}
TASKS = ["pick up the black bowl and place it on the plate", "open the top drawer"]


def observations(b: int, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations(rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8),
                        rng.normal(0, 0.2, (b, 8)).astype(np.float32), [TASKS[i % 2] for i in range(b)])


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> pathlib.Path:
    """The tiny directory as OFT releases it, completed with our head as a user would."""
    path = tiny.write(tmp_path_factory.mktemp("openvla_oft") / "ckpt")
    options = json.dumps(OPTIONS)
    assert cli.main(["models", "attach-head", str(path), "--arch", "openvla-oft", "--options", options]) == 0
    return path


def test_the_tiny_checkpoint_has_openvlas_file_and_key_names(released):
    weight_map = json.loads((released / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(tiny.OPENVLA_KEYS) <= set(weight_map) and len(set(weight_map.values())) > 1
    adapter = load_file(str(released / "lora_adapter" / "adapter_model.safetensors"))
    for key in ("vision_backbone.featurizer.blocks.0.attn.qkv", "vision_backbone.fused_featurizer.blocks.2.mlp.fc1",
                "projector.fc1", "language_model.model.layers.0.self_attn.q_proj"):
        assert f"base_model.model.{key}.lora_A.weight" in adapter, key
    assert (released / f"action_head--{tiny.STEP}_checkpoint.pt").is_file()
    assert (released / f"scale_head--{tiny.STEP}_checkpoint.pt").is_file()


def test_models_inspect_then_the_served_act_equals_the_in_process_one(released, capsys):
    capsys.readouterr()
    assert cli.main(["models", "inspect", str(released)]) == 0
    out = capsys.readouterr().out
    described = json.loads(out[out.index("{\n"):])          # after the weight-loading lines
    assert (described["role"], described["arch"], described["chunk_length"], described["action_dim"]) == \
        ("policy", "openvla-oft", 8, 7)
    model = models.load(released, role="policy")
    obs = observations(3)
    local = model.act(obs, deterministic=True)
    config = ServeConfig(host="127.0.0.1", checkpoint=str(released))       # the service loads the directory itself
    with RunningServer(create_service("policy", config), config, port=0) as server, \
            PolicyClient(server.address) as client:
        served = client.act(obs.frames, obs.proprio, obs.instructions, deterministic=True)
    np.testing.assert_allclose(served.loc, local.loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.scale, local.scale, rtol=1e-5, atol=1e-7)
    assert np.isfinite(local.loc).all() and local.loc.shape == (3, 8, 7)


def test_the_adapter_reaches_the_vision_tower_and_changes_the_actions(released, tmp_path):
    model = models.load(released, role="policy")
    qkv = model.backbone.vision_backbone.featurizer.blocks[0].attn.qkv
    assert hasattr(qkv, "lora_A") and any(k.startswith("lora.vision_backbone.") for k in model.publishable_state())
    bare = pathlib.Path(shutil.copytree(released, tmp_path / "bare"))
    shutil.rmtree(bare / "lora_adapter")                     # a fresh adapter instead: B = 0, the base VLA
    base = models.load(bare, role="policy")
    obs = observations(2, seed=1)
    assert not np.allclose(model.act(obs, True).loc, base.act(obs, True).loc, atol=1e-4)


def test_patch_features_are_the_second_to_last_blocks_as_openvla_reads_them(released):
    vla = models.load(released, role="policy").backbone
    pixels = torch.randn(2, 6, tiny.SIDE, tiny.SIDE)
    before = vla.vision_backbone(pixels)
    assert before.shape == (2, 16, 16 + 24)                   # 4x4 patches, DINOv2 then SigLIP widths
    with torch.no_grad():
        for featurizer in (vla.vision_backbone.featurizer, vla.vision_backbone.fused_featurizer):
            featurizer.blocks[-1].mlp.fc1.base_layer.weight.add_(1.0)   # the last block is never read
    torch.testing.assert_close(vla.vision_backbone(pixels), before)
    with torch.no_grad():
        vla.vision_backbone.featurizer.blocks[-2].mlp.fc1.base_layer.weight.add_(1.0)
    assert not torch.allclose(vla.vision_backbone(pixels), before)


def test_save_pretrained_keeps_the_prismatic_layout_and_the_chunks(released, tmp_path):
    model = models.load(released, role="policy")
    model.save_pretrained(tmp_path / "saved")
    again = models.load(tmp_path / "saved", role="policy")
    obs = observations(2)
    np.testing.assert_allclose(again.act(obs, True).loc, model.act(obs, True).loc, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "openvla"


def test_a_renamed_key_is_refused_by_name(released, tmp_path):
    path = pathlib.Path(shutil.copytree(released, tmp_path / "damaged"))
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = path / index["weight_map"]["projector.fc3.bias"]
    state = load_file(str(shard))
    state["projector.fc3.b"] = state.pop("projector.fc3.bias")
    save_file(state, str(shard))
    with pytest.raises(ValueError, match="projector.fc3"):
        models.load(path, role="policy")
