"""The role interfaces, in-process and over gRPC: the same model gives the same outputs both
ways, and an arch the servicers have never seen (a Hugging Face-style directory) serves
through them unchanged."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from servers import serving, tiny_model
from worldenv import models
from worldenv.client.clients import PolicyClient, ReflectorClient, WorldModelClient
from worldenv.config import ServeConfig
from worldenv.models import checkpoint, laplace
from worldenv.models.roles import ActionChunks, Observations, Spec, StartStates
from worldenv.services.common.factory import create_service
from worldenv.services.common.server import RunningServer

RNG = np.random.default_rng(3)
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pick", "up", "the", "bowl", "put", "on", "plate", "a", "b"]


def observations(b: int) -> Observations:
    return Observations(RNG.integers(0, 256, (b, 64, 64, 3), dtype=np.uint8),
                        RNG.standard_normal((b, 8)).astype(np.float32), ["pick up the bowl"] * b)


# ---- the same model in-process and served ------------------------------------------------

def test_policy_in_process_equals_served():
    obs, seeds = observations(3), [3, 0, 5]
    model = tiny_model("policy")
    with serving("policy") as server, PolicyClient(server.address) as client:
        for deterministic in (False, True):
            served = client.act(obs.frames, obs.proprio, obs.instructions, deterministic, seed=seeds)
            local = model.act(obs, deterministic, seeds)
            rows = [0, 1, 2] if deterministic else [0, 2]  # the unseeded item draws from each side's RNG
            for key in ("loc", "scale", "actions", "log_probs"):
                np.testing.assert_array_equal(getattr(served, key)[rows], getattr(local, key)[rows], key)


def test_world_model_in_process_equals_served():
    start = StartStates(RNG.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8),
                        RNG.standard_normal((2, 8)).astype(np.float32), ["a", "b"])
    chunks = [RNG.uniform(-1.5, 1.5, (2, 8, 7)).astype(np.float32) for _ in range(3)]
    model = tiny_model("world-model")
    with serving("world-model") as server, WorldModelClient(server.address) as client:
        ids, states = client.open(start.frames, start.proprio, start.instructions), model.start(start)
        for chunk in chunks:
            served = client.step(ids, chunk)
            local, states = model.step(states, chunk)
            np.testing.assert_array_equal(served.frames, local.frames)
            np.testing.assert_array_equal(served.proprio, local.proprio)


def test_reflector_in_process_equals_served():
    videos = RNG.integers(0, 256, (3, 5, 64, 64, 3), dtype=np.uint8)
    instructions = ["put the bowl on the plate", "a", "b"]
    with serving("reflector") as server, ReflectorClient(server.address) as client:
        served = client.judge(videos, instructions).p_done
    np.testing.assert_array_equal(served, tiny_model("reflector").judge(videos, instructions))


def test_remote_reflector_keeps_videos_in_sessions_and_equals_the_in_process_one():
    from worldenv.client.remote import RemoteReflector

    model, videos, instructions = tiny_model("reflector"), RNG.integers(0, 256, (2, 4, 64, 64, 3), np.uint8), ["a", "b"]
    with serving("reflector") as server, ReflectorClient(server.address) as client:
        remote = RemoteReflector(client)
        served, local = remote.start(videos[:, 0], instructions), model.start(videos[:, 0], instructions)
        assert all(isinstance(state, str) for state in served) and len(server.service.sessions) == 2
        for t in range(1, 4):
            (p_served, served), (p_local, local) = remote.observe(served, videos[:, t]), model.observe(local, videos[:, t])
            np.testing.assert_array_equal(p_served, p_local)
        remote.end(served)
        assert len(server.service.sessions) == 0


class FakeLibero:
    """An env process of the pool without a simulator: random frames, never a success."""

    def __init__(self):
        self.frames = []

    def call(self, name, **kwargs):
        from types import SimpleNamespace
        self.frames.append(RNG.integers(0, 256, (64, 64, 3), np.uint8))
        obs = SimpleNamespace(frame=self.frames[-1], proprio=np.zeros(8, np.float32), success=False)
        if name == "open":
            return "pick up the bowl"
        if name == "reset":
            return obs
        assert name == "expert_chunk", name
        return SimpleNamespace(actions=np.zeros((8, 7), np.float32), succeeded=False, obs=obs)


def test_reflector_termination_of_a_sim_episode_sends_each_frame_once():
    """`worldenv eval --termination reflector`: the episode's p_done is Judge's on the video so far."""
    from types import SimpleNamespace

    from worldenv.client.remote import RemoteReflector
    from worldenv.sim import episode, policy_runs

    with serving("reflector") as server:
        config = SimpleNamespace(termination="reflector", reflector=server.address, auth_token=None)
        reflector = policy_runs.open_judge(config)
        assert isinstance(reflector, RemoteReflector)
        process, spec = FakeLibero(), episode.EpisodeSpec(None, 0, max_steps=32, stop_on_success=False, keep_video=True)
        result = episode.run(process, spec, SimpleNamespace(in_env=True), reflector, eta=0.999)
        assert result.outcome == "horizon" and len(result.p_done) == 4 and len(server.service.sessions) == 0
        video = np.stack(process.frames[1:])  # the frame of the reset on
        judged = [reflector.judge(video[None, :t + 2], [result.instruction])[0] for t in range(4)]
        np.testing.assert_allclose(np.float32(result.p_done), judged, rtol=0, atol=1e-6)   # cached features: rounding
        reflector.client.close()


# ---- a second arch: a Hugging Face-style directory -------------------------------------------

class TextBackbonePolicy(torch.nn.Module):
    """A Laplace policy over a transformers text backbone, stored as a Hugging Face-style
    directory: config.json (role, arch), backbone/ (sharded safetensors + index),
    tokenizer/ and an extra head file, action_head.safetensors."""

    def __init__(self, backbone: transformers.BertModel, tokenizer):
        super().__init__()
        self.backbone, self.tokenizer = backbone, tokenizer
        hidden = backbone.config.hidden_size
        self.pixels = torch.nn.Linear(3, hidden)
        self.head = torch.nn.Linear(hidden + 8, 2 * 8 * 7)
        self.spec = Spec("policy", "test-text-backbone", "test-text-backbone", 64, 8, 7, 8)

    @classmethod
    def build(cls, device="cpu", dtype="float32"):
        config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64)
        return cls(transformers.BertModel(config), _tokenizer()).eval()

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype="float32"):
        path = pathlib.Path(path)
        model = cls(transformers.BertModel.from_pretrained(path / "backbone"),
                    transformers.AutoTokenizer.from_pretrained(path / "tokenizer"))
        head = path / "action_head.safetensors"
        if not head.is_file():
            raise FileNotFoundError(f"checkpoint: head file {head.name} missing from {path}")
        state = load_file(str(head))
        checkpoint.check_state(model.head_state(), state)
        model.load_state_dict(state, strict=False)
        return model.eval()

    def save_pretrained(self, path):
        path = pathlib.Path(path)
        self.backbone.save_pretrained(path / "backbone", max_shard_size="40KB")
        self.tokenizer.save_pretrained(path / "tokenizer")
        save_file({k: v.contiguous() for k, v in self.head_state().items()}, str(path / "action_head.safetensors"))
        (path / "config.json").write_text(json.dumps({"role": "policy", "arch": "test-text-backbone"}))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def distribution(self, obs: Observations) -> torch.distributions.Laplace:
        tokens = self.tokenizer(list(obs.instructions), return_tensors="pt", padding=True)
        text = self.backbone(**tokens).last_hidden_state[:, 0]                      # (B, H)
        colour = torch.from_numpy(obs.frames).float().mean(dim=(1, 2)) / 255.0      # (B, 3)
        h = torch.cat([text + self.pixels(colour), torch.from_numpy(obs.proprio)], dim=-1)
        loc, log_scale = self.head(h).view(-1, 2, 8, 7).unbind(1)
        return torch.distributions.Laplace(torch.tanh(loc), log_scale.clamp(-5, 1).exp())

    @torch.no_grad()
    def act(self, obs, deterministic=False, seeds=None) -> ActionChunks:
        return laplace.act(self.distribution(obs), deterministic, seeds)

    def log_prob(self, obs, actions):
        return self.distribution(obs).log_prob(actions).sum(dim=(1, 2))

    def check_weights(self, state):
        checkpoint.check_state(self.head_state(), state)

    def load_weights(self, state):
        self.check_weights(state)
        with torch.no_grad():
            for key, tensor in self.head_state().items():
                tensor.copy_(state[key])
        return len(state)


def _tokenizer():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        vocab = pathlib.Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(WORDS) + "\n")
        return transformers.BertTokenizerFast(vocab_file=str(vocab))


@pytest.fixture()
def text_arch():
    models.register("test-text-backbone", "policy", TextBackbonePolicy)
    yield
    models.ARCHS.pop("test-text-backbone")


def test_a_second_arch_in_a_hugging_face_layout_serves_through_the_unchanged_servicer(text_arch, tmp_path):
    torch.manual_seed(0)
    TextBackbonePolicy.build().save_pretrained(tmp_path)
    assert len(list((tmp_path / "backbone").glob("model-*.safetensors"))) > 1, "sharded"
    local = models.load(tmp_path, role="policy")
    config = ServeConfig(host="127.0.0.1", checkpoint=str(tmp_path))
    obs = observations(4)
    with RunningServer(create_service("policy", config), config) as server, PolicyClient(server.address) as client:
        assert client.spec.model_name == "test-text-backbone" and client.spec.extra["arch"] == "test-text-backbone"
        served = client.act(obs.frames, obs.proprio, obs.instructions, seed=[1, 2, 3, 4])
        np.testing.assert_allclose(served.actions, local.act(obs, seeds=[1, 2, 3, 4]).actions, rtol=1e-5, atol=1e-6)
        other = {k: torch.randn_like(v) for k, v in local.head_state().items()}
        assert client.load_weights(checkpoint_bytes(other)) == 2
        assert not np.allclose(client.act(obs.frames, obs.proprio, obs.instructions, True).loc, served.loc)


def test_a_checkpoint_missing_its_head_file_is_refused_by_name(text_arch, tmp_path):
    torch.manual_seed(0)
    TextBackbonePolicy.build().save_pretrained(tmp_path)
    (tmp_path / "action_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="action_head.safetensors"):
        models.load(tmp_path)


def checkpoint_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save
    return save({k: v.contiguous() for k, v in state.items()})
