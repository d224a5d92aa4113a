"""The imagination fast paths give what the paths they replace gave: the reflector's cached
per-frame features the p_done of judging the whole clip again; the world model's floored action
map its frames bit for bit; the U-Net's inference blocks diffusers' outputs; the U-Net pass in
bfloat16 its frames within rounding; and `up`'s threads
where the work is, and a run's jobs enqueued at once."""
import copy

import numpy as np
import pytest
import torch

from worldenv import checkpoints, models
from worldenv.local import stack as local
from worldenv.models import unet_inference, videos, world_model
from worldenv.rl.queue import Job, RolloutQueue
from worldenv.data.start_bank import synthetic_bank

TASKS = ["pick up the alphabet soup and place it in the basket", "pick up the cream cheese and place it in the basket"]


def video(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reflector():
    return models.load(checkpoints.model_dir("reflector"), "reflector")


def test_cached_features_give_the_p_done_of_judging_the_clip(reflector):
    frames, texts = video(4, 13), [TASKS[i % 2] for i in range(4)]   # past max_frames: the clip is sampled
    cached = reflector.start(frames[:, 0], texts)
    whole = videos.start(frames[:, 0], texts)                         # the frames kept, the clip judged again
    for t in range(1, frames.shape[1]):
        p_cached, cached = reflector.observe(cached, frames[:, t])
        p_whole, whole = videos.observe(reflector.judge, whole, frames[:, t])
        np.testing.assert_allclose(p_cached, p_whole, rtol=0, atol=1e-6)
    assert [len(s.features) for s in cached] == [13] * 4 and cached[0].features[0].shape == (reflector.config.width,)


def test_cached_features_in_a_batch_of_uneven_videos(reflector):
    frames = video(2, 11, seed=1)
    long = reflector.start(frames[:1, 0], TASKS[:1])
    for t in range(1, 10):
        _, long = reflector.observe(long, frames[:1, t])
    fresh = reflector.start(frames[1:, 0], TASKS[1:])
    p_done, _ = reflector.observe([long[0], fresh[0]], frames[:, 10])
    expected = [reflector.judge(frames[:1], TASKS[:1])[0], reflector.judge(frames[1:, [0, 10]], TASKS[1:])[0]]
    np.testing.assert_allclose(p_done, expected, rtol=0, atol=1e-6)


def unfloored_map(path, config):
    """render_action_map as it was before its exponent was floored."""
    s, k = config.image_size, path.shape[1]
    uv = path @ path.new_tensor(config.map_matrix).T + path.new_tensor(config.map_offset)
    grid = (torch.arange(s, dtype=path.dtype) + 0.5) / s
    dc = (grid.view(1, 1, 1, s) - uv[..., 0, None, None]) ** 2
    dr = (grid.view(1, 1, s, 1) - uv[..., 1, None, None]) ** 2
    blobs = torch.exp(-(dc + dr) / (2 * config.marker_size ** 2))
    return (blobs * (torch.arange(1, k + 1, dtype=path.dtype) / k).view(1, k, 1, 1)).amax(dim=1, keepdim=True)


def test_floored_action_map_keeps_the_world_models_frames_bit_for_bit(monkeypatch):
    wm = models.load(checkpoints.model_dir("world_model"), "world_model")
    bank, rng = synthetic_bank(6), np.random.default_rng(0)
    history = np.stack([np.stack([f, f]) for f in bank.frames])                  # (B, T, S, S, 3)
    proprio = bank.proprio + rng.normal(0, 0.2, bank.proprio.shape).astype(np.float32)  # paths on and off the image
    actions = rng.uniform(-1, 1, (6, 8, 7)).astype(np.float32)
    path = world_model.eef_path(torch.from_numpy(proprio[:, :3]), torch.from_numpy(actions), wm.config.action_gain)
    floored, unfloored = world_model.render_action_map(path, wm.config), unfloored_map(path, wm.config)
    assert torch.equal(floored * 2.0 - 1.0, unfloored * 2.0 - 1.0) and (unfloored > 0.5).any()
    frames, next_proprio = wm.predict(history, proprio, actions)
    monkeypatch.setattr(world_model, "render_action_map", unfloored_map)
    before = wm.predict(history, proprio, actions)
    np.testing.assert_array_equal(frames, before[0])
    np.testing.assert_array_equal(next_proprio, before[1])


def test_up_gives_every_service_the_cores(monkeypatch, tmp_path):
    spawned = {}
    stack = local.Stack(local.StackConfig(home=tmp_path, free_ports=True), "redis://x", {}, {})
    monkeypatch.setattr(stack, "spawn", lambda name, argv: stack.processes.setdefault(name, spawned.setdefault(name, argv)))
    monkeypatch.setattr(local, "_wait_healthy", lambda *a, **k: None)
    local._start_services(stack)
    threads = {name: argv[argv.index("--threads") + 1] for name, argv in spawned.items() if "--threads" in argv}
    assert threads == {"world-model": "0", "reflector": "0", "policy": "0"}
    autocast = {name: argv[argv.index("--autocast") + 1] for name, argv in spawned.items() if "--autocast" in argv}
    assert autocast == {"world-model": "auto"}
    assert not any("--channels-last" in argv for argv in spawned.values())   # NCHW unless asked
    spawned.clear()
    stack.processes.clear()
    stack.config = local.StackConfig(home=tmp_path, free_ports=True, world_model_channels_last=True)
    local._start_services(stack)
    assert [name for name, argv in spawned.items() if "--channels-last" in argv] == ["world-model"]


@pytest.mark.parametrize("channels", [3, 16, 64, 200])
def test_the_wide_per_channel_add_is_the_broadcast_add_bit_for_bit(channels):
    x = torch.randn(4, channels, 16, 16)
    bias = torch.randn(4, channels)[:, :, None, None]
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            a, b = x.to(dtype).contiguous(memory_format=layout), bias.to(dtype)
            out = unet_inference.add_per_channel(a, b)
            assert torch.equal(out, a + b) and out.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("channels, size, rerouted", [(64, 16, True), (96, 16, True), (128, 16, False), (64, 32, False)])
def test_small_channels_last_group_norm_takes_the_contiguous_kernel_within_rounding(channels, size, rerouted):
    norm = unet_inference.InferenceGroupNorm(8, channels)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, channels, size, size).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out, native = norm(x), torch.nn.functional.group_norm(x, 8, norm.weight, norm.bias, norm.eps)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, torch.nn.functional.group_norm(x.contiguous(), 8, norm.weight, norm.bias, norm.eps)
                           if rerouted else native)
        torch.testing.assert_close(out.float(), native.float(), rtol=1e-2, atol=1e-2)   # a bfloat16 ulp apart at most
        assert torch.equal(norm(x.float()), torch.nn.functional.group_norm(x.float(), 8, norm.weight, norm.bias))


def test_the_world_models_inference_blocks_keep_diffusers_outputs():
    """The world model's U-Net runs `unet_inference`'s blocks: in float32 bit for bit diffusers'
    (channels-last maps after the attention included), in bfloat16 channels-last within rounding
    of diffusers' own bfloat16 pass, and with autograd on (training) diffusers' forward itself."""
    torch.manual_seed(0)
    model = models.build("world_model")
    blocks = [type(m) for m in model.unet.modules()]
    assert unet_inference.InferenceResnetBlock2D in blocks and unet_inference.InferenceGroupNorm in blocks
    plain = unet_inference.restore(copy.deepcopy(model.unet))
    assert not any(type(m) in (unet_inference.InferenceResnetBlock2D, unet_inference.InferenceGroupNorm)
                   for m in plain.modules()), "diffusers' own modules again"
    image = torch.randn(4, model.unet.config.in_channels, 64, 64)
    embed = torch.randn(4, model.unet.config.time_embedding_dim)
    run = lambda unet, x: unet(x, 0, class_labels=embed, return_dict=False)[0]   # noqa: E731
    with torch.inference_mode():
        assert torch.equal(run(model.unet, image), run(plain, image))
        channels_last = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, slow = run(model.unet, channels_last).float(), run(plain, channels_last).float()
    assert not torch.equal(fast, run(model.unet, image).float()), "the pass did not run in bfloat16"
    assert 10 * torch.log10(4 / ((fast - slow) ** 2).mean()) >= 45
    out, reference = run(model.unet, image), run(plain, image)   # autograd on: diffusers' path
    out.square().mean().backward()
    reference.square().mean().backward()
    assert torch.equal(out, reference)
    for (name, a), b in zip(model.unet.named_parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_bfloat16_autocast_keeps_frames_proprio_and_done_decisions(reflector):
    """`up` serves the world model's U-Net pass under bfloat16 autocast where the CPU computes it
    natively: along 4 replayed steps of 32 keyframe starts, its frames stay within 45 dB PSNR of
    float32's, its proprio is float32's bit for bit, and the reflector decides done at the same
    steps."""
    from worldenv.data.start_bank import StartBank
    path = checkpoints.model_dir("world_model")
    exact, mixed = models.load(path, "world_model"), models.load(path, "world_model")
    assert mixed.use_autocast("bfloat16") is torch.bfloat16 and exact.autocast is None
    bank, rng = StartBank.load(checkpoints.starts()), np.random.default_rng(1)
    pick = rng.choice(len(bank), 32, replace=len(bank) < 32)
    texts = [bank.instructions[i] for i in pick]
    history, proprio = np.stack([np.stack([f, f]) for f in bank.frames[pick]]), bank.proprio[pick]
    videos = {"exact": reflector.start(bank.frames[pick], texts), "mixed": reflector.start(bank.frames[pick], texts)}
    squared = 0.0
    for step in range(4):
        actions = rng.uniform(-1, 1, (32, 8, 7)).astype(np.float32)
        frames, next_proprio = exact.predict(history, proprio, actions)
        mixed_frames, mixed_proprio = mixed.predict(history, proprio, actions)
        np.testing.assert_array_equal(mixed_proprio, next_proprio)
        squared += float(((frames.astype(np.float64) - mixed_frames) ** 2).mean())
        p_exact, videos["exact"] = reflector.observe(videos["exact"], frames)
        p_mixed, videos["mixed"] = reflector.observe(videos["mixed"], mixed_frames)
        np.testing.assert_array_equal(p_exact > 0.5, p_mixed > 0.5)
        history, proprio = np.concatenate([history[:, 1:], frames[:, None]], axis=1), next_proprio  # replay float32's
    assert squared > 0, "autocast changed nothing: the U-Net pass did not run in bfloat16"
    assert 10 * np.log10(255 ** 2 / (squared / 4)) >= 45


def test_autocast_is_refused_where_a_model_has_no_mixed_precision_path():
    from services.common.factory import load_model
    from worldenv.config import ServeConfig
    with pytest.raises(ValueError, match="autocast"):
        load_model("policy", ServeConfig(checkpoint="none", autocast="bfloat16"))
    with pytest.raises(ValueError, match="autocast"):
        ServeConfig(autocast="int8")
    policy, _ = load_model("policy", ServeConfig(checkpoint="none", autocast="auto"))   # auto: where there is one
    assert not hasattr(policy, "autocast")
    model, _ = load_model("world_model", ServeConfig(checkpoint="none", autocast="none"))
    assert model.autocast is None and model.spec.extra["autocast"] == "none"


def test_channels_last_keeps_the_frames_within_a_grey_level_and_is_refused_without_that_path():
    """`serve --channels-last`: the world model's float32 pass on a channels-last input gives the
    NCHW frames within a grey level and its proprio bit for bit (a faster path, not another
    model); a model without that path refuses it, naming the field."""
    from services.common.factory import load_model
    from worldenv.config import ServeConfig
    nchw, _ = load_model("world_model", ServeConfig(checkpoint="shipped"))
    last, _ = load_model("world_model", ServeConfig(checkpoint="shipped", channels_last=True))
    assert (nchw.channels_last, last.channels_last) == (False, True) and last.spec.extra["channels_last"] is True
    rng = np.random.default_rng(0)
    history = rng.integers(0, 256, (8, nchw.config.history, 64, 64, 3), dtype=np.uint8)
    proprio = rng.normal(0, 0.1, (8, nchw.config.proprio_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, (8, nchw.config.chunk_length, nchw.config.action_dim)).astype(np.float32)
    (a, pa), (b, pb) = nchw.predict(history, proprio, actions), last.predict(history, proprio, actions)
    assert np.abs(a.astype(int) - b).max() <= 1
    np.testing.assert_array_equal(pa, pb)
    with pytest.raises(ValueError, match="channels_last"):
        load_model("policy", ServeConfig(checkpoint="none", channels_last=True))


def test_the_served_world_model_says_its_autocast():
    from servers import serving
    from worldenv.client.clients import WorldModelClient
    model = models.build("world_model")
    with serving("world-model", model, autocast="bfloat16") as server, WorldModelClient(server.address) as client:
        spec = client.spec
    assert model.autocast is torch.bfloat16 and spec.extra["autocast"] == "bfloat16"


def test_enqueue_many_is_one_batch_a_worker_claims_whole(redis_client, key_prefix):
    queue = RolloutQueue(redis_client, key_prefix)
    bank = synthetic_bank(2)
    jobs = [Job(id=f"many-{i}", frame=bank.frames[0], proprio=bank.proprio[0], instruction=bank.instructions[0],
                run_id="many") for i in range(6)]
    assert queue.enqueue_many(jobs) == [True] * 6
    assert queue.enqueue_many(jobs[:2]) == [False, False]           # ids are idempotent
    claimed = queue.claim("w", 8, block_ms=10)
    assert [c.job.id for c in claimed] == [j.id for j in jobs] and all(c.attempts == 1 for c in claimed)


def test_a_worker_batch_of_32_keeps_each_step_s_frames_and_done_decisions(reflector):
    """`up`'s worker batch is 32 (measured: bench/rollout.py (c)); one step of 32 episodes gives the
    frames of four steps of 8 within rounding (PSNR >= 45 dB) and the same done decisions."""
    from worldenv.data.start_bank import StartBank
    from worldenv.commands.up import UpConfig
    from worldenv.config import WorkerConfig

    assert UpConfig().batch_size == WorkerConfig().batch_size == local.StackConfig(home=None).batch_size == 32
    wm = models.load(checkpoints.model_dir("world_model"), "world_model")
    bank, rng = StartBank.load(checkpoints.starts()), np.random.default_rng(0)
    pick = rng.choice(len(bank), 32, replace=len(bank) < 32)
    frames, proprio = bank.frames[pick], bank.proprio[pick]
    history = np.stack([np.stack([f, f]) for f in frames])
    actions = rng.uniform(-1, 1, (32, 8, 7)).astype(np.float32)
    whole, whole_proprio = wm.predict(history, proprio, actions)
    parts = [wm.predict(history[i:i + 8], proprio[i:i + 8], actions[i:i + 8]) for i in range(0, 32, 8)]
    eights, eights_proprio = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    mse = float(((whole.astype(np.float64) - eights) ** 2).mean())
    assert mse == 0 or 10 * np.log10(255 ** 2 / mse) >= 45
    np.testing.assert_allclose(whole_proprio, eights_proprio, rtol=0, atol=1e-5)
    texts = [bank.instructions[i] for i in pick]
    p_whole, _ = reflector.observe(reflector.start(frames, texts), whole)
    p_eights = np.concatenate([reflector.observe(reflector.start(frames[i:i + 8], texts[i:i + 8]), whole[i:i + 8])[0]
                               for i in range(0, 32, 8)])
    np.testing.assert_allclose(p_whole, p_eights, rtol=0, atol=1e-5)
    assert ((p_whole > 0.5) == (p_eights > 0.5)).all()
