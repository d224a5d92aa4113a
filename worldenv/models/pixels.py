"""A Hugging Face image processor (`preprocessor_config.json`: resize, centre crop, rescale,
normalise) applied in torch: batched, on the model's device, no PIL. Shared by the paper-scale
archs that read a VLM's directory.

    processor = pixels.read(raw_json, path / "preprocessor_config.json")
    pixel_values = processor(frames, dtype)            # (N, H, W, 3) uint8 -> (N, 3, h, w)

Resizing is torch's bicubic with antialias, so values differ slightly from PIL's.
"""
from __future__ import annotations

import math
import pathlib
from typing import Any

import pydantic
import torch


class ImageProcessor(pydantic.BaseModel):
    """What a forward pass takes from preprocessor_config.json (a CLIP or SigLIP image processor's)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    do_resize: bool = True
    size: dict[str, int] | None = None
    do_center_crop: bool = False
    crop_size: dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    _raw: dict[str, Any] = pydantic.PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        """The file's contents as read (what a checkpoint writes back)."""
        return self._raw

    def resize_to(self, side: int) -> tuple[int, int] | None:
        """(h, w) a square frame of `side` pixels is resized to, or None."""
        return _hw(self.size, "size", side) if self.do_resize else None

    def crop_to(self) -> tuple[int, int] | None:
        return _hw(self.crop_size, "crop_size", None) if self.do_center_crop else None

    def output_size(self, side: int) -> tuple[int, int] | None:
        """(h, w) of the pixel values made from square frames of `side` pixels (None: unchanged)."""
        return self.crop_to() or self.resize_to(side)

    def __call__(self, frames: torch.Tensor, dtype: torch.dtype, keep_area: float = 1.0) -> torch.Tensor:
        """frames (N, H, W, 3) uint8 -> pixel values (N, 3, h, w) in `dtype`. `keep_area` < 1 first
        crops the centre to that fraction of the area (OFT's evaluation crop)."""
        x = frames.permute(0, 3, 1, 2).float()                                        # (N, 3, H, W)
        if keep_area < 1:
            x = _centre(x, round(x.shape[-2] * math.sqrt(keep_area)), round(x.shape[-1] * math.sqrt(keep_area)))
        size = self.resize_to(x.shape[-1])
        if size is not None and tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True).clamp(0, 255)
        if (crop := self.crop_to()) is not None:
            x = _centre(x, *crop)
        x = x * self.rescale_factor if self.do_rescale else x
        if self.do_normalize:
            mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.image_mean, self.image_std))
            x = (x - mean) / std
        return x.to(dtype)


class PrismaticProcessor(pydantic.BaseModel):
    """OpenVLA's PrismaticImageProcessor: one resize + normalisation per vision backbone, the
    results stacked on channels (N, 3 x backbones, h, w); "resize-naive" squashes to the size."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    input_sizes: list[tuple[int, int, int]]
    means: list[tuple[float, float, float]]
    stds: list[tuple[float, float, float]]
    image_resize_strategy: str = "resize-naive"
    _raw: dict[str, Any] = pydantic.PrivateAttr(default_factory=dict)

    @pydantic.model_validator(mode="after")
    def _one_per_backbone(self):
        if not len(self.input_sizes) == len(self.means) == len(self.stds):
            raise ValueError("input_sizes, means and stds: one entry per vision backbone each")
        if self.image_resize_strategy != "resize-naive":
            raise ValueError(f"image_resize_strategy: {self.image_resize_strategy!r}; OpenVLA-OFT uses resize-naive")
        return self

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw

    def output_size(self, side: int) -> tuple[int, int]:
        return tuple(self.input_sizes[0][1:])

    def __call__(self, frames: torch.Tensor, dtype: torch.dtype, keep_area: float = 1.0) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()                                        # (N, 3, H, W)
        if keep_area < 1:
            x = _centre(x, round(x.shape[-2] * math.sqrt(keep_area)), round(x.shape[-1] * math.sqrt(keep_area)))
        out = []
        for size, mean, std in zip(self.input_sizes, self.means, self.stds):
            y = x if tuple(x.shape[-2:]) == tuple(size[1:]) else torch.nn.functional.interpolate(
                x, size=tuple(size[1:]), mode="bicubic", antialias=True).clamp(0, 255)
            mean_t, std_t = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
            out.append((y / 255 - mean_t) / std_t)
        return torch.cat(out, dim=1).to(dtype)                                        # (N, 3 x backbones, h, w)


def read(raw: Any, file: str | pathlib.Path) -> ImageProcessor | PrismaticProcessor:
    """The processor of a preprocessor_config.json's contents; an error names the file and key."""
    kind = PrismaticProcessor if isinstance(raw, dict) and "input_sizes" in raw else ImageProcessor
    try:
        processor = kind.model_validate(raw)
        processor.output_size(1)  # size / crop_size readable
        processor._raw = dict(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"{file}: {'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}") from None
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None
    return processor


def _centre(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def _hw(value: dict[str, int] | None, key: str, side: int | None) -> tuple[int, int]:
    if value and "height" in value and "width" in value:
        return value["height"], value["width"]
    if value and "shortest_edge" in value and side is not None:
        return value["shortest_edge"], value["shortest_edge"]  # frames are square
    raise ValueError(f"{key}: expected {{height, width}}{' or {shortest_edge}' if side else ''}, got {value}")
