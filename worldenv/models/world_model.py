"""Action-conditioned world model: history frames + proprio + action chunk -> next frame + proprio.

One diffusers `UNet2DModel`, one conditioning path, two prediction modes (config `mode`):
- `residual`: one pass at t = 0 predicts next - last frame (the CPU default: in a feasibility
  run on a 2-core CPU it beat both copy-last-frame and full-frame pixel diffusion);
- `diffusion`: the same residual is diffused and sampled with a few DDIM steps (v-prediction
  by default), the path for GPUs and paper-scale U-Nets.
Conditioning: the history frames (oldest first) and an *action map* (the end-effector path the
chunk leads to, drawn as markers on black) are stacked as input channels; the flattened chunk
and the proprio enter through the U-Net's class embedding ("identity" type, fed by our own
MLP). Proprio is predicted as proprio + prior + learned correction, where the prior integrates
the chunk's position deltas with `action_gain`; or, with `proprio_dynamics`, by a learned arm
dynamics trained unrolled on its own predictions (`worldenv.models.proprio_dynamics`).

Its memory bank (`MemoryBank`, one per imagined episode) is a rolling window of the last
`history` frames, the current proprio and the previous chunk; callers hold it as an opaque state.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler

from worldenv.models import checkpoint, inputs, precision, unet_inference, vision
from worldenv.models import proprio_dynamics
from worldenv.models.proprio_dynamics import ArmState
from worldenv.models.proprio_reader import ProprioReader
from worldenv.models.roles import Prediction, Spec, StartStates

TRAIN_TIMESTEPS = 1000
MAP_EXP_FLOOR = -80.0


class WorldModelConfig(pydantic.BaseModel):
    """Shape, size, prediction mode and action-map geometry of the world model."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["world_model"] = "world_model"
    arch: Literal["tiny-unet"] = "tiny-unet"
    name: str = pydantic.Field("tiny-unet", description="label reported in the spec")
    image_size: int = pydantic.Field(64, ge=8, description="frame side, pixels")
    chunk_length: int = pydantic.Field(8, ge=1, description="K, actions per chunk (one world-model step)")
    action_dim: int = pydantic.Field(7, ge=4, description="A: pos delta 3, rot delta 3, gripper 1")
    proprio_dim: int = pydantic.Field(8, ge=3, description="P: eef pos 3, axis-angle 3, gripper qpos 2")
    history: int = pydantic.Field(2, ge=1, description="history frames from the session's memory bank")
    mode: Literal["residual", "diffusion"] = "residual"
    sampler_steps: int = pydantic.Field(4, ge=1, le=10, description="diffusion mode: DDIM steps")
    prediction_type: Literal["v_prediction", "sample", "epsilon"] = "v_prediction"
    # (16, 32, 64) rather than (32, 64, 64): the 64 px level dominates the cost; measured here, one
    # residual predict at B = 8 on one core took 117 ms against 225 ms for (32, 64, 64).
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = pydantic.Field(1, ge=1)
    patch: int = pydantic.Field(1, ge=1, le=4, description="space-to-depth factor: the U-Net runs at image_size / "
                                "patch on patch x patch pixel blocks stacked as channels (pixel unshuffle in, pixel "
                                "shuffle out); 2 made a step about 3.3x cheaper on a CPU (bench/world_model_quality.py)")
    action_map: bool = pydantic.Field(True, description="draw the chunk's end-effector path as an extra pixel channel")
    action_gain: float = pydantic.Field(0.35 * 0.05, gt=0,
                                        description="metres of eef motion per unit of position action per step (to calibrate)")
    # Fixed affine projection of world (x, y, z) metres to image (col, row) in [0, 1]: uncalibrated
    # defaults for LIBERO's agentview (camera in front of the table, looking back at the robot).
    map_matrix: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.0, 1.0, 0.0), (0.6, 0.0, -1.0))
    map_offset: tuple[float, float] = (0.5, 1.5)
    marker_size: float = pydantic.Field(0.025, gt=0, description="marker radius (std) as a fraction of the image side")
    proprio_weight: float = pydantic.Field(10.0, ge=0, description="weight of the proprio L1 term in the loss")
    proprio_reader: bool = pydantic.Field(False, description="read the next proprio off the predicted frame (a small "
                                          "CNN) instead of integrating it chunk by chunk: no error compounding over "
                                          "long imagination")
    proprio_dynamics: bool = pydantic.Field(False, description="predict the next proprio with a learned arm dynamics "
                                            "(rotation composed, the previous chunk as history, trained unrolled on "
                                            "its own predictions) instead of the integrated prior + one-step correction")
    proprio_members: int = pydantic.Field(1, ge=1, le=16, description="proprio_dynamics: how many dynamics, trained "
                                          "apart, make its step (the mean of their deltas); 1 = a single dynamics")

    @pydantic.model_validator(mode="after")
    def _unet_fits(self):
        if self.proprio_reader and self.proprio_dynamics:
            raise ValueError("proprio_reader and proprio_dynamics: choose one way to predict the proprio")
        if self.proprio_members > 1 and not self.proprio_dynamics:
            raise ValueError(f"proprio_members ({self.proprio_members}): an ensemble of proprio dynamics needs "
                             "proprio_dynamics")
        if not self.block_out_channels or min(self.block_out_channels) < 8:
            raise ValueError(f"block_out_channels: need at least one block of >= 8 channels, got {self.block_out_channels}")
        factor = 2 ** (len(self.block_out_channels) - 1) * self.patch
        if self.image_size % factor:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by {factor} "
                             f"for {len(self.block_out_channels)} U-Net blocks at patch {self.patch}")
        return self


def eef_path(pos: torch.Tensor, actions: torch.Tensor, gain: float) -> torch.Tensor:
    """End-effector positions after each action: pos (B, 3), actions (B, K, A) -> (B, K, 3)."""
    return pos.unsqueeze(1) + gain * actions[..., :3].clamp(-1, 1).cumsum(dim=1)


def render_action_map(path: torch.Tensor, config: WorldModelConfig) -> torch.Tensor:
    """Draw the path (B, K, 3) as Gaussian markers on black -> (B, 1, S, S) in [0, 1].

    Later markers are brighter, so the map shows the direction of motion as well as the goal.
    """
    s, k = config.image_size, path.shape[1]
    matrix = path.new_tensor(config.map_matrix)                                     # (2, 3)
    uv = path @ matrix.T + path.new_tensor(config.map_offset)                        # (B, K, 2) (col, row)
    grid = (torch.arange(s, device=path.device, dtype=path.dtype) + 0.5) / s         # (S,)
    dc = (grid.view(1, 1, 1, s) - uv[..., 0, None, None]) ** 2                       # (B, K, 1, S)
    dr = (grid.view(1, 1, s, 1) - uv[..., 1, None, None]) ** 2                       # (B, K, S, 1)
    # Exponent floored at -80: far from a marker exp underflows (denormals, zero), a slow path of
    # the CPU's exp (the whole map at B = 8: 3.9 ms before, 1.0 ms floored, one thread here), and
    # exp(-80) ~ 2e-35 still becomes exactly -1 once the map is scaled to [-1, 1]: same U-Net input.
    exponent = (-(dc + dr) / (2 * config.marker_size ** 2)).clamp_(min=MAP_EXP_FLOOR)
    blobs = torch.exp(exponent)                                                      # (B, K, S, S)
    weight = torch.arange(1, k + 1, device=path.device, dtype=path.dtype) / k        # (K,)
    return (blobs * weight.view(1, k, 1, 1)).amax(dim=1, keepdim=True)


def _unet(config: WorldModelConfig, in_channels: int, embed_dim: int) -> UNet2DModel:
    blocks, area = len(config.block_out_channels), config.patch ** 2
    return UNet2DModel(
        sample_size=config.image_size // config.patch, in_channels=in_channels * area, out_channels=3 * area,
        down_block_types=("DownBlock2D",) * blocks, up_block_types=("UpBlock2D",) * blocks,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        norm_num_groups=math.gcd(8, *config.block_out_channels), time_embedding_dim=embed_dim,
        class_embed_type="identity")  # our own MLP maps (actions, proprio) to the embedding


def _scheduler(config: WorldModelConfig) -> DDIMScheduler:
    # Zero terminal SNR with "trailing" spacing makes few-step sampling start from pure noise;
    # it is only well-posed for v-prediction (epsilon cannot be inverted at alpha = 0).
    scheduler = DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                              clip_sample=False, prediction_type=config.prediction_type,
                              timestep_spacing="trailing",
                              rescale_betas_zero_snr=config.prediction_type == "v_prediction")
    scheduler.set_timesteps(config.sampler_steps)  # once: step() then only reads, so it is thread-safe
    return scheduler


@dataclasses.dataclass(frozen=True)
class MemoryBank:
    """One episode's state: the last `history` frames, the current proprio, and the proprio before
    the last chunk with that chunk (None at a start: the robot taken as at rest)."""

    frames: np.ndarray                          # (T, S, S, 3) uint8, oldest first
    proprio: np.ndarray                         # (P,) float32
    previous_proprio: np.ndarray | None = None  # (P,) float32
    previous_actions: np.ndarray | None = None  # (K, A) float32, clipped

    def push(self, frame: np.ndarray, proprio: np.ndarray, actions: np.ndarray | None = None) -> "MemoryBank":
        """The bank after a chunk of `actions` (K, A) that led to `frame` and `proprio`."""
        return MemoryBank(np.concatenate([self.frames[1:], frame[None]]), np.asarray(proprio, np.float32),
                          self.proprio, None if actions is None else np.asarray(actions, np.float32))

    def previous(self, chunk_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(proprio, actions) before the last chunk; at a start the proprio itself and zeros."""
        if self.previous_proprio is None or self.previous_actions is None:
            return self.proprio, np.zeros(chunk_shape, np.float32)
        return self.previous_proprio, self.previous_actions


class Transitions:
    """What every world-model arch shares about one transition: the input checks and the proprio
    prediction (prior + learned correction). Needs `config` (image_size, history, proprio_dim,
    chunk_length, action_dim, action_gain), `proprio_head` and `dtype`."""

    def _check(self, history, proprio, actions) -> None:
        c, dims = self.config, {}
        s = c.image_size
        inputs.expect("history", history, ("B", c.history, s, s, 3), "uint8", dims)
        inputs.expect("proprio", proprio, ("B", c.proprio_dim), "float", dims)
        inputs.expect("actions", actions, ("B", c.chunk_length, c.action_dim), "float", dims)

    def predict_proprio(self, proprio: torch.Tensor, actions: torch.Tensor,
                        previous: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """proprio (B, P) + actions (B, K, A) float32 -> next proprio (B, P) float32.

        next = proprio + prior + learned correction; the prior moves the eef position by the
        chunk's position deltas times `action_gain` and leaves the rest unchanged. With a proprio
        dynamics (config `proprio_dynamics`), its step instead, given the `previous` (proprio
        (B, P), actions (B, K, A)) before the last chunk (None: the robot at rest).
        """
        proprio, actions = proprio.float(), actions.float()
        dynamics = getattr(self, "proprio_dynamics", None)
        if dynamics is not None:
            state = ArmState.from_raw(proprio)
            before, before_actions = previous if previous is not None else (proprio, torch.zeros_like(actions))
            return dynamics.step(state, actions, ArmState.from_raw(before.float()), before_actions.float()).raw()
        prior = torch.zeros_like(proprio)
        prior[:, :3] = eef_path(proprio[:, :3], actions, self.config.action_gain)[:, -1] - proprio[:, :3]
        flat = torch.cat([actions.flatten(1), proprio], dim=-1).to(self.dtype)          # (B, K*A + P)
        return proprio + prior + self.proprio_head(flat).float()


class ActionConditionedWorldModel(torch.nn.Module, checkpoint.Pretrained, Transitions):
    """U-Net world model; `predict` for serving, `loss` for training, both modes."""

    config_class = WorldModelConfig
    #: dtype the U-Net's pass runs in under torch.autocast in `predict` (None: the weights' own);
    #: a serving choice (`use_autocast`), not saved with the checkpoint; training never uses it
    autocast: torch.dtype | None = None
    #: run the U-Net pass on a channels-last input in float32 too (`use_channels_last`), a serving choice
    channels_last: bool = False

    def __init__(self, config: WorldModelConfig | None = None):
        super().__init__()
        self.config = config = config or WorldModelConfig()
        embed = 4 * config.block_out_channels[0]
        cond_dim = config.chunk_length * config.action_dim + config.proprio_dim
        in_channels = 3 * config.history + int(config.action_map) + 3 * (config.mode == "diffusion")
        # NCHW by default: channels-last made a B = 8 pass about 1.3x faster on one CPU thread, but
        # oneDNN then rounds differently per batch size on some CPUs (8.5 % of pixels a grey level or
        # more apart between a batch of 3 and three of 1 on one, tests/test_gym_env.py, against under
        # 1 % in NCHW; 0.003 % on an AVX2-only one, bench/rollout.py (g)). It is a serving choice
        # (`use_channels_last`); the bfloat16 path (`use_autocast`) rounds per batch size anyway, and
        # runs channels-last.
        self.unet = unet_inference.accelerate(_unet(config, in_channels, embed))
        self.cond = torch.nn.Sequential(torch.nn.Linear(cond_dim, embed), torch.nn.SiLU(), torch.nn.Linear(embed, embed))
        self.proprio_head = torch.nn.Sequential(torch.nn.Linear(cond_dim, 128), torch.nn.SiLU(),
                                                torch.nn.Linear(128, config.proprio_dim))
        with torch.no_grad():  # start as a small correction on top of the integrated prior
            self.proprio_head[-1].weight.mul_(0.01)
            self.proprio_head[-1].bias.zero_()
        self.proprio_reader = None
        if config.proprio_reader:
            self.add_proprio_reader()
        self.proprio_dynamics = None
        if config.proprio_dynamics:
            self.add_proprio_dynamics()
        self.scheduler = _scheduler(config)

    def add_proprio_dynamics(self, members: int | None = None) -> None:
        """Give a model made without one (e.g. a checkpoint to fine-tune) a fresh proprio dynamics
        of `members` (default the config's `proprio_members`; its statistics unset:
        `fit_statistics` before training)."""
        if self.proprio_dynamics is None:
            c = self.config
            c = c.model_copy(update={"proprio_dynamics": True, "proprio_members": members or c.proprio_members})
            self.proprio_dynamics = proprio_dynamics.make(c.chunk_length, c.action_dim, c.proprio_members).to(self.device)
            self.config = c

    def drop_proprio_dynamics(self) -> None:
        """The model as it was before `add_proprio_dynamics` (the same frames; the proprio
        integrated again), e.g. to train a fresh dynamics onto a checkpoint that has one."""
        self.proprio_dynamics = None
        self.config = self.config.model_copy(update={"proprio_dynamics": False, "proprio_members": 1})

    def add_proprio_reader(self) -> None:
        """Give a model made without one (e.g. a checkpoint to fine-tune) a fresh proprio reader."""
        if self.proprio_reader is None:
            c = self.config
            self.proprio_reader = ProprioReader(c.image_size, c.proprio_dim).to(self.device, self.dtype)
            self.config = c.model_copy(update={"proprio_reader": True})

    def use_autocast(self, choice: str) -> torch.dtype | None:
        """Run `predict`'s U-Net pass under autocast: 'none' | 'auto' | 'bfloat16' | 'float16'
        (`worldenv.models.precision`), on a channels-last input. Only the U-Net: conditioning, the
        action map and the proprio stay in the weights' dtype. Returns the dtype chosen (None: off)."""
        self.autocast = precision.resolve(choice, self.device)
        return self.autocast

    def use_channels_last(self, on: bool = True) -> None:
        """Run `predict`'s U-Net pass on a channels-last input in float32 as well (bfloat16 always
        does): faster on a CPU, with rounding that may depend on the batch size (see __init__)."""
        self.channels_last = on

    # --- conditioning ---------------------------------------------------------------------

    def _condition(self, history: torch.Tensor, proprio: torch.Tensor,
                   actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> image channels (B, C, S, S), last frame (B, 3, S, S) in [-1, 1], embedding (B, E).

        proprio and actions come in float32: positions need its precision even when the
        network runs in bfloat16.
        """
        dtype = self.dtype
        frames = vision.to_chw(history, dtype) * 2.0 - 1.0                             # (B, T, 3, S, S)
        channels = [frames.flatten(1, 2)]                                               # (B, 3T, S, S)
        if self.config.action_map:
            path = eef_path(proprio[:, :3], actions, self.config.action_gain)            # (B, K, 3)
            channels.append(render_action_map(path, self.config).to(dtype) * 2.0 - 1.0)  # (B, 1, S, S)
        flat = torch.cat([actions.flatten(1), proprio], dim=-1).to(dtype)               # (B, K*A + P)
        return torch.cat(channels, dim=1), frames[:, -1], self.cond(flat)

    def _unet_out(self, image: torch.Tensor, t: torch.Tensor | int, embed: torch.Tensor) -> torch.Tensor:
        """The U-Net on image channels (B, C, S, S) -> (B, 3, S, S), through patch x patch blocks."""
        p = self.config.patch
        if p == 1:
            return self.unet(image, t, class_labels=embed, return_dict=False)[0]
        out = self.unet(F.pixel_unshuffle(image, p), t, class_labels=embed, return_dict=False)[0]
        return F.pixel_shuffle(out, p)

    # --- the WorldModel role -----------------------------------------------------------------

    @property
    def spec(self) -> Spec:
        c = self.config
        return Spec("world_model", c.arch, c.name, c.image_size, c.chunk_length, c.action_dim, c.proprio_dim,
                    {"history": c.history, "mode": c.mode,
                     "autocast": str(self.autocast).removeprefix("torch.") if self.autocast else "none",
                     "channels_last": self.channels_last or self.autocast is not None})

    def start(self, starts: StartStates) -> list[MemoryBank]:
        """Start frames (B, S, S, 3), or a (B, T, S, S, 3) history, -> one memory bank each.

        Fewer than `history` frames are padded by repeating the oldest; more keep the latest.
        """
        frames, t = np.asarray(starts.frames), self.config.history
        frames = frames[:, None] if frames.ndim == 4 else frames                     # (B, T', S, S, 3)
        s = self.config.image_size
        inputs.expect("frames", frames, ("B", "T", s, s, 3), "uint8")
        inputs.expect("proprio", starts.proprio, (len(frames), self.config.proprio_dim), "float")
        pad = np.repeat(frames[:, :1], max(0, t - frames.shape[1]), axis=1)
        window = np.concatenate([pad, frames], axis=1)[:, -t:]                       # (B, T, S, S, 3)
        return [MemoryBank(w.copy(), np.asarray(p, np.float32)) for w, p in zip(window, starts.proprio)]

    def step(self, states: Sequence[MemoryBank], actions: np.ndarray) -> tuple[Prediction, list[MemoryBank]]:
        """Predict each episode's next frame and proprio after its action chunk (B, K, A).

        Actions are clipped to [-1, 1] here, as the simulator clips what it executes.
        """
        history = np.stack([s.frames for s in states])                               # (B, T, S, S, 3)
        proprio = np.stack([s.proprio for s in states])                              # (B, P)
        actions = np.clip(actions, -1.0, 1.0)
        previous = None
        if self.proprio_dynamics is not None:   # only the dynamics reads the chunk before
            before = [s.previous(actions.shape[1:]) for s in states]
            previous = (np.stack([p for p, _ in before]), np.stack([a for _, a in before]))
        frames, next_proprio = self.predict(history, proprio, actions, previous=previous)
        banks = [s.push(f, p, a) for s, f, p, a in zip(states, frames, next_proprio, actions)]
        return Prediction(frames, next_proprio), banks

    def end(self, states: Sequence[MemoryBank]) -> None:
        """Nothing to release in-process."""

    # --- inference ------------------------------------------------------------------------

    def _sample_residual(self, image, embed, generator) -> torch.Tensor:
        """Residual (B, 3, S, S): one pass, or DDIM sampling in diffusion mode."""
        if self.config.mode == "residual":
            return self._unet_out(image, 0, embed)
        shape = (image.shape[0], 3, *image.shape[2:])
        device = generator.device if generator is not None else image.device
        x = torch.randn(shape, generator=generator, device=device).to(image.device, image.dtype)
        for t in self.scheduler.timesteps:
            out = self._unet_out(torch.cat([image, x], dim=1), t.to(image.device), embed)
            x = self.scheduler.step(out, t, x, eta=0.0, return_dict=False)[0].to(image.dtype)
        return x

    @torch.inference_mode()
    def predict(self, history: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
                generator: torch.Generator | None = None,
                previous: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Next frame (B, S, S, 3) uint8 and proprio (B, P) float32.

        history (B, T, S, S, 3) uint8 with T = config.history, oldest first; proprio (B, P)
        float32; actions (B, K, A) float32. `generator` seeds the diffusion sampler. `previous`:
        the proprio (B, P) and actions (B, K, A) before the last chunk, read by a proprio dynamics
        (None: the robot at rest).
        """
        self._check(history, proprio, actions)
        device = self.device
        history_t = inputs.as_tensor(history, device)
        proprio_t = inputs.as_tensor(proprio, device, torch.float32)
        actions_t = inputs.as_tensor(actions, device, torch.float32)
        image, last, embed = self._condition(history_t, proprio_t, actions_t)
        if self.autocast is not None or self.channels_last:   # oneDNN's convolutions run faster channels-last
            image = image.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device, self.autocast):
            residual = self._sample_residual(image, embed, generator)
        frame = (last + residual.to(last.dtype)).clamp(-1, 1)                           # (B, 3, S, S)
        pixels = ((frame.float() + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        if self.proprio_reader is not None:   # read off the frame as served (rounded to uint8)
            next_proprio = self.proprio_reader(pixels.permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0)
        else:
            before = None if previous is None else (inputs.as_tensor(previous[0], device, torch.float32),
                                                    inputs.as_tensor(previous[1], device, torch.float32))
            next_proprio = self.predict_proprio(proprio_t, actions_t, before)
        return pixels.cpu().numpy(), next_proprio.cpu().numpy()

    # --- training -------------------------------------------------------------------------

    def forward_train(self, history: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
                      next_frame: torch.Tensor, next_proprio: torch.Tensor,
                      teacher_frame: torch.Tensor | None = None, teacher_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """Training losses {"frame", "proprio", "loss"} for a batch; "loss" is their weighted sum.

        history (B, T, S, S, 3) uint8, next_frame (B, S, S, 3) uint8, proprio/next_proprio
        (B, P), actions (B, K, A). Residual mode: L1 on the predicted residual. Diffusion mode:
        MSE on the scheduler's target (v, sample or epsilon) at a uniformly drawn timestep.
        `teacher_frame` (B, S, S, 3) uint8, residual mode (distillation): a share `teacher_weight`
        of the frame loss is the L1 to the teacher's residual instead ("distill"; "frame" stays
        the real one's).
        """
        self._check(history, proprio, actions)
        inputs.expect("next_frame", next_frame, (len(history), *history.shape[2:]), "uint8")
        inputs.expect("next_proprio", next_proprio, tuple(proprio.shape), "float")
        dtype = self.dtype
        proprio, actions = proprio.to(self.device, torch.float32), actions.to(self.device, torch.float32)
        image, last, embed = self._condition(history.to(self.device), proprio, actions)
        real_next = vision.to_chw(next_frame.to(self.device), dtype) * 2.0 - 1.0
        target = real_next - last                                                      # (B, 3, S, S)
        frame_loss, residual = self._frame_loss(image, embed, target)
        out = {"frame": frame_loss}
        if teacher_frame is not None:
            if residual is None:
                raise ValueError("teacher_frame: distillation needs a residual-mode world model")
            inputs.expect("teacher_frame", teacher_frame, tuple(next_frame.shape), "uint8")
            taught = vision.to_chw(teacher_frame.to(self.device), dtype) * 2.0 - 1.0 - last
            out["distill"] = torch.nn.functional.l1_loss(residual.float(), taught.float())
            frame_loss = (1 - teacher_weight) * frame_loss + teacher_weight * out["distill"]
        next_proprio = next_proprio.to(self.device, torch.float32)
        if self.proprio_dynamics is None:
            proprio_loss = torch.nn.functional.l1_loss(self.predict_proprio(proprio, actions), next_proprio)
            out |= {"proprio": proprio_loss, "loss": frame_loss + self.config.proprio_weight * proprio_loss}
        else:  # the dynamics trains unrolled on whole episodes (`train world-model --proprio-dynamics`)
            out["loss"] = frame_loss
        if self.proprio_reader is not None:
            # read the real next frame, and the one-step prediction (what it reads when served)
            frames = [real_next] + ([(last + residual.detach()).clamp(-1, 1)] if residual is not None else [])
            read = sum(torch.nn.functional.l1_loss(self.proprio_reader(f), next_proprio) for f in frames) / len(frames)
            out |= {"reader": read, "loss": out["loss"] + self.config.proprio_weight * read}
        return out

    def _frame_loss(self, image, embed, residual) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame loss, and in residual mode the predicted residual (None in diffusion mode)."""
        if self.config.mode == "residual":
            predicted = self._unet_out(image, 0, embed)
            return torch.nn.functional.l1_loss(predicted.float(), residual.float()), predicted
        t = torch.randint(0, TRAIN_TIMESTEPS, (residual.shape[0],), device=residual.device)
        noise = torch.randn_like(residual)
        noisy = self.scheduler.add_noise(residual, noise, t)
        target = {"epsilon": noise, "sample": residual,
                  "v_prediction": self.scheduler.get_velocity(residual, noise, t)}[self.config.prediction_type]
        out = self._unet_out(torch.cat([image, noisy], dim=1), t, embed)
        return torch.nn.functional.mse_loss(out.float(), target.float()), None

    def loss(self, history: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
             next_frame: torch.Tensor, next_proprio: torch.Tensor) -> torch.Tensor:
        """Scalar training loss (frame + weighted proprio) in either mode."""
        return self.forward_train(history, proprio, actions, next_frame, next_proprio)["loss"]
