"""MP4 video files of frames, written and read with PyAV (FFmpeg's libraries).

A LeRobotDataset keeps the frames of many episodes one after another in one video file per
camera; frame i is shown at i / fps seconds (time base 1 / fps), and an episode is found by
its first and last timestamps. `Writer` appends episodes to one file and says where each
begins; `read` decodes a whole file back to (N, H, W, 3) uint8.

Codecs (`CODECS`): "h264" is H.264 in yuv420p, what players and LeRobot's own recordings use
(lossy: a few grey levels of error at crf 18); "lossless" is H.264 in RGB at crf 0
(libx264rgb), so frames come back bit for bit. LeRobot asks for a key frame every 2 frames
(fast random access); so do we.
"""
from __future__ import annotations

import pathlib

import av
import numpy as np

# name -> (encoder, pixel format, options)
CODECS = {
    "h264": ("libx264", "yuv420p", {"crf": "18", "g": "2", "preset": "medium"}),
    "lossless": ("libx264rgb", "rgb24", {"crf": "0", "g": "2", "preset": "medium"}),
}


class Writer:
    """Frames appended to one MP4 file at a constant `fps`; use as a context manager."""

    def __init__(self, path: str | pathlib.Path, fps: int, height: int, width: int, codec: str = "h264"):
        if codec not in CODECS:
            raise ValueError(f"codec: expected one of {sorted(CODECS)}, got {codec!r}")
        encoder, self.pix_fmt, options = CODECS[codec]
        if self.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            raise ValueError(f"frames: {codec} needs even sides, got {height}x{width}; use codec 'lossless'")
        self.path, self.fps, self.frames = pathlib.Path(path), fps, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(encoder, rate=fps, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, self.pix_fmt

    @property
    def seconds(self) -> float:
        """Timestamp of the next frame appended."""
        return self.frames / self.fps

    def append(self, frames: np.ndarray) -> tuple[float, float]:
        """Append (T, H, W, 3) uint8 frames; returns their (from, to) timestamps in seconds, as
        LeRobot's episode metadata holds them (to = one frame past the last)."""
        start = self.seconds
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames    # in the stream's time base, 1 / fps
            self._container.mux(self._stream.encode(frame))
            self.frames += 1
        return start, self.seconds

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
        self._container.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read(path: str | pathlib.Path) -> np.ndarray:
    """Every frame of the video file, in presentation order: (N, H, W, 3) uint8."""
    with av.open(str(path)) as container:
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    frames.sort(key=lambda pair: pair[0])
    return np.stack([image for _, image in frames])


def describe(path: str | pathlib.Path) -> dict:
    """The `info` LeRobot keeps for a video feature in meta/info.json."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {"video.height": stream.height, "video.width": stream.width, "video.codec": stream.codec_context.name,
                "video.pix_fmt": stream.codec_context.pix_fmt, "video.is_depth_map": False,
                "video.fps": int(round(stream.average_rate or stream.guessed_rate)), "video.channels": 3,
                "has_audio": False}
