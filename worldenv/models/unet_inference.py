"""Inference-only forward paths for diffusers' U-Net blocks: the same arithmetic, laid out so the
CPU's kernels take their fast paths (measured on the shipped world model, issue 21).

`accelerate(unet)` switches a U-Net's `ResnetBlock2D` and `GroupNorm` modules to the subclasses
below. Their weights, names and state dict do not change, and with autograd on (training) they
run diffusers' own forward. Under `torch.no_grad` / `torch.inference_mode`:

- `InferenceResnetBlock2D` applies SiLU in place, skips the division by an output scale of 1 and
  adds the time embedding through a wide view when the activation is channels-last with few
  channels. ATen's broadcast add over a (N, H, W, 16) tensor runs 16-element inner loops, about
  5x slower than the same add on a (N, H*W/8, 128) view. Every output is bit for bit diffusers'.
- `InferenceGroupNorm` normalises a reduced-precision (bfloat16, float16) channels-last map of
  under 1024 pixels on a contiguous copy when its groups are not a multiple of 16 channels wide.
  ATen's channels-last kernel switches below 1024 pixels to one thread per (sample, group)
  reading `C / groups` strided values per pixel (`feature_map_threshold` in its GroupNorm
  kernel). With a partial vector per pixel (4, 8 or 12 channels a group) that ran 2.6-6.6x
  slower than the contiguous kernel plus the two copies at 16 x 16 here, with 24 about as fast,
  with 16, 32 or 48 3-6x faster. The sums run in another order, so outputs may differ in the
  last bit of a bfloat16. Float32 maps keep ATen's kernel (diffusers' attention hands
  channels-last maps on even in a float32 pass, and the gain there is small), so a float32 pass
  stays bit for bit diffusers'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.resnet import ResnetBlock2D

#: ATen's channels-last GroupNorm parallelises per (sample, group) below this many pixels
STRIDED_GROUP_NORM_BELOW = 1024
#: channels a group that the strided kernel reads in whole vectors (16 float32 lanes of AVX-512)
FULL_GROUP = 16
#: inner length (elements) that a per-channel broadcast add is widened to on channels-last maps
WIDE_ADD = 128
REDUCED = (torch.bfloat16, torch.float16)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def add_per_channel(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) + bias (N, C, 1, 1), bit for bit `x + bias`; on a channels-last x with fewer
    than WIDE_ADD channels, through a (N, H*W/k, k*C) view with the bias repeated k times."""
    n, c, h, w = x.shape
    k = WIDE_ADD // c if c < WIDE_ADD else 1
    if k <= 1 or not _channels_last(x) or (h * w) % k or x.dtype != bias.dtype:
        return x + bias
    wide = x.permute(0, 2, 3, 1).reshape(n, h * w // k, k * c)
    out = wide + bias.reshape(n, 1, c).repeat(1, 1, k)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


class InferenceGroupNorm(torch.nn.GroupNorm):
    """GroupNorm whose small reduced-precision channels-last maps take the contiguous kernel at inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strided = x.dim() == 4 and x.shape[2] * x.shape[3] < STRIDED_GROUP_NORM_BELOW
        partial = (x.shape[1] // self.num_groups) % FULL_GROUP != 0
        if torch.is_grad_enabled() or x.dtype not in REDUCED or not (_channels_last(x) and strided and partial):
            return super().forward(x)
        out = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
        return out.contiguous(memory_format=torch.channels_last)


class InferenceResnetBlock2D(ResnetBlock2D):
    """diffusers' ResnetBlock2D ("default" time-embedding norm, SiLU) without its extra passes."""

    def _fast(self) -> bool:
        return (not torch.is_grad_enabled() and self.time_embedding_norm == "default" and not self.skip_time_act
                and isinstance(self.nonlinearity, torch.nn.SiLU) and (not self.training or self.dropout.p == 0))

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or not self._fast():
            return super().forward(input_tensor, temb, *args, **kwargs)
        x, h = input_tensor, F.silu(self.norm1(input_tensor), inplace=True)
        if self.upsample is not None:
            if h.shape[0] >= 64:   # as diffusers: its nearest upsampling fails channels-last at large batches
                x, h = x.contiguous(), h.contiguous()
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        if temb is not None and self.time_emb_proj is not None:
            h = add_per_channel(h, self.time_emb_proj(F.silu(temb))[:, :, None, None])
        elif temb is not None:
            h = h + temb
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


#: diffusers' module class -> its inference path
INFERENCE = {ResnetBlock2D: InferenceResnetBlock2D, torch.nn.GroupNorm: InferenceGroupNorm}


def _switch(unet: torch.nn.Module, classes: dict[type, type]) -> torch.nn.Module:
    for module in unet.modules():
        module.__class__ = classes.get(type(module), type(module))
    return unet


def accelerate(unet: torch.nn.Module) -> torch.nn.Module:
    """Switch `unet`'s ResnetBlock2D and GroupNorm modules to the inference paths above (in place)."""
    return _switch(unet, INFERENCE)


def restore(unet: torch.nn.Module) -> torch.nn.Module:
    """Undo `accelerate` (in place): diffusers' own modules again, e.g. to measure against them."""
    return _switch(unet, {fast: plain for plain, fast in INFERENCE.items()})
