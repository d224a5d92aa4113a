"""Image augmentation for training on few demonstrations."""
from __future__ import annotations

import numpy as np


def shift_frames(frames: np.ndarray, rng: np.random.Generator, pixels: int) -> np.ndarray:
    """Random translation by up to `pixels` per frame (B, H, W, 3), edges replicated."""
    if not pixels:
        return frames
    b, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pixels + 1, (2, b))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
