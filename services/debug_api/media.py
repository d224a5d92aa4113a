"""Frames to PNG, GIF and MP4 bytes."""
from __future__ import annotations

import importlib.util
import io

import numpy as np
from PIL import Image


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of (..., H, W, 3) by an integer factor."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def png(frame: np.ndarray, scale: int = 1) -> bytes:
    """One (H, W, 3) uint8 frame as PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(upscale(frame, scale)).save(buf, format="PNG")
    return buf.getvalue()


def gif(frames: np.ndarray, fps: float, scale: int = 1) -> bytes:
    """(T+1, H, W, 3) uint8 frames as a looping GIF. Pillow merges identical consecutive
    frames into one longer frame, so playback time is kept but the frame count may drop."""
    images = [Image.fromarray(f) for f in upscale(frames, scale)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
    return buf.getvalue()


def mp4_available() -> bool:
    """Whether imageio's ffmpeg plugin (the imageio-ffmpeg package) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def mp4(frames: np.ndarray, fps: float, scale: int = 1) -> bytes:
    """(T+1, H, W, 3) uint8 frames as an H.264 MP4 (needs `mp4_available()`)."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", upscale(frames, scale), extension=".mp4", plugin="FFMPEG",
                       fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1)
