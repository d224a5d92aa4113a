"""OpenVLA-OFT's own head modules, with OFT's parameter names, so its action_head and
proprio_projector checkpoints load as released: the L1-regression action head (an MLP-ResNet
over the action slots' hidden states) and the proprio projector (proprio -> one LM token)."""
from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """Pre-LayerNorm residual MLP block: x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm -> Linear -> ReLU -> residual blocks -> LayerNorm -> Linear."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1, self.fc1 = nn.LayerNorm(input_dim), nn.Linear(input_dim, hidden_dim)
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2, self.fc2 = nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """OFT's continuous head: slot states (B, K*A, D) -> (B, K, A*D) -> normalised actions (B, K, A)."""

    def __init__(self, llm_dim: int, action_dim: int, chunk_length: int):
        super().__init__()
        self.chunk_length = chunk_length
        self.model = MLPResNet(2, llm_dim * action_dim, llm_dim, action_dim)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        return self.model(slots.reshape(slots.shape[0], self.chunk_length, -1))


class ProprioProjector(nn.Module):
    """OFT's proprio projector: normalised proprio (B, P) -> one LM token (B, D)."""

    def __init__(self, llm_dim: int, proprio_dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(proprio_dim, llm_dim), nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))
