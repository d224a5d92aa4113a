"""The llava-reward reflector: a tiny LLaVA built from real transformers config classes, saved in
its layout and loaded back; refusals that name the file and key; a frozen backbone under the
reflector's BCE; frame sampling; incremental judging; serving over gRPC; `worldenv train reflector
--init` on toy episodes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import toy_episodes
from servers import serving
from worldenv import models
from worldenv.client.clients import ReflectorClient
from worldenv.data import chunks
from worldenv.models.llava_reflector import HEAD_FILE, LlavaReflector
from worldenv.models.reflector import sample_indices
from worldenv.train import reflector as train_reflector

RNG = np.random.default_rng(7)
INSTRUCTIONS = ["put the bowl on the plate", "open the top drawer of the cabinet and put the cup in it", "pick"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model (64 px frames, 4 sampled frames) and its checkpoint directory."""
    torch.manual_seed(0)
    model = LlavaReflector.build(size="tiny", max_frames=4)
    path = tmp_path_factory.mktemp("llava") / "tiny"
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy episodes (32 px) and a tiny model for them, saved: (episodes, data file, checkpoint)."""
    data = toy_episodes.write(tmp_path_factory.mktemp("toy"))
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("llava") / "tiny32"
    LlavaReflector.build(size="tiny", image_size=32, max_frames=8).save_pretrained(path)
    return chunks.load([data]), data, path


def videos(b: int, t: int, side: int = 64) -> np.ndarray:
    return RNG.integers(0, 256, (b, t, side, side, 3), dtype=np.uint8)


def test_saved_and_loaded_it_judges_the_same(saved):
    model, path = saved
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
            HEAD_FILE, "worldenv.json"} <= {f.name for f in path.iterdir()}
    marker = json.loads((path / "worldenv.json").read_text())
    assert marker["role"] == "reflector" and marker["arch"] == "llava-reward" and marker["max_frames"] == 4
    assert set(load_file(str(path / HEAD_FILE))) == {"norm.weight", "norm.bias", "fc1.weight", "fc1.bias",
                                                      "fc2.weight", "fc2.bias"}
    loaded = models.load(path, role="reflector")
    assert isinstance(loaded, models.Reflector) and loaded.spec == model.spec
    assert loaded.spec.extra == {"max_frames": 4} and loaded.spec.image_size == 64
    clip = videos(3, 6)
    p = model.judge(clip, INSTRUCTIONS)
    assert p.shape == (3,) and p.dtype == np.float32 and ((p > 0) & (p < 1)).all()
    np.testing.assert_array_equal(loaded.judge(clip, INSTRUCTIONS), p)
    # the longest instruction alone: the others' padding changed nothing
    np.testing.assert_allclose(model.judge(clip[1:2], INSTRUCTIONS[1:2]), p[1:2], rtol=1e-5, atol=1e-6)


def _drop(name):
    return lambda path: (path / name).unlink()


def _edit_marker(**changes):
    def edit(path):
        marker = json.loads((path / "worldenv.json").read_text())
        for key, value in changes.items():
            marker.pop(key) if value is None else marker.__setitem__(key, value)
        (path / "worldenv.json").write_text(json.dumps(marker))
    return edit


def _edit_head(rename=None, drop=None):
    def edit(path):
        state = load_file(str(path / HEAD_FILE))
        if rename:
            state["fc9.weight"] = state.pop(rename)
        if drop:
            state.pop(drop)
        save_file(state, str(path / HEAD_FILE))
    return edit


def _edit_processor(path):
    config = json.loads((path / "preprocessor_config.json").read_text())
    config["crop_size"] = {"height": 30, "width": 30}
    (path / "preprocessor_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("break_it, error, match", [
    (_drop(HEAD_FILE), FileNotFoundError, "reward head is missing: no file reward_head"),
    (_edit_head(rename="fc1.weight"), ValueError, "reward_head.safetensors: weights: missing key 'fc1.weight'"),
    (_edit_head(drop="norm.bias"), ValueError, "reward_head.safetensors: weights: missing key 'norm.bias'"),
    (_drop("worldenv.json"), ValueError, "config.json: field 'role' missing.* in worldenv.json"),
    (_edit_marker(tokens_per_frame=None), ValueError, "worldenv.json: tokens_per_frame: Field required"),
    (_edit_marker(max_frames="many"), ValueError, "worldenv.json: max_frames: Input should be a valid integer"),
    (_edit_marker(tokens_per_frame=3), ValueError, "worldenv.json: tokens_per_frame: .*square"),
    (_edit_marker(tokens_per_frame=25), ValueError, "worldenv.json: tokens_per_frame 25 exceeds the 16 patches"),
    (_drop("tokenizer.json"), FileNotFoundError, "tokenizer is missing: no tokenizer.json or tokenizer.model"),
    (_drop("tokenizer_config.json"), FileNotFoundError, "no tokenizer_config.json"),
    (_drop("preprocessor_config.json"), FileNotFoundError, "no preprocessor_config.json"),
    (_edit_processor, ValueError, "preprocessor_config.json: images come out 30x30, the vision tower"),
])
def test_a_broken_checkpoint_is_refused_naming_file_and_key(saved, tmp_path, break_it, error, match):
    path = shutil.copytree(saved[1], tmp_path / "copy")
    break_it(path)
    with pytest.raises(error, match=match):
        models.load(path, role="reflector")


def test_from_pretrained_without_worldenv_json_says_what_to_write(saved, tmp_path):
    path = shutil.copytree(saved[1], tmp_path / "copy")
    (path / "worldenv.json").unlink()
    with pytest.raises(FileNotFoundError, match="no worldenv.json; .* names its role and arch there"):
        LlavaReflector.from_pretrained(path)


def test_load_weights_is_the_head_only_and_strict(saved):
    model = saved[0]
    state = model.publishable_state()
    assert set(state) == {f"{m}.{p}" for m in ("norm", "fc1", "fc2") for p in ("weight", "bias")}
    with pytest.raises(ValueError, match="unexpected key 'backbone.lm_head.weight'"):
        model.load_weights({**state, "backbone.lm_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="key 'fc2.weight' has shape"):
        model.check_weights({**state, "fc2.weight": torch.zeros(2, 2)})
    assert model.load_weights({k: v.clone() for k, v in state.items()}) == 6


def test_the_backbone_is_frozen_and_a_bce_step_changes_only_the_head(toy):
    episodes, _, path = toy
    model = models.load(path, role="reflector")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        [f"reward_head.{k}" for k in model.publishable_state()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert model.reward_head.training and not model.backbone.training and not model.backbone.model.vision_tower.training
    out = train_reflector.losses(model, episodes, [(0, 1, None), (0, 3, None), (9, 2, None), (9, 4, None)], pos_weight=2.0)
    out["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"reward_head.{k}" for k in model.publishable_state()}


def test_sampling_keeps_max_frames_indices_with_the_last_frame(saved):
    model = saved[0]  # max_frames 4
    idx = sample_indices(32, 4)
    assert idx.tolist() == [0, 10, 21, 31]
    assert len(sample_indices(32, 32).unique()) == 32 and sample_indices(3, 32).tolist() == [0, 1, 2]
    for m in (8, 32):
        picked = sample_indices(32, m)
        assert len(picked.unique()) == m and picked[-1] == 31 and (picked.diff() > 0).all()
    clip = videos(2, 32)
    sampled = clip[:, idx.numpy()]
    np.testing.assert_array_equal(model.judge(clip, INSTRUCTIONS[:2]), model.judge(sampled, INSTRUCTIONS[:2]))


def test_incremental_observe_equals_judging_the_whole_video(saved):
    model, clip = saved[0], videos(2, 7)
    states = model.start(clip[:, 0], INSTRUCTIONS[:2])
    for t in range(1, 7):
        p, states = model.observe(states, clip[:, t])
        np.testing.assert_array_equal(p, model.judge(clip[:, :t + 1], INSTRUCTIONS[:2]))
    with pytest.raises(ValueError, match="frames: expected"):
        model.start(clip[:, 0, :32], INSTRUCTIONS[:2])


def test_served_judge_and_sessions_equal_the_in_process_model(saved):
    model, clip = saved[0], videos(3, 5)
    with serving("reflector", model) as server, ReflectorClient(server.address) as client:
        assert client.spec.extra["arch"] == "llava-reward" and client.spec.image_size == 64
        np.testing.assert_array_equal(client.judge(clip, INSTRUCTIONS).p_done, model.judge(clip, INSTRUCTIONS))
        ids, states = client.open(clip[:, 0], INSTRUCTIONS), model.start(clip[:, 0], INSTRUCTIONS)
        for t in range(1, 5):
            served = client.observe(ids, clip[:, t])
            local, states = model.observe(states, clip[:, t])
            np.testing.assert_array_equal(served.p_done, local)
            assert served.lengths == [t + 1] * 3
        assert client.close_sessions(ids) == 3 and len(server.service.sessions) == 0


def test_worldenv_train_reflector_init_trains_the_head_only(toy, tmp_path):
    from worldenv import cli

    _, data, path = toy
    out = tmp_path / "run"
    assert cli.main(["train", "reflector", "--data", str(data), "--out", str(out), "--init", str(path), "--steps", "4",
                     "--eval-every", "2", "--batch-size", "8", "--warmup", "0", "--lr", "1e-2", "--patience", "0"]) == 0
    start, trained = models.load(path), models.load(out / "model", role="reflector")
    assert trained.config == start.config
    for key, value in start.backbone.state_dict().items():
        assert torch.equal(trained.backbone.state_dict()[key], value), key
    assert any(not torch.equal(v, trained.publishable_state()[k]) for k, v in start.publishable_state().items())
    resume = torch.load(out / "trainer_state.pt", weights_only=False)
    assert set(resume["model"]) == set(start.publishable_state()), "the resume state holds the head only"


def test_built_on_the_target_device_and_dtype():
    torch.manual_seed(0)
    half = LlavaReflector.build("cpu", "bfloat16", size="tiny")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and torch.get_default_dtype() == torch.float32
    assert half.judge(videos(2, 3), INSTRUCTIONS[:2]).dtype == np.float32
    full = LlavaReflector.build("meta", "bfloat16", size="full")  # LLaVA-1.5-7B's shapes, nothing allocated
    assert {(p.device.type, p.dtype) for p in full.parameters()} == {("meta", torch.bfloat16)}
    assert 7.0e9 < sum(p.numel() for p in full.parameters()) < 7.1e9


def test_a_fresh_head_on_a_llava_directory_without_one(saved, tmp_path):
    path = shutil.copytree(saved[1], tmp_path / "llava")
    (path / HEAD_FILE).unlink()
    (path / "worldenv.json").unlink()
    model = LlavaReflector.from_backbone(path, size="tiny", max_frames=4, head_hidden=8)
    assert model.config.image_size == 64 and model.config.tokens_per_frame == 4, "the tiny preset's"
    model.save_pretrained(tmp_path / "ours")
    clip = videos(2, 3)
    loaded = models.load(tmp_path / "ours", role="reflector")
    np.testing.assert_array_equal(loaded.judge(clip, INSTRUCTIONS[:2]), model.judge(clip, INSTRUCTIONS[:2]))


def test_frame_tokens_in_slices_equal_one_pass(saved, monkeypatch):
    """More frames than FRAMES_PER_PASS run in slices (CUDA's pooling indexes with int32 and a
    full-size B = 32 request overflowed it); the tokens are those of one pass."""
    from worldenv.models import llava_reflector
    model, _ = saved
    pixels = model.pixels(torch.as_tensor(videos(2, 5)).flatten(0, 1), model.dtype)   # (10, 3, S, S)
    with torch.no_grad():
        whole = model.frame_tokens(pixels)
        monkeypatch.setattr(llava_reflector, "FRAMES_PER_PASS", 3)
        sliced = model.frame_tokens(pixels)
    assert sliced.shape == whole.shape and sliced.shape[0] == 10
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)
