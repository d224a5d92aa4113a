"""Small convolutional frame encoder shared by the policy and the reflector."""
from __future__ import annotations

import math

import torch


def to_chw(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float (..., 3, H, W) in [0, 1] of `dtype`."""
    return frames.movedim(-1, -3).to(dtype) / 255.0


def _block(c_in: int, c_out: int) -> torch.nn.Sequential:
    groups = math.gcd(8, c_out)
    return torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                               torch.nn.GroupNorm(groups, c_out), torch.nn.SiLU())


class ConvEncoder(torch.nn.Module):
    """uint8 frames (B, H, W, 3) -> features (B, width).

    Four stride-2 conv blocks (64 px -> 4x4), then the flattened 4x4 map is projected, so the
    features keep *where* things are, which a global average would throw away.
    """

    def __init__(self, width: int, channels: tuple[int, ...] = (16, 32, 64, 64), grid: int = 4):
        super().__init__()
        chans = (3, *channels)
        self.convs = torch.nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.pool = torch.nn.AdaptiveAvgPool2d(grid)
        self.proj = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels[-1] * grid * grid, width),
                                        torch.nn.LayerNorm(width), torch.nn.SiLU())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, H, W, 3) uint8 -> (B, width) in the encoder's dtype."""
        x = to_chw(frames, self.proj[1].weight.dtype) * 2.0 - 1.0  # (B, 3, H, W) in [-1, 1]
        return self.proj(self.pool(self.convs(x)))
