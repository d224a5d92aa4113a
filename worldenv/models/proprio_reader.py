"""Reading the robot's proprio off a frame: a small CNN, frame (B, 3, S, S) in [-1, 1] -> proprio
(B, P) float32.

Why: along imagined episodes the world model's proprio is integrated chunk by chunk (the last
proprio + the chunk's position deltas x gain + a learned correction), so its error compounds;
on the shipped models, replaying real episodes' actions, the eef position was off by 0.10-0.24 m
and the axis-angle by 0.33-0.67 rad after 15 chunks, and the policy, which reads proprio, then
acted as on an unrelated state (`worldenv align`'s action gap). The frame the world model
predicts keeps the arm where the policy expects it for much longer (its frame-only gap stays
small), so a proprio read off that frame has an error that does not grow with the horizon.
"""
from __future__ import annotations

import torch
from torch import nn

READER_WIDTHS = (32, 64, 128, 128)   # 64 px -> 4 x 4 after four stride-2 convs


class ProprioReader(nn.Module):
    """Four stride-2 conv blocks (GroupNorm, SiLU), then an MLP on the flattened 4 x 4 map."""

    def __init__(self, image_size: int, proprio_dim: int, widths: tuple[int, ...] = READER_WIDTHS):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            channels = width
        self.convs = nn.Sequential(*layers)
        side = max(1, image_size // 2 ** len(widths))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 256), nn.SiLU(),
                                  nn.Linear(256, proprio_dim))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        """frame (B, 3, S, S) in [-1, 1], any float dtype -> proprio (B, P) float32."""
        return self.head(self.convs(frame)).float()
