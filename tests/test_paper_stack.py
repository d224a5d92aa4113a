"""The paper-scale archs as one stack: tiny checkpoints of openvla-oft, llava-reward and
video-unet, each loaded from its directory layout through the registry, served by the unchanged
servicers, a rollout worker over a real Redis, and one LOOP iteration of the unchanged trainer.
The policy publishes only its LoRA adapters and heads, and the served policy changes."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from servers import serving
from worldenv import models
from worldenv.rl import trainer
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.rl.queue import RolloutQueue
from worldenv.rl.worker import RolloutWorker
from worldenv.data.episodes import EpisodeStore
from worldenv.data.start_bank import synthetic_bank
from worldenv.rl.settings import RLConfig

SIDE = 32  # the tiny video-unet's frames; the VLMs resize to their vision towers inside


@pytest.fixture()
def paper_stack(redis_client, key_prefix, tmp_path):
    """Tiny checkpoints of the three paper-scale archs, saved and loaded through the registry,
    served, with a rollout worker over Redis; yields the loaded models and the policy address."""
    torch.manual_seed(0)
    builds = {"policy": models.build("openvla-oft", size="tiny", image_size=SIDE),
              "reflector": models.build("llava-reward", size="tiny", image_size=SIDE),
              "world_model": models.build("video-unet", size="tiny")}
    loaded = {}
    for role, model in builds.items():
        model.save_pretrained(tmp_path / role)
        loaded[role] = models.load(tmp_path / role, role=role)
        assert loaded[role].spec.arch == model.spec.arch and loaded[role].spec.image_size == SIDE
    with serving("world-model", loaded["world_model"]) as wm, serving("reflector", loaded["reflector"]) as rf, \
            serving("policy", loaded["policy"]) as po:
        clients = [PolicyClient(po.address).connect(), WorldModelClient(wm.address).connect(),
                   ReflectorClient(rf.address).connect()]
        worker = RolloutWorker.served(RolloutQueue(redis_client, key_prefix), EpisodeStore(redis_client, key_prefix),
                               *clients, batch_size=8, consumer="w", block_ms=100)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
        thread.start()
        try:
            yield loaded, po.address
        finally:
            stop.set()
            thread.join(30)
            for c in clients:
                c.close()


def test_loop_iteration_on_the_paper_scale_archs(paper_stack, redis_url, key_prefix, tmp_path):
    loaded, policy_addr = paper_stack
    published = loaded["policy"].publishable_state()
    assert 0 < sum(t.numel() for t in published.values()) < sum(p.numel() for p in loaded["policy"].parameters())
    bank = synthetic_bank(4, image_size=SIDE)
    bank.save(tmp_path / "starts.npz")
    config = RLConfig(redis_url=redis_url, prefix=key_prefix, policy_addr=policy_addr, policy=str(tmp_path / "policy"),
                      starts=str(tmp_path / "starts.npz"), out=str(tmp_path / "run"), iterations=1, groups=2,
                      group_size=4, horizon=2, eta=0.999, epochs=1, minibatch=8, lr=1e-2, head_lr=1e-3, timeout=300,
                      min_reward_spread=0.0)
    with PolicyClient(policy_addr) as client:
        args = (bank.frames[:2], bank.proprio[:2], bank.instructions[:2])
        before = client.act(*args, deterministic=True)
        summary = trainer.run(config)
        after = client.act(*args, deterministic=True)
    (row,) = summary["rows"]
    assert row["timesteps"] == 16 and 0 <= row["reward_mean"] <= 1
    assert after.policy_version == summary["version"] > before.policy_version
    assert not np.allclose(after.loc, before.loc), "the LoRA/head update reached the served policy"
    trained = models.load(tmp_path / "run" / "policy", role="policy")   # the run's checkpoint, same layout
    assert trained.spec.arch == "openvla-oft" and set(trained.publishable_state()) == set(published)
    with pytest.raises(ValueError, match="head_lr, learn_scale:.*2 optimiser group"):   # resuming with other groups: refused
        trainer.run(config.model_copy(update={"head_lr": None, "iterations": 2}))


def test_lora_and_heads_get_their_own_learning_rates():
    policy = models.build("openvla-oft", size="tiny")
    groups = trainer.param_groups(policy, lr=1e-4, head_lr=1e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("adapter", 1e-4), ("heads", 1e-5)]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in policy.parameters() if p.requires_grad)   # each once
    (single,) = trainer.param_groups(policy, lr=1e-4, head_lr=None)
    assert single["lr"] == 1e-4 and len(single["params"]) == len(grouped)
    (tiny,) = trainer.param_groups(models.build("policy"), lr=1e-4, head_lr=1e-5)   # no adapter: one group
    assert tiny["lr"] == 1e-4


@pytest.mark.parametrize("arch, role", [("openvla-oft", "policy"), ("llava-reward", "reflector")])
def test_a_loaded_frozen_backbone_is_linked_not_rewritten(tmp_path, arch, role):
    """The trainer saves its policy every iteration and `train reflector` every best model: a 7B
    backbone must not be written again each time."""
    models.build(arch, size="tiny").save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / "model.safetensors"
    before = weights.stat()
    model = models.load(tmp_path / "a", role=role)
    model.save_pretrained(tmp_path / "b")                                    # elsewhere: a hard link
    assert (tmp_path / "b" / "model.safetensors").stat().st_ino == weights.stat().st_ino
    model.save_pretrained(tmp_path / "a")                                    # in place: untouched
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    again = models.load(tmp_path / "b", role=role)
    assert set(again.publishable_state()) == set(model.publishable_state())
    models.build(arch, size="tiny").save_pretrained(tmp_path / "b")         # a fresh build over the link
    assert weights.stat().st_mtime_ns == before.st_mtime_ns, "the linked source was not written through"
    assert (tmp_path / "b" / "model.safetensors").stat().st_ino != weights.stat().st_ino
