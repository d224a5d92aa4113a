"""The "video-unet" world model (tiny size): checkpoint layout and its refusals, latent memory
banks, seeding, training, bfloat16, and serving over gRPC."""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from servers import serving
from worldenv import models
from worldenv.client.clients import WorldModelClient
from worldenv.models.roles import StartStates
from worldenv.models.video_world_model import LatentBank, VideoWorldModel

S, K, A, P, T = 32, 8, 7, 8, 4  # the tiny size: 32 px frames, latents 4 x 8 x 8, history 4
LAYOUT = ["action_encoder.safetensors", "proprio_head.safetensors", "scheduler/scheduler_config.json",
          "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
          "vae/diffusion_pytorch_model.safetensors", "worldenv.json"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def frames(*shape: int, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(0, 256, (*shape, S, S, 3), dtype=np.uint8)


def proprio(b: int, seed: int = 1) -> np.ndarray:
    return rng(seed).standard_normal((b, P)).astype(np.float32)


def actions(b: int, seed: int = 2) -> np.ndarray:
    return rng(seed).uniform(-1.5, 1.5, (b, K, A)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> VideoWorldModel:
    torch.manual_seed(0)
    return VideoWorldModel.build(size="tiny")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("video-unet")
    model.save_pretrained(path)
    return path


# ---- checkpoint ------------------------------------------------------------------------

def test_save_load_round_trip_gives_the_same_predictions(model, saved):
    assert sorted(str(f.relative_to(saved)) for f in saved.rglob("*") if f.is_file()) == LAYOUT
    marker = json.loads((saved / "worldenv.json").read_text())
    assert (marker["role"], marker["arch"], marker["size"], marker["image_size"]) == ("world_model", "video-unet",
                                                                                     "tiny", S)
    loaded = models.load(saved, role="world_model")
    assert isinstance(loaded, VideoWorldModel) and loaded.config == model.config
    history, p, a = frames(3, T), proprio(3), actions(3)
    ours = model.predict(history, p, a, generator=torch.Generator().manual_seed(5))
    theirs = loaded.predict(history, p, a, generator=torch.Generator().manual_seed(5))
    for x, y in zip(ours, theirs):
        np.testing.assert_array_equal(x, y)
    assert ours[0].shape == (3, S, S, 3) and ours[0].dtype == np.uint8
    assert ours[1].shape == (3, P) and ours[1].dtype == np.float32
    other = model.predict(history, p, a, generator=torch.Generator().manual_seed(6))[0]
    assert not np.array_equal(other, ours[0]), "the generator seeds the sampler"


def _rename_key(file: pathlib.Path, old: str, new: str) -> None:
    state = load_file(str(file))
    state[new] = state.pop(old)
    save_file(state, str(file))


def _edit_json(file: pathlib.Path, **fields) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **fields}))


REFUSALS = {
    "no unet config": (lambda p: (p / "unet/config.json").unlink(), FileNotFoundError,
                       r"unet: the U-Net config is missing: no config.json"),
    "no vae weights": (lambda p: (p / "vae/diffusion_pytorch_model.safetensors").unlink(), FileNotFoundError,
                       r"vae: the VAE weights is missing: no file diffusion_pytorch_model"),
    "no scheduler": (lambda p: shutil.rmtree(p / "scheduler"), FileNotFoundError,
                     r"scheduler config is missing: no scheduler_config.json"),
    "no action encoder": (lambda p: (p / "action_encoder.safetensors").unlink(), FileNotFoundError,
                          r"action encoder weights is missing: no file action_encoder"),
    "no proprio head": (lambda p: (p / "proprio_head.safetensors").unlink(), FileNotFoundError,
                        r"proprio head weights is missing: no file proprio_head"),
    "renamed head key": (lambda p: _rename_key(p / "proprio_head.safetensors", "0.weight", "fc.weight"), ValueError,
                         r"proprio_head.safetensors: weights: missing key '0.weight'"),
    "renamed unet key": (lambda p: _rename_key(p / "unet/diffusion_pytorch_model.safetensors", "conv_in.weight",
                                               "input.weight"), ValueError,
                         r"diffusion_pytorch_model.safetensors: weights: missing key 'conv_in.weight'"),
    "unet in_channels": (lambda p: _edit_json(p / "unet/config.json", in_channels=8), ValueError,
                         r"unet/config.json: in_channels is 8, expected 10 \(noisy latent 4 \+ context latent 4"),
    "cross-attention width": (lambda p: _edit_json(p / "worldenv.json", action_encoder_dim=48), ValueError,
                              r"unet/config.json: cross_attention_dim is 32, expected 48 \(worldenv.json "
                              r"action_encoder_dim"),
    "unknown option": (lambda p: _edit_json(p / "worldenv.json", history_frames=3), ValueError, r"history_frames"),
    "no marker": (lambda p: (p / "worldenv.json").unlink(), FileNotFoundError, r"worldenv.json"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_broken_checkpoint_is_refused_naming_the_file_key_or_field(saved, tmp_path, case):
    break_it, error, message = REFUSALS[case]
    path = tmp_path / "ckpt"
    shutil.copytree(saved, path)
    break_it(path)
    with pytest.raises(error, match=message):
        if case == "no marker":
            VideoWorldModel.from_pretrained(path)
        else:
            models.load(path, role="world_model")


# ---- the role: latent memory banks ---------------------------------------------------------

def test_start_keeps_latents_padded_and_step_rolls_the_history(model):
    start = StartStates(frames(2, 2), proprio(2), ["a", "b"])
    states = model.start(start, seeds=[1, 2])
    assert all(isinstance(s, LatentBank) for s in states)
    latents = states[0].latents
    assert isinstance(latents, torch.Tensor) and latents.shape == (T, 4, 8, 8)
    assert latents.dtype == model.dtype and latents.device == model.device
    encoded = model.encode(torch.from_numpy(start.frames[0]))                          # (2, 4, 8, 8)
    for i, j in ((0, 0), (1, 0), (2, 0), (3, 1)):                                      # padded with the oldest
        torch.testing.assert_close(latents[i], encoded[j], rtol=1e-5, atol=1e-6)
    prediction, after = model.step(states, actions(2))
    assert prediction.frames.shape == (2, S, S, 3) and prediction.frames.dtype == np.uint8
    assert prediction.proprio.shape == (2, P) and prediction.proprio.dtype == np.float32
    assert [s.steps for s in after] == [1, 1] and [s.seed for s in after] == [1, 2]
    torch.testing.assert_close(after[0].latents[:-1], latents[1:], rtol=0, atol=0)
    np.testing.assert_array_equal(after[0].proprio, prediction.proprio[0])
    # The bank keeps the sampled latent; decoding it gives the returned frame (decoded alone here,
    # in a batch of 2 there: the CPU kernels may round one uint8 level apart between batch sizes).
    alone = model.decode(after[1].latents[-1:])[0].astype(np.int16)
    assert np.abs(alone - prediction.frames[1]).max() <= 1
    single = model.start(StartStates(frames(1), proprio(1), ["a"]))[0]
    assert single.latents.shape == (T, 4, 8, 8) and bool((single.latents == single.latents[:1]).all())
    longer = model.start(StartStates(frames(1, T + 2), proprio(1), ["a"]), seeds=[0])[0]
    latest = model.encode(torch.from_numpy(frames(1, T + 2)[0, -T:]))
    torch.testing.assert_close(longer.latents, latest, rtol=1e-5, atol=1e-6)


def test_a_step_depends_on_the_episode_seed_alone(model):
    start = StartStates(frames(3, 1), proprio(3), ["a"] * 3)
    chunk = actions(3)
    batched, _ = model.step(model.start(start, seeds=[7, 8, 9]), chunk)
    again, _ = model.step(model.start(start, seeds=[7, 8, 9]), chunk)
    np.testing.assert_array_equal(batched.frames, again.frames)
    alone, _ = model.step(model.start(StartStates(start.frames[1:2], start.proprio[1:2], ["a"]), seeds=[8]),
                          chunk[1:2])
    assert np.abs(alone.frames[0].astype(int) - batched.frames[1]).max() <= 1, "not on the rest of the batch"
    reseeded, _ = model.step(model.start(start, seeds=[7, 1, 9]), chunk)
    assert not np.array_equal(reseeded.frames[1], batched.frames[1])


def test_spec_and_bad_inputs_are_named(model):
    spec = model.spec
    assert (spec.role, spec.arch, spec.image_size, spec.chunk_length, spec.action_dim, spec.proprio_dim) == (
        "world_model", "video-unet", S, K, A, P)
    assert spec.extra == {"history": T, "mode": "diffusion"}
    with pytest.raises(ValueError, match="frames"):
        model.start(StartStates(frames(2)[:, :16], proprio(2), ["a", "b"]))
    states = model.start(StartStates(frames(2), proprio(2), ["a", "b"]))
    with pytest.raises(ValueError, match="actions"):
        model.step(states, actions(3))


def test_bfloat16_keeps_latents_in_bfloat16_and_proprio_in_float32():
    torch.manual_seed(0)
    model = VideoWorldModel.build(dtype="bfloat16", size="tiny")
    assert torch.get_default_dtype() == torch.float32, "the default dtype is restored"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    states = model.start(StartStates(frames(2, 2), proprio(2), ["a", "b"]))
    assert states[0].latents.dtype == torch.bfloat16
    prediction, states = model.step(states, actions(2))
    assert prediction.frames.dtype == np.uint8 and prediction.proprio.dtype == np.float32
    assert states[0].latents.dtype == torch.bfloat16 and np.isfinite(prediction.proprio).all()


# ---- training and weights ------------------------------------------------------------------

def test_the_loss_trains_the_unet_and_leaves_the_vae_frozen():
    torch.manual_seed(0)
    model = VideoWorldModel.build(size="tiny").train()
    batch = (torch.from_numpy(frames(2, T)), torch.from_numpy(proprio(2)), torch.from_numpy(actions(2)),
             torch.from_numpy(frames(2, seed=3)), torch.from_numpy(proprio(2, seed=4)))
    losses = model.forward_train(*batch)
    assert set(losses) == {"frame", "proprio", "loss"} and all(torch.isfinite(v) for v in losses.values())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.1)
    model.loss(*batch).backward()
    optimizer.step()
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("unet."))
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("vae."))
    assert all(p.grad is None for p in model.vae.parameters())


def test_publishable_state_is_the_trained_parts_and_loads_strictly(model):
    state = model.publishable_state()
    assert {k.split(".", 1)[0] for k in state} == {"unet", "action_encoder", "proprio_head"}
    torch.manual_seed(1)
    other = VideoWorldModel.build(size="tiny")
    assert other.load_weights(state) == len(state)
    assert all(torch.equal(v, other.publishable_state()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="unexpected key 'vae.encoder.conv_in.weight'"):
        other.check_weights({**state, "vae.encoder.conv_in.weight": model.vae.encoder.conv_in.weight})
    with pytest.raises(ValueError, match="missing key 'action_encoder.position'"):
        other.check_weights({k: v for k, v in state.items() if k != "action_encoder.position"})


# ---- served ----------------------------------------------------------------------------

def test_served_open_and_step_match_in_process_under_the_same_seed(model):
    """Open draws each session's noise seed from torch's global RNG: seeding it the same way
    before Open and before `start` makes the served and in-process steps equal."""
    start = StartStates(frames(3, 2), proprio(3), ["a", "b", "c"])
    chunks = [actions(3, seed=s) for s in (10, 11)]
    with serving("world-model", model) as server, WorldModelClient(server.address) as client:
        assert client.spec.model_name == "video-unet"
        torch.manual_seed(123)
        ids = client.open(start.frames, start.proprio, start.instructions)
        torch.manual_seed(123)
        states = model.start(start)
        for chunk in chunks:
            served = client.step(ids, chunk)
            local, states = model.step(states, chunk)
            assert served.frames.shape == (3, S, S, 3) and served.frames.dtype == np.uint8
            np.testing.assert_array_equal(served.frames, local.frames)
            np.testing.assert_array_equal(served.proprio, local.proprio)


# ---- the larger presets, on the meta device (shapes only, nothing allocated) -----------------

@pytest.mark.parametrize("size, unet_millions", [("small", (20, 60)), ("full", (1400, 1600))])
def test_the_larger_presets_fit_together_on_the_meta_device(size, unet_millions):
    model = VideoWorldModel.build(device="meta", dtype="bfloat16", size=size)
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"meta"} and {t.dtype for t in model.parameters()} == {torch.bfloat16}
    low, high = unet_millions
    assert low < sum(p.numel() for p in model.unet.parameters()) / 1e6 < high
    assert model.config.image_size == 256 and model.latent_size == 32
    meta = {"device": "meta", "dtype": torch.bfloat16}
    with torch.no_grad():
        latents = model.vae.encode(torch.zeros(2, 3, 256, 256, **meta)).latent_dist.mode()
        assert latents.shape == (2, 4, 32, 32)
        tokens = torch.zeros(2, K, model.config.action_encoder_dim, **meta)
        out = model.denoise(latents, torch.tensor(999, device="meta"), torch.zeros(2, T, 4, 32, 32, **meta),
                            torch.zeros(2, 1, 32, 32, **meta), tokens)
        assert out.shape == (2, 4, 32, 32)
        assert model.vae.decode(out).sample.shape == (2, 3, 256, 256)
