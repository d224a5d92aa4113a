"""Robot proprio as the networks see it: LIBERO's (eef pos 3, axis-angle 3, gripper qpos 2)
becomes (pos 3, rotation 6, gripper 2), normalised with statistics stored in the checkpoint.

The axis-angle of the eef sits near pi, where it flips (angle theta about n equals 2 pi - theta
about -n); the first two columns of the rotation matrix are continuous everywhere.
"""
from __future__ import annotations

import torch

RAW_DIM, FEATURE_DIM = 8, 11
FEATURE_PARTS = {"position": slice(0, 3), "rotation": slice(3, 9), "gripper": slice(9, 11)}   # of `features`


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    theta = v.norm(dim=-1, keepdim=True).clamp(min=1e-8)                      # (..., 1)
    k = v / theta                                                              # unit axis
    zero = torch.zeros_like(k[..., 0])
    kx = torch.stack([zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0],
                      -k[..., 1], k[..., 0], zero], dim=-1).view(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(kx)
    s, c = theta.sin()[..., None], theta.cos()[..., None]
    return eye + s * kx + (1 - c) * kx @ kx


def features(proprio: torch.Tensor) -> torch.Tensor:
    """(B, 8) raw proprio -> (B, 11): pos, the rotation's first two columns, gripper."""
    rot = axis_angle_to_matrix(proprio[:, 3:6].float())[..., :2].transpose(-1, -2).flatten(1)  # (B, 6)
    return torch.cat([proprio[:, :3].float(), rot, proprio[:, 6:8].float()], dim=-1)


class ProprioNorm(torch.nn.Module):
    """Features standardised with buffers (saved with the weights); `fit` sets them from data."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("std", torch.ones(FEATURE_DIM))

    @torch.no_grad()
    def fit(self, proprio: torch.Tensor) -> None:
        """proprio (N, 8) raw, from the training data."""
        f = features(proprio)
        self.mean.copy_(f.mean(0))
        self.std.copy_(f.std(0).clamp(min=1e-3))  # gripper qpos varies by ~0.004: keep it visible

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return ((features(proprio) - self.mean) / self.std).clamp(-10, 10)
