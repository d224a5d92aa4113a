"""Image error measures on uint8 frames: PSNR and SSIM, over the whole frame or a pixel mask."""
from __future__ import annotations

import numpy as np
import torch

MOVING_THRESHOLD = 4  # grey levels: a pixel moves when a channel changes by more than this


def moving_mask(before: np.ndarray, after: np.ndarray, threshold: int = MOVING_THRESHOLD) -> np.ndarray:
    """(..., H, W) bool: pixels that change between two real frames (..., H, W, 3)."""
    return (np.abs(after.astype(np.int16) - before.astype(np.int16)) > threshold).any(axis=-1)


def psnr(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per frame PSNR in dB of (N, H, W, 3) uint8 frames, over `mask` (N, H, W) when given; NaN
    where the mask is empty; capped at 100 dB for identical frames."""
    err = (pred.astype(np.float64) - real.astype(np.float64)) ** 2                     # (N, H, W, 3)
    weight = np.ones(err.shape[:3]) if mask is None else mask.astype(np.float64)         # (N, H, W)
    count = weight.sum(axis=(1, 2)) * 3
    mse = (err.sum(axis=-1) * weight).sum(axis=(1, 2)) / np.maximum(count, 1)
    out = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
    return np.where(count > 0, np.minimum(out, 100.0), np.nan)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _blur(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, C, H, W), reflect-padded: two 1-D passes."""
    c, pad = t.shape[1], len(g) // 2
    t = torch.nn.functional.pad(t, [pad] * 4, mode="reflect")
    t = torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_map(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(N, H, W) SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5), mean over RGB."""
    a, b = (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() for x in (pred, real))
    g = _gaussian()
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a, var_b, cov = _blur(a * a, g) - mu_a ** 2, _blur(b * b, g) - mu_b ** 2, _blur(a * b, g) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=1).numpy()


def masked_mean(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per frame mean of (N, H, W) values, over `mask` when given (NaN where it is empty)."""
    if mask is None:
        return values.mean(axis=(1, 2))
    count = mask.sum(axis=(1, 2))
    return np.where(count > 0, (values * mask).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)


def ssim(pred: np.ndarray, real: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per frame mean SSIM, over `mask` when given (NaN where it is empty)."""
    return masked_mean(ssim_map(pred, real), mask)
