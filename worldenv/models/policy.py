"""Tiny Laplace action-chunk policy: frame + proprio + instruction -> Laplace(loc, scale) over (K, A).

As in World-Env's OpenVLA-OFT policy: the action head gives loc (tanh-bounded, as OFT's
continuous head), a separate scale head gives log b, and actions are sampled from a
per-dimension Laplace so PPO can score them with a log-density. The instruction goes through
learned embeddings of hashed words by default (`text`), or a frozen pretrained sentence
encoder (e.g. all-MiniLM-L6-v2, `language`); the proprio through a continuous rotation and the
normalisation stored with the weights (`proprio`).

Why hashed words by default: on the same 10 demos per task (libero_object tasks 0-2, LIBERO's
init states 0-9) and the same commands, held-out init states 30-39, training seeds 0-3, the
MiniLM path got 22, 27, 26, 21 of 30 and hashed words 28, 27, 28, 29 of 30, at least as good at
every seed. What a user gives up: a phrasing with words never seen in training maps to
embeddings that never trained (a pretrained encoder would place a synonym near the original).
"""
from __future__ import annotations

from typing import Literal

import pydantic
import torch

from worldenv.models import checkpoint, inputs, laplace, text, vision
from worldenv.models.proprio import FEATURE_DIM, ProprioNorm
from worldenv.models.roles import Spec


class PolicyConfig(pydantic.BaseModel):
    """Shape and size of the tiny policy."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    role: Literal["policy"] = "policy"
    arch: Literal["tiny-laplace-policy"] = "tiny-laplace-policy"
    name: str = pydantic.Field("tiny-laplace-policy", description="label reported in the spec")
    image_size: int = pydantic.Field(64, ge=16, description="frame side, pixels")
    chunk_length: int = pydantic.Field(8, ge=1, description="K, actions per chunk")
    action_dim: int = pydantic.Field(7, ge=1, description="A, dims per action")
    proprio_dim: Literal[8] = pydantic.Field(8, description="P: eef pos 3, axis-angle 3, gripper qpos 2")
    instruction_encoder: str = pydantic.Field("hashed", description="'hashed' words (learned embeddings), or a "
                                              "frozen sentence encoder (a name `language` resolves, e.g. "
                                              "all-MiniLM-L6-v2, or a directory)")
    text_dim: int = pydantic.Field(384, ge=1, description="the sentence encoder's embedding size")
    vocab_size: int = pydantic.Field(1024, ge=2, description="hashed words only: vocabulary")
    max_tokens: int = pydantic.Field(24, ge=1, description="hashed words only: words kept")
    width: int = pydantic.Field(128, ge=8, description="feature width")
    action_spread: tuple[float, ...] | None = pydantic.Field(
        None, description="per action dimension, half the 1-99 % range of the actions it was trained on (fitted by "
        "`train policy`): the unit of the exploration scale, so noise is as large for a rotation as its demos "
        "move; none = 1 everywhere")
    noise: laplace.Noise = laplace.noise_field()
    min_log_scale: float = -5.0
    max_log_scale: float = 1.0

    _scales_ordered = pydantic.model_validator(mode="after")(laplace.scales_ordered)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(d_in, d_hidden), torch.nn.SiLU(), torch.nn.Linear(d_hidden, d_out))


class LaplacePolicy(torch.nn.Module, checkpoint.Pretrained, laplace.LaplacePolicyRole):
    """Vision + instruction + proprio -> Laplace over an action chunk (B, K, A)."""

    config_class = PolicyConfig

    def __init__(self, config: PolicyConfig | None = None):
        super().__init__()
        self.config = config = config or PolicyConfig()
        w, ka = config.width, config.chunk_length * config.action_dim
        self.vision = vision.ConvEncoder(w)
        self.instruction = text.InstructionFeatures(config.instruction_encoder, w, config.text_dim,
                                                    config.vocab_size, config.max_tokens)
        self.proprio_norm = ProprioNorm()
        self.proprio = _mlp(FEATURE_DIM, w, w)
        self.trunk = torch.nn.Sequential(_mlp(3 * w, 2 * w, w), torch.nn.SiLU())
        self.loc_head = torch.nn.Linear(w, ka)
        self.scale_head = torch.nn.Linear(w, ka)

    def forward(self, frames: torch.Tensor, proprio_raw: torch.Tensor,
                instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, H, W, 3) uint8, proprio (B, P) raw, B instructions -> loc, scale (B, K, A)."""
        c = self.config
        dims: dict[str, int] = {}
        inputs.expect("frames", frames, ("B", c.image_size, c.image_size, 3), "uint8", dims)
        inputs.expect("proprio", proprio_raw, ("B", c.proprio_dim), "float", dims)
        inputs.expect_texts("instructions", instructions, dims)
        feats = torch.cat([self.vision(frames), self.instruction(instructions, self.device, self.dtype),
                           self.proprio(self.proprio_norm(proprio_raw).to(self.dtype))], dim=-1)   # (B, 3W)
        h = self.trunk(feats)                                                       # (B, W)
        shape = (-1, c.chunk_length, c.action_dim)
        loc = torch.tanh(self.loc_head(h)).view(shape)                              # (B, K, A)
        # A sigmoid squash keeps log b inside [min, max] but, unlike a hard clamp, never
        # zeroes the gradient; at init it sits mid-range (b ~ 0.14 with the defaults).
        span = c.max_log_scale - c.min_log_scale
        log_scale = c.min_log_scale + span * torch.sigmoid(self.scale_head(h)).view(shape)
        return loc, log_scale.exp()

    def reset_scale(self, scale: float) -> None:
        """Set b to `scale` in normalised action units: scale x action_spread per dimension, the
        same at every step of the chunk, as a learnable starting point for RL
        (`laplace.reset_scale_head`; a dimension whose b would fall under the floor sits just above it)."""
        c = self.config
        spread = torch.tensor(c.action_spread or [1.0] * c.action_dim, dtype=torch.float64)
        laplace.reset_scale_head(self.scale_head, scale, c.min_log_scale, c.max_log_scale,
                                 per_output=(scale * spread).repeat(c.chunk_length))

    def fit_action_spread(self, actions: torch.Tensor) -> None:
        """actions (N, A) executed in the training data -> config.action_spread."""
        low, high = torch.quantile(actions.double(), torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0)
        spread = ((high - low) / 2).clamp(min=1e-3)
        self.config = self.config.model_copy(update={"action_spread": tuple(round(float(x), 6) for x in spread)})

    @property
    def spec(self) -> Spec:
        c = self.config
        return Spec("policy", c.arch, c.name, c.image_size, c.chunk_length, c.action_dim, c.proprio_dim)

    def distribution(self, frames: torch.Tensor, proprio: torch.Tensor,
                     instructions: list[str]) -> torch.distributions.Laplace:
        """Laplace with batch shape (B, K, A), in float32 whatever the model dtype."""
        loc, scale = self(frames, proprio, list(instructions))
        return torch.distributions.Laplace(loc.float(), scale.float())
