"""World-Env's world simulator: a latent video diffusion U-Net conditioned on a memory bank of
history frames and on the action chunk (arch "video-unet", role "world_model").

The video holds F = history + 1 frames of VAE latents (C = 4 channels, image_size / 8 per side
at full size). Per frame the U-Net (diffusers' `UNetSpatioTemporalConditionModel`, the SVD
video U-Net) reads 2C + 2 channels:

    [noisy latent (C) | clean context latent (C) | action map (1) | mask (1)]

History positions carry their clean latents in both latent slots and mask 1 (reset to the
clean latents at every sampling step); the last position carries the noisy target, zero
context and mask 0. The action map is the chunk's end-effector path drawn as markers on black
(`world_model.render_action_map`), area-pooled to latent resolution and given to every frame.
The chunk also enters through cross-attention: our action encoder maps the chunk (K, A), its
cumulative position deltas and the proprio to K tokens as `encoder_hidden_states`. SVD's
`added_time_ids` (fps, motion bucket, noise augmentation) are fixed by the config. Only the
last frame is predicted (v-prediction), sampled with a few DDIM steps (zero terminal SNR,
trailing spacing). Proprio is predicted as in the tiny arch: proprio + the integrated prior
(`world_model.eef_path`) + a learned correction.

A session's state (`LatentBank`) keeps LATENTS, torch tensors on the model's device in its
dtype, plus the proprio and the episode's noise seed: frames are encoded once at `start`, and
each `step` decodes only the new frame (the sampled latent itself joins the history).

Checkpoint directory layout (`save_pretrained` writes exactly this):

    worldenv.json                               role, arch and VideoWorldModelConfig's fields
    unet/config.json                            UNetSpatioTemporalConditionModel config
    unet/diffusion_pytorch_model.safetensors
    vae/config.json                             AutoencoderKL config (scaling_factor in it)
    vae/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json             DDIMScheduler config
    action_encoder.safetensors                  ours: chunk + proprio -> K cross-attention tokens
    proprio_head.safetensors                    ours: learned proprio correction

The U-Net, the action encoder and the proprio head are trained (`publishable_state`); the VAE
is frozen.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pydantic
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from worldenv.models import checkpoint, inputs, layout, vision
from worldenv.models.roles import Prediction, Spec, StartStates
from worldenv.models.world_model import TRAIN_TIMESTEPS, Transitions, WorldModelConfig, eef_path, render_action_map

Size = Literal["tiny", "small", "full"]
TRAINED = ("unet", "action_encoder", "proprio_head")   # the VAE is frozen
WEIGHTS_STEM = "diffusion_pytorch_model"
PROPRIO_HIDDEN = 128
_MAP = WorldModelConfig.model_fields  # the action-map geometry defaults are the tiny arch's


class VideoWorldModelConfig(pydantic.BaseModel):
    """The options in `worldenv.json`; the networks' own configs live in unet/, vae/, scheduler/."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["world_model"] = "world_model"
    arch: Literal["video-unet"] = "video-unet"
    name: str = pydantic.Field("video-unet", description="label reported in the spec")
    size: Size = pydantic.Field("full", description="the preset the networks were built from")
    image_size: int = pydantic.Field(256, ge=8, description="frame side, pixels")
    chunk_length: int = pydantic.Field(8, ge=1, description="K, actions per chunk (one world-model step)")
    action_dim: int = pydantic.Field(7, ge=4, description="A: pos delta 3, rot delta 3, gripper 1")
    proprio_dim: int = pydantic.Field(8, ge=3, description="P: eef pos 3, axis-angle 3, gripper qpos 2")
    history: int = pydantic.Field(4, ge=1, description="history frames (latents) in the memory bank")
    sampler_steps: int = pydantic.Field(4, ge=1, le=50, description="DDIM steps per prediction")
    action_encoder_dim: int = pydantic.Field(1024, ge=8, description="width of the action tokens; must equal "
                                             "the U-Net's cross_attention_dim")
    added_time_ids: tuple[float, float, float] = pydantic.Field(
        (6.0, 127.0, 0.02), description="SVD micro-conditioning (fps, motion_bucket_id, noise_aug_strength)")
    vae_batch: int = pydantic.Field(16, ge=1, description="frames per VAE encode/decode call (bounds activations)")
    action_gain: float = pydantic.Field(_MAP["action_gain"].default, gt=0,
                                        description="metres of eef motion per unit of position action per step")
    map_matrix: tuple[tuple[float, float, float], tuple[float, float, float]] = _MAP["map_matrix"].default
    map_offset: tuple[float, float] = _MAP["map_offset"].default
    marker_size: float = pydantic.Field(_MAP["marker_size"].default, gt=0,
                                        description="marker radius (std) as a fraction of the image side")
    proprio_weight: float = pydantic.Field(10.0, ge=0, description="weight of the proprio L1 term in the loss")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Network sizes of one `size`: frame side, action-token width, U-Net and VAE options."""

    image_size: int
    action_encoder_dim: int
    unet: dict[str, Any]
    vae: dict[str, Any]


def _blocks(attention: Sequence[bool]) -> dict[str, tuple[str, ...]]:
    """Down and up block types, highest resolution first, with cross-attention where `attention`."""
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attention))
    return {"down_block_types": down, "up_block_types": up}


SIZES: dict[str, Preset] = {
    # The SVD U-Net's group norms have 32 groups: every width is a multiple of 32.
    "tiny": Preset(32, 32, {**_blocks((True, False)), "block_out_channels": (32, 64), "layers_per_block": 1,
                            "num_attention_heads": (2, 4), "addition_time_embed_dim": 8},
                   {"block_out_channels": (8, 16, 16), "layers_per_block": 1, "norm_num_groups": 8}),
    # Narrow at the latent side (32 x 32, no attention there), wide below: ~33M parameters for
    # ~94 GFLOP per U-Net pass at B = 8 (5 frames); the VAE decode of 8 frames is ~62 GFLOP.
    "small": Preset(256, 256, {**_blocks((False, True, True, True)), "block_out_channels": (32, 64, 128, 256),
                               "layers_per_block": 1, "num_attention_heads": (1, 2, 4, 8),
                               "addition_time_embed_dim": 64},
                    {"block_out_channels": (16, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 16}),
    # SVD's U-Net (cross-attention at all but the lowest resolution) and SD's VAE (256 px -> 32 x 32 x 4).
    "full": Preset(256, 1024, {**_blocks((True, True, True, False)), "block_out_channels": (320, 640, 1280, 1280),
                               "layers_per_block": 2, "num_attention_heads": (5, 10, 20, 20),
                               "addition_time_embed_dim": 256},
                   {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32}),
}


def unet_config(preset: Preset, config: VideoWorldModelConfig, latent_channels: int, latent_size: int) -> dict:
    """The U-Net's constructor options for a preset (channels, frames and cross-attention filled in)."""
    return {**preset.unet, "sample_size": latent_size, "in_channels": 2 * latent_channels + 2,
            "out_channels": latent_channels, "cross_attention_dim": config.action_encoder_dim,
            "projection_class_embeddings_input_dim": 3 * preset.unet["addition_time_embed_dim"],
            "num_frames": config.history + 1}


def vae_config(preset: Preset, config: VideoWorldModelConfig) -> dict:
    """The VAE's constructor options for a preset."""
    n = len(preset.vae["block_out_channels"])
    return {**preset.vae, "sample_size": config.image_size, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * n, "up_block_types": ("UpDecoderBlock2D",) * n}


def scheduler_config() -> dict:
    """DDIM with v-prediction, zero terminal SNR and trailing spacing (few steps from pure noise)."""
    return {"num_train_timesteps": TRAIN_TIMESTEPS, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False,
            "prediction_type": "v_prediction", "timestep_spacing": "trailing", "rescale_betas_zero_snr": True}


def make_scheduler(config: dict, steps: int) -> DDIMScheduler:
    """The sampler from its config (as in scheduler/scheduler_config.json), set to `steps` steps
    once (its `step` then only reads, so it is thread-safe). Built outside `checkpoint.creating_on`: its
    tables stay float32 on the CPU."""
    scheduler = DDIMScheduler.from_config(config)
    if scheduler.config.rescale_betas_zero_snr and scheduler.config.prediction_type != "v_prediction":
        raise ValueError("scheduler/scheduler_config.json: prediction_type must be 'v_prediction' with "
                         "rescale_betas_zero_snr (epsilon cannot be inverted at zero SNR)")
    scheduler.set_timesteps(steps)
    return scheduler


def check_parts(config: VideoWorldModelConfig, unet: dict, vae: dict) -> None:
    """Raise ValueError naming the config file and field where the U-Net, VAE and options disagree."""
    latent = vae.get("latent_channels", 4)
    want = {"in_channels": (2 * latent + 2, f"noisy latent {latent} + context latent {latent} + action map 1 + mask 1"),
            "out_channels": (latent, "the VAE's latent_channels"),
            "cross_attention_dim": (config.action_encoder_dim, "worldenv.json action_encoder_dim, the action "
                                                               "encoder's token width"),
            "projection_class_embeddings_input_dim": (3 * unet.get("addition_time_embed_dim", 256),
                                                      "3 added_time_ids x addition_time_embed_dim")}
    for field, (value, why) in want.items():
        if unet.get(field) != value:
            raise ValueError(f"unet/config.json: {field} is {unet.get(field)!r}, expected {value} ({why})")
    vae_factor = 2 ** (len(vae.get("block_out_channels", (64,))) - 1)
    if config.image_size % vae_factor:
        raise ValueError(f"vae/config.json: block_out_channels downsample by {vae_factor}, which does not divide "
                         f"worldenv.json image_size {config.image_size}")
    unet_factor = 2 ** (len(unet.get("block_out_channels", ())) - 1)
    if (config.image_size // vae_factor) % unet_factor:
        raise ValueError(f"unet/config.json: block_out_channels downsample by {unet_factor}, which does not divide "
                         f"the latent side {config.image_size // vae_factor}")


class ActionEncoder(torch.nn.Module):
    """Action chunk -> K cross-attention tokens: per step k the action a_k, the cumulative
    position deltas up to k (the path's shape) and the proprio, through an MLP, plus a learned
    per-step position embedding."""

    def __init__(self, chunk_length: int, action_dim: int, proprio_dim: int, dim: int):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(action_dim + 3 + proprio_dim, dim), torch.nn.SiLU(),
                                       torch.nn.Linear(dim, dim))
        self.position = torch.nn.Parameter(0.02 * torch.randn(chunk_length, dim))
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, actions: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """actions (B, K, A), proprio (B, P), float32 -> tokens (B, K, dim) in the encoder's dtype."""
        deltas = eef_path(torch.zeros_like(proprio[:, :3]), actions, 1.0)                # (B, K, 3)
        state = proprio.unsqueeze(1).expand(-1, actions.shape[1], -1)                    # (B, K, P)
        x = torch.cat([actions.clamp(-1, 1), deltas, state], dim=-1).to(self.position.dtype)
        return self.norm(self.mlp(x) + self.position)


@dataclasses.dataclass(frozen=True)
class LatentBank:
    """One episode's state: the last `history` latents, the current proprio, the noise seed."""

    latents: torch.Tensor    # (T, C, h, w) model dtype, on the model's device, oldest first
    proprio: np.ndarray      # (P,) float32
    seed: int                # step n of the episode draws its noise from (seed, n) alone
    steps: int = 0

    def push(self, latent: torch.Tensor, proprio: np.ndarray) -> "LatentBank":
        return LatentBank(torch.cat([self.latents[1:], latent[None]]), np.asarray(proprio, np.float32),
                          self.seed, self.steps + 1)


def step_noise(seed: int, step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (shape) on the CPU that depends on (seed, step) alone: a seed gives
    the same noise on any device and in any batch."""
    mixed = int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0])
    return torch.randn(shape, generator=torch.Generator().manual_seed(mixed))


class VideoWorldModel(torch.nn.Module, checkpoint.Pretrained, Transitions):
    """Video U-Net world model: `start`/`step`/`end` (the role), `predict` in-process, `loss` to train."""

    config_class: ClassVar[type[pydantic.BaseModel]] = VideoWorldModelConfig

    def __init__(self, config: VideoWorldModelConfig, unet: dict, vae: dict, scheduler: DDIMScheduler):
        """Networks from their config dicts (as in unet/config.json etc.), weights random, created
        on torch's default device and dtype (see `checkpoint.creating_on`); `scheduler` from `make_scheduler`."""
        super().__init__()
        check_parts(config, unet, vae)
        self.config = config
        self.unet = UNetSpatioTemporalConditionModel.from_config(unet)
        self.vae = AutoencoderKL.from_config(vae).requires_grad_(False)
        self.action_encoder = ActionEncoder(config.chunk_length, config.action_dim, config.proprio_dim,
                                            config.action_encoder_dim)
        cond_dim = config.chunk_length * config.action_dim + config.proprio_dim
        self.proprio_head = torch.nn.Sequential(torch.nn.Linear(cond_dim, PROPRIO_HIDDEN), torch.nn.SiLU(),
                                                torch.nn.Linear(PROPRIO_HIDDEN, config.proprio_dim))
        with torch.no_grad():  # start as a small correction on top of the integrated prior
            self.proprio_head[-1].weight.mul_(0.01)
            self.proprio_head[-1].bias.zero_()
        self.scheduler = scheduler
        self.latent_channels = self.vae.config.latent_channels
        self.latent_size = config.image_size // 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- construction and checkpoints --------------------------------------------------------

    @classmethod
    def build(cls, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32", size: Size = "tiny",
              **overrides) -> "VideoWorldModel":
        """A fresh model of preset `size` ("tiny" for tests, "small" for a CPU smoke run, "full" the
        paper's, for a GPU), created directly on `device` in `dtype`; `overrides` set config fields."""
        if size not in SIZES:
            raise ValueError(f"size: expected one of {list(SIZES)}, got {size!r}")
        preset = SIZES[size]
        config = VideoWorldModelConfig(**{"size": size, "image_size": preset.image_size,
                                          "action_encoder_dim": preset.action_encoder_dim, **overrides})
        vae = vae_config(preset, config)
        latent_size = config.image_size // 2 ** (len(vae["block_out_channels"]) - 1)
        unet = unet_config(preset, config, vae["latent_channels"], latent_size)
        scheduler = make_scheduler(scheduler_config(), config.sampler_steps)
        with checkpoint.creating_on(device, dtype):
            model = cls(config, unet, vae, scheduler)
        return model.placed(device, dtype).eval()

    def placed(self, device: str | torch.device, dtype: str | torch.dtype) -> "VideoWorldModel":
        """Move the few tensors that construction left elsewhere (diffusers' SVD blocks make their
        mix factors with `torch.Tensor([...])`, which ignores the device context); everything
        already on `device` in `dtype` stays where it is, uncopied."""
        return self.to(device=torch.device(device), dtype=checkpoint.torch_dtype(dtype))

    def save_pretrained(self, path: str | pathlib.Path) -> None:
        """Write the directory layout of the module docstring into `path` (created)."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet")
        self.vae.save_pretrained(path / "vae")
        self.scheduler.save_pretrained(path / "scheduler")
        layout.save_tensors(self.action_encoder.state_dict(), path / "action_encoder.safetensors")
        layout.save_tensors(self.proprio_head.state_dict(), path / "proprio_head.safetensors")
        layout.write_marker(path, self.config.model_dump(mode="json"))

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "float32") -> "VideoWorldModel":
        """Load the layout in `path`; a missing file, a mismatched key or config field is named."""
        path = pathlib.Path(path)
        raw = layout.marker(path)
        if raw["arch"] != "video-unet":
            raise ValueError(f"checkpoint {path} holds arch {raw['arch']!r}, not 'video-unet'")
        config = VideoWorldModelConfig.model_validate(raw)
        unet = layout.read_json(path / "unet" / "config.json", "U-Net config")
        vae = layout.read_json(path / "vae" / "config.json", "VAE config")
        scheduler = layout.read_json(path / "scheduler" / "scheduler_config.json", "scheduler config")
        files = {"unet": layout.find_one(path / "unet", WEIGHTS_STEM, "U-Net weights"),
                 "vae": layout.find_one(path / "vae", WEIGHTS_STEM, "VAE weights"),
                 "action_encoder": layout.find_one(path, "action_encoder", "action encoder weights"),
                 "proprio_head": layout.find_one(path, "proprio_head", "proprio head weights")}
        scheduler = make_scheduler(scheduler, config.sampler_steps)
        with checkpoint.creating_on(device, dtype):
            model = cls(config, unet, vae, scheduler)
        model.placed(device, dtype)
        for name, file in files.items():
            layout.load_into(getattr(model, name), file)
        return model.eval()

    def publishable_state(self) -> dict[str, torch.Tensor]:
        """What training changes and `load_weights` takes: U-Net, action encoder, proprio head."""
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in TRAINED}

    # --- frames <-> latents ---------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, S, S, 3) -> scaled latents (N, C, h, w) in the model dtype (the
        posterior's mode: deterministic), `vae_batch` frames per VAE call."""
        x = vision.to_chw(frames.to(self.device), self.dtype) * 2.0 - 1.0
        scale = self.vae.config.scaling_factor
        parts = [self.vae.encode(p).latent_dist.mode() * scale for p in x.split(self.config.vae_batch)]
        return torch.cat(parts)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (N, C, h, w) -> uint8 frames (N, S, S, 3) as numpy."""
        scale = self.vae.config.scaling_factor
        x = torch.cat([self.vae.decode(p / scale).sample for p in latents.split(self.config.vae_batch)])
        pixels = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        return pixels.cpu().numpy()

    # --- conditioning and the U-Net ---------------------------------------------------------

    def action_map(self, proprio: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The chunk's eef path drawn at image resolution, area-pooled -> (B, 1, h, w) in [-1, 1]."""
        path = eef_path(proprio[:, :3], actions, self.config.action_gain)               # (B, K, 3) float32
        drawn = render_action_map(path, self.config)  # reads image_size + the map geometry fields
        pooled = torch.nn.functional.adaptive_avg_pool2d(drawn, self.latent_size)
        return pooled.to(self.dtype) * 2.0 - 1.0

    def unet_input(self, noisy: torch.Tensor, context: torch.Tensor, amap: torch.Tensor) -> torch.Tensor:
        """noisy target (B, C, h, w), context latents (B, T, C, h, w), action map (B, 1, h, w)
        -> the U-Net's sample (B, T + 1, 2C + 2, h, w); history positions hold clean latents."""
        b, t = context.shape[:2]
        blank = torch.zeros_like(noisy)[:, None]                                        # (B, 1, C, h, w)
        latents = torch.cat([context, noisy[:, None]], dim=1)                           # (B, F, C, h, w)
        contexts = torch.cat([context, blank], dim=1)
        mask = torch.zeros_like(latents[:, :, :1])
        mask[:, :t] = 1.0
        amaps = amap[:, None].expand(b, t + 1, *amap.shape[1:])
        return torch.cat([latents, contexts, amaps, mask], dim=2)

    def denoise(self, noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor, amap: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        """The U-Net's output (v) for the target frame: (B, C, h, w)."""
        ids = noisy.new_tensor(self.config.added_time_ids).expand(len(noisy), 3)
        out = self.unet(self.unet_input(noisy, context, amap), t, tokens, ids, return_dict=False)[0]
        return out[:, -1]

    @torch.no_grad()
    def sample(self, context: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
        """context latents (B, T, C, h, w), proprio (B, P) and actions (B, K, A) float32, initial
        noise (B, C, h, w) -> the next frame's latent (B, C, h, w), by `sampler_steps` DDIM steps."""
        amap, tokens = self.action_map(proprio, actions), self.action_encoder(actions, proprio)
        x = noise.to(self.device, self.dtype)
        for t in self.scheduler.timesteps:
            v = self.denoise(x, t.to(self.device), context, amap, tokens)
            x = self.scheduler.step(v, t, x, eta=0.0, return_dict=False)[0].to(self.dtype)
        return x

    # --- the WorldModel role -----------------------------------------------------------------

    @property
    def spec(self) -> Spec:
        c = self.config
        return Spec("world_model", c.arch, c.name, c.image_size, c.chunk_length, c.action_dim, c.proprio_dim,
                    {"history": c.history, "mode": "diffusion"})

    def start(self, starts: StartStates, seeds: Sequence[int] | None = None) -> list[LatentBank]:
        """Start frames (B, S, S, 3), or a (B, T, S, S, 3) history, -> one latent bank each.

        Fewer than `history` frames are padded by repeating the oldest; more keep the latest.
        Each episode's noise seed is `seeds[i]`, else drawn from torch's global RNG.
        """
        frames, t, s = np.asarray(starts.frames), self.config.history, self.config.image_size
        frames = frames[:, None] if frames.ndim == 4 else frames[:, -t:]              # (B, T', S, S, 3)
        inputs.expect("frames", frames, ("B", "T", s, s, 3), "uint8")
        if frames.shape[1] < 1:
            raise ValueError("frames: history length T must be >= 1")
        b = len(frames)
        inputs.expect("proprio", starts.proprio, (b, self.config.proprio_dim), "float")
        seeds = torch.randint(0, 2 ** 62, (b,)).tolist() if seeds is None else [int(x) for x in seeds]
        if len(seeds) != b:
            raise ValueError(f"seeds: expected {b}, got {len(seeds)}")
        latents = self.encode(inputs.as_tensor(frames, self.device).flatten(0, 1))
        latents = latents.view(b, frames.shape[1], *latents.shape[1:])                 # (B, T', C, h, w)
        pad = latents[:, :1].expand(-1, t - latents.shape[1], -1, -1, -1)
        window = torch.cat([pad, latents], dim=1)                                       # (B, T, C, h, w)
        return [LatentBank(w.clone(), np.array(p, np.float32), seed)
                for w, p, seed in zip(window, starts.proprio, seeds)]

    def step(self, states: Sequence[LatentBank], actions: np.ndarray) -> tuple[Prediction, list[LatentBank]]:
        """Each episode's next frame and proprio after its action chunk (B, K, A), clipped to
        [-1, 1]; episode i's noise depends on its (seed, steps) alone."""
        c = self.config
        inputs.expect("actions", actions, (len(states), c.chunk_length, c.action_dim), "float")
        proprio = np.stack([s.proprio for s in states])                                 # (B, P)
        shape = (self.latent_channels, self.latent_size, self.latent_size)
        noise = torch.stack([step_noise(s.seed, s.steps, shape) for s in states])       # (B, C, h, w)
        context = torch.stack([s.latents for s in states])                              # (B, T, C, h, w)
        proprio_t = inputs.as_tensor(proprio, self.device, torch.float32)
        actions_t = inputs.as_tensor(np.clip(actions, -1.0, 1.0), self.device, torch.float32)
        latent = self.sample(context, proprio_t, actions_t, noise)
        with torch.no_grad():
            next_proprio = self.predict_proprio(proprio_t, actions_t).cpu().numpy()
        frames = self.decode(latent)
        banks = [s.push(z, p) for s, z, p in zip(states, latent, next_proprio)]
        return Prediction(frames, next_proprio), banks

    def end(self, states: Sequence[LatentBank]) -> None:
        """Nothing to release: the latents go with the states."""

    @torch.no_grad()
    def predict(self, history: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Next frame (B, S, S, 3) uint8 and proprio (B, P) float32, in-process.

        history (B, T, S, S, 3) uint8 with T = config.history, oldest first; proprio (B, P)
        float32; actions (B, K, A) float32 (not clipped here, as the tiny arch's `predict`).
        `generator` seeds the sampler's initial noise (else torch's global RNG).
        """
        self._check(history, proprio, actions)
        b, device = len(history), self.device
        context = self.encode(inputs.as_tensor(history, device).flatten(0, 1))
        context = context.view(b, self.config.history, *context.shape[1:])
        noise = torch.randn((b, self.latent_channels, self.latent_size, self.latent_size), generator=generator,
                            device=generator.device if generator is not None else "cpu")
        proprio_t = inputs.as_tensor(proprio, device, torch.float32)
        actions_t = inputs.as_tensor(actions, device, torch.float32)
        latent = self.sample(context, proprio_t, actions_t, noise)
        return self.decode(latent), self.predict_proprio(proprio_t, actions_t).cpu().numpy()

    # --- training -------------------------------------------------------------------------

    def forward_train(self, history: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
                      next_frame: torch.Tensor, next_proprio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training losses {"frame", "proprio", "loss"}; "loss" = frame + proprio_weight * proprio.

        history (B, T, S, S, 3) uint8, next_frame (B, S, S, 3) uint8, proprio/next_proprio (B, P),
        actions (B, K, A). frame: MSE between the U-Net's output for the target frame and the
        scheduler's target (v) on the target latent noised at a uniformly drawn timestep; the
        frozen VAE encodes without gradients. proprio: L1 of the predicted proprio.
        """
        self._check(history, proprio, actions)
        inputs.expect("next_frame", next_frame, (len(history), *history.shape[2:]), "uint8")
        inputs.expect("next_proprio", next_proprio, tuple(proprio.shape), "float")
        b, device = len(history), self.device
        proprio, actions = proprio.to(device, torch.float32), actions.to(device, torch.float32)
        context = self.encode(history.flatten(0, 1)).view(b, self.config.history, -1, *[self.latent_size] * 2)
        target = self.encode(next_frame)                                                # (B, C, h, w)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=device)
        noise = torch.randn_like(target)
        goal = {"epsilon": noise, "sample": target,
                "v_prediction": self.scheduler.get_velocity(target, noise, t)}[self.scheduler.config.prediction_type]
        out = self.denoise(self.scheduler.add_noise(target, noise, t), t, context,
                           self.action_map(proprio, actions), self.action_encoder(actions, proprio))
        frame_loss = torch.nn.functional.mse_loss(out.float(), goal.float())
        proprio_loss = torch.nn.functional.l1_loss(self.predict_proprio(proprio, actions),
                                                   next_proprio.to(device, torch.float32))
        return {"frame": frame_loss, "proprio": proprio_loss,
                "loss": frame_loss + self.config.proprio_weight * proprio_loss}

    def loss(self, history: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
             next_frame: torch.Tensor, next_proprio: torch.Tensor) -> torch.Tensor:
        """Scalar training loss (frame + weighted proprio)."""
        return self.forward_train(history, proprio, actions, next_frame, next_proprio)["loss"]
