"""The trained checkpoints and the keyframe bank shipped in worldenv/checkpoints: each serves
over gRPC exactly as it runs in-process, and they imagine real LIBERO scenes."""
from __future__ import annotations

import numpy as np
import pytest

from worldenv import checkpoints, models
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.config import ServeConfig
from worldenv.data.start_bank import StartBank
from worldenv.models.roles import Observations, StartStates
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

pytestmark = pytest.mark.skipif(checkpoints.model_dir("policy") is None, reason="no shipped checkpoints")


def _serving(name: str, role: str):
    config = ServeConfig(host="127.0.0.1", checkpoint=str(checkpoints.model_dir(role)))
    return RunningServer(create_service(name, config), config)


@pytest.fixture(scope="module")
def bank() -> StartBank:
    return StartBank.load(checkpoints.starts())


def test_the_bank_holds_real_keyframes_with_history(bank):
    assert len(bank) >= 50 and bank.frames.shape[1:] == (64, 64, 3) and bank.history.shape[1] == 1
    assert bank.meta["source"] == "keyframes" and all("/step" in i for i in bank.ids)
    assert len(set(bank.instructions)) >= 3


def test_shipped_models_serve_as_they_run_in_process(bank):
    idx = np.arange(4)
    obs = Observations(bank.frames[idx], bank.proprio[idx], [bank.instructions[i] for i in idx])
    policy = models.load(checkpoints.model_dir("policy"), role="policy")
    with _serving("policy", "policy") as server, PolicyClient(server.address) as client:
        served = client.act(obs.frames, obs.proprio, obs.instructions, deterministic=True)
    np.testing.assert_array_equal(served.loc, policy.act(obs, True).loc)
    assert np.abs(served.loc).max() <= 1 and np.isfinite(served.log_probs).all()

    world = models.load(checkpoints.model_dir("world_model"), role="world_model")
    starts = np.stack([bank.start_frames(i) for i in idx])
    with _serving("world-model", "world_model") as server, WorldModelClient(server.address) as client:
        step = client.step(client.open(starts, obs.proprio, obs.instructions), served.actions)
    local, _ = world.step(world.start(StartStates(starts, obs.proprio, obs.instructions)), served.actions)
    np.testing.assert_array_equal(step.frames, local.frames)
    moved = np.abs(step.frames.astype(int) - obs.frames).mean()
    assert 0 < moved < 40, f"a trained model predicts a nearby frame, not noise (mean change {moved:.1f})"

    reflector = models.load(checkpoints.model_dir("reflector"), role="reflector")
    videos = np.stack([starts[:, -1], step.frames], axis=1)                      # (4, 2, 64, 64, 3)
    with _serving("reflector", "reflector") as server, ReflectorClient(server.address) as client:
        p_done = client.judge(videos, obs.instructions).p_done
    np.testing.assert_array_equal(p_done, reflector.judge(videos, obs.instructions))


def test_the_shipped_reflector_reads_the_instruction():
    """Held-out LIBERO demos (init states no model trained on), each judged up to its first
    success frame: done under its own instruction, and a lower p(done) under every other task's
    (the reflector shipped before paid 0.90-1.00 under any instruction)."""
    import pathlib
    clips = np.load(pathlib.Path(__file__).parent / "data" / "success_clips.npz")
    reflector = models.load(checkpoints.model_dir("reflector"))
    texts = [str(t) for t in clips["instructions"]]
    for video, n, own in zip(clips["videos"], clips["lengths"], texts):
        p = {text: float(reflector.judge(video[None, :n], [text])[0]) for text in texts}
        assert p[own] > 0.5, p
        assert all(p[other] < p[own] for other in texts if other != own), p


def test_the_shipped_rl_policy_is_the_sft_policy_after_rl_and_resolves_by_name():
    """'shipped-rl' names the RL checkpoint for every policy setting; it has the SFT policy's arch
    and shapes, other weights, and the same mean action where nothing moved is not required."""
    from worldenv.sim import policies
    rl_dir, sft_dir = checkpoints.model(checkpoints.SHIPPED_RL, "policy"), checkpoints.model(checkpoints.SHIPPED, "policy")
    assert rl_dir == checkpoints.DIR / checkpoints.RL_POLICY
    rl, sft = models.load(rl_dir, role="policy"), models.load(sft_dir, role="policy")
    assert rl.spec == sft.spec and rl.config.action_spread == sft.config.action_spread
    assert any(not np.array_equal(a.detach().numpy(), sft.state_dict()[k].detach().numpy())
               for k, a in rl.state_dict().items())
    source = policies.open_source(checkpoints.SHIPPED_RL)
    assert source.name and source.chunk_length == rl.spec.chunk_length
    with pytest.raises(ValueError, match="names a policy"):
        checkpoints.model(checkpoints.SHIPPED_RL, "reflector")
