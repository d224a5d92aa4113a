"""Episodes as a LeRobotDataset (format v3.0): what LeRobot's `LeRobotDataset` loads.

    <root>/meta/info.json                       codebase_version "v3.0", fps, features, paths
    <root>/meta/tasks.parquet                   one row per task text: task_index (the text is the index)
    <root>/meta/episodes/chunk-000/file-000.parquet   one row per episode: where its rows and video are
    <root>/meta/stats.json                      min, max, mean, std, count of every feature
    <root>/data/chunk-000/file-000.parquet      one row per frame
    <root>/videos/observation.images.image/chunk-000/file-000.mp4   the frames of every episode, in turn

One row per frame at worldenv's time step, the action chunk (the frames the three models see):
row t of an episode of C chunks holds frame t and proprio t, and for t < C the chunk that
followed it; the last row (t = C) is the observation after the last chunk, its action zeros.

    observation.images.image  video (H, W, 3)   frame t (LeRobot's LIBERO name for the agent view)
    observation.state         float32 (P,)      proprio t (LIBERO: eef pos 3, axis-angle 3, gripper 2)
    action                    float32 (K, A)    chunk t; zeros past action_length
    action_length             int64             actions of chunk t that ran (K; fewer at the end; 0 last)
    p_done                    float32           p(task done) of frame t: the reflector's on imagined
                                                episodes (0 on the start frame), 0/1 success on recorded ones
    success                   bool              frame t counts as done (recorded: LIBERO's success;
                                                imagined: p_done > eta)
    next.reward               float32           reward of chunk t: p_done of the frame after it (0 last)
    next.done                 bool              true on the episode's last row

plus LeRobot's timestamp, frame_index, episode_index, index and task_index. Per episode
(meta/episodes) also: success (bool), kind (demo | exploration | imagined), source_id.
Files are written with pyarrow (parquet) and PyAV (mp4), the libraries the format is made of.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from worldenv.data.chunked_episode import ChunkedEpisode
from worldenv.data.episodes import ImaginedEpisode

CODEBASE_VERSION = "v3.0"
IMAGE_KEY = "observation.images.image"
STATE_KEY = "observation.state"
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
LIBERO_STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_left", "gripper_right"]
KINDS = ("demo", "exploration", "imagined")


@dataclasses.dataclass(frozen=True)
class Record:
    """One episode of C chunks, as exported (the rows above)."""

    frames: np.ndarray          # (C+1, H, W, 3) uint8
    proprio: np.ndarray         # (C+1, P) float32
    actions: np.ndarray         # (C, K, A) float32
    lengths: np.ndarray         # (C,) int
    p_done: np.ndarray          # (C+1,) float32
    success: np.ndarray         # (C+1,) bool
    instruction: str
    source_id: str
    kind: str                   # one of KINDS

    @property
    def chunks(self) -> int:
        return len(self.actions)


def from_chunked(episode: ChunkedEpisode, kind: str = "demo") -> Record:
    """A recorded (LIBERO) episode: p_done is its success label."""
    return Record(episode.frames, episode.proprio, episode.actions, episode.lengths,
                  episode.success.astype(np.float32), episode.success, episode.instruction, episode.id, kind)


def from_imagined(episode: ImaginedEpisode, eta: float | None = None) -> Record:
    """An imagined episode: frames, proprio, chunks and the reflector's p_done after each; a
    frame is a success where p_done > eta (the episode's own eta when it stored one, else 0.5)."""
    eta = float(episode.extra.get("eta", 0.5)) if eta is None else eta
    p_done = np.concatenate([[0.0], episode.p_done]).astype(np.float32)          # (T+1,): none on the start frame
    lengths = np.full(episode.steps, episode.actions.shape[1] if episode.steps else 0)
    return Record(episode.frames, episode.proprio, episode.actions, lengths, p_done, p_done > eta, episode.instruction,
                  episode.id, "imagined")


def features(record: Record) -> dict:
    """The `features` of meta/info.json for records shaped like `record` (video info added later)."""
    h, w = record.frames.shape[1:3]
    p = record.proprio.shape[1]
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
    return {
        IMAGE_KEY: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]},
        STATE_KEY: {"dtype": "float32", "shape": [p], "names": LIBERO_STATE_NAMES if p == 8 else None},
        "action": {"dtype": "float32", "shape": list(record.actions.shape[1:]), "names": ["chunk", "action"]},
        "action_length": scalar("int64"), "p_done": scalar("float32"), "success": scalar("bool"),
        "next.reward": scalar("float32"), "next.done": scalar("bool"),
        "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
        "index": scalar("int64"), "task_index": scalar("int64"),
    }


def rows(record: Record, episode_index: int, first_index: int, task_index: int, fps: int) -> dict[str, list]:
    """The data rows of one episode, column by column (arrays as nested lists)."""
    n = record.chunks + 1
    actions = np.concatenate([record.actions, np.zeros((1, *record.actions.shape[1:]), np.float32)])
    reward = np.append(record.p_done[1:], 0.0).astype(np.float32)
    return {
        STATE_KEY: record.proprio.astype(np.float32).tolist(), "action": actions.astype(np.float32).tolist(),
        "action_length": np.append(record.lengths, 0).astype(np.int64).tolist(),
        "p_done": record.p_done.astype(np.float32).tolist(), "success": record.success.astype(bool).tolist(),
        "next.reward": reward.tolist(), "next.done": [t == n - 1 for t in range(n)],
        "timestamp": (np.arange(n, dtype=np.float32) / fps).tolist(), "frame_index": list(range(n)),
        "episode_index": [episode_index] * n, "index": list(range(first_index, first_index + n)),
        "task_index": [task_index] * n,
    }


def arrow_type(feature: dict) -> pa.DataType:
    """The parquet column type Hugging Face datasets reads for a LeRobot feature."""
    base = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[feature["dtype"]]
    shape = feature["shape"]
    if shape == [1]:
        return base
    inner = pa.list_(base, shape[-1])
    return inner if len(shape) == 1 else pa.list_(inner, shape[0])


def write_tasks(root: pathlib.Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's: column task_index, the task text as the index."""
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), root / TASKS_PATH)


def stats(columns: dict[str, np.ndarray]) -> dict[str, dict[str, list]]:
    """LeRobot's meta/stats.json entries: min, max, mean, std over rows, and count. Video
    columns come as (N, H, W, 3) uint8 and are summarised per channel in [0, 1], shape (3, 1, 1)."""
    out = {}
    for key, values in columns.items():
        x = values.astype(np.float64)
        if key == IMAGE_KEY:
            x = (x / 255.0).reshape(-1, 3)
        elif x.ndim == 1:
            x = x[:, None]
        summary = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
        if key == IMAGE_KEY:
            summary = {k: v.reshape(3, 1, 1) for k, v in summary.items()}
        out[key] = {**{k: v.tolist() for k, v in summary.items()}, "count": [len(values)]}
    return out
