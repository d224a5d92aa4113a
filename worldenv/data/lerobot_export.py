"""Write `lerobot.Record`s as a LeRobotDataset v3.0 directory (layout in `worldenv.data.lerobot`).

    summary = lerobot_export.write("out/libero_object_lerobot", records, fps=10, codec="h264")

Episodes go `episodes_per_file` to a data file, a video file and an episodes file, all three
sharing one chunk/file index (LeRobot's `chunks_size` files per chunk folder). The directory is
built beside `root` and renamed into place, so a reader never sees half a dataset.
"""
from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from worldenv.data import lerobot, mp4
from worldenv.data.lerobot import IMAGE_KEY, Record

CHUNKS_SIZE = 1000
STAT_KEYS = (lerobot.STATE_KEY, "action", "action_length", "p_done", "success", "next.reward", "next.done",
             "timestamp", "frame_index", "episode_index", "index", "task_index")


def write(root: str | pathlib.Path, records: list[Record], fps: int = 10, codec: str = "h264",
          robot_type: str = "panda", episodes_per_file: int = 1000, overwrite: bool = False) -> dict:
    """Write `records` as a dataset at `root`; returns a summary (episodes, frames, tasks, fps, codec)."""
    root = pathlib.Path(root)
    _check(root, records, overwrite, codec)
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    builder = _Builder(tmp, records, fps, codec)
    for start in range(0, len(records), episodes_per_file):
        builder.add_file(records[start:start + episodes_per_file], start, start // episodes_per_file)
    builder.finish(robot_type, episodes_per_file)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return {"root": str(root), "episodes": len(records), "frames": builder.rows, "tasks": len(builder.tasks),
            "fps": fps, "codec": codec}


def _check(root: pathlib.Path, records: list[Record], overwrite: bool, codec: str) -> None:
    if not records:
        raise ValueError("episodes: nothing to export")
    if codec not in mp4.CODECS:
        raise ValueError(f"codec: expected one of {sorted(mp4.CODECS)}, got {codec!r}")
    if root.exists() and not overwrite:
        raise FileExistsError(f"out: {root} exists (pass --overwrite to replace it)")
    shapes = {(r.frames.shape[1:], r.proprio.shape[1], r.actions.shape[1:]) for r in records}
    if len(shapes) > 1:
        raise ValueError(f"episodes: one dataset holds one shape of frame, proprio and action chunk; got {shapes}")
    for r in records:
        if r.kind not in lerobot.KINDS:
            raise ValueError(f"kind: {r.kind!r} is not one of {lerobot.KINDS}")


def _where(file_number: int) -> dict[str, int]:
    return {"chunk_index": file_number // CHUNKS_SIZE, "file_index": file_number % CHUNKS_SIZE}


def _video_path(where: dict[str, int]) -> str:
    return lerobot.VIDEO_PATH.format(video_key=IMAGE_KEY, **where)


class _Builder:
    """The dataset under construction in `tmp`: files added block by block, metadata at the end."""

    def __init__(self, tmp: pathlib.Path, records: list[Record], fps: int, codec: str):
        self.tmp, self.records, self.fps, self.codec = tmp, records, fps, codec
        self.tasks = list(dict.fromkeys(r.instruction for r in records))
        self.features = lerobot.features(records[0])
        self.rows = 0
        self.columns: dict[str, list[np.ndarray]] = {}       # for meta/stats.json
        (tmp / "meta").mkdir(parents=True)

    def add_file(self, block: list[Record], first_episode: int, file_number: int) -> None:
        """One data file, one video file and one episodes file for the episodes of `block`."""
        where = _where(file_number)
        h, w = block[0].frames.shape[1:3]
        data: dict[str, list] = {}
        episodes = []
        with mp4.Writer(self.tmp / _video_path(where), self.fps, h, w, self.codec) as video:
            for index, record in enumerate(block, first_episode):
                part = lerobot.rows(record, index, self.rows, self.tasks.index(record.instruction), self.fps)
                for key, values in part.items():
                    data.setdefault(key, []).extend(values)
                episodes.append(_episode_row(record, index, self.rows, where, video.append(record.frames)))
                self._collect(record, part)
                self.rows += record.chunks + 1
        schema = pa.schema([(k, lerobot.arrow_type(self.features[k])) for k in data])
        _write_parquet(self.tmp / lerobot.DATA_PATH.format(**where), pa.table(data, schema=schema))
        _write_parquet(self.tmp / lerobot.EPISODES_PATH.format(**where), pa.Table.from_pylist(episodes))

    def _collect(self, record: Record, part: dict[str, list]) -> None:
        self.columns.setdefault(IMAGE_KEY, []).append(record.frames)
        for key in STAT_KEYS:
            self.columns.setdefault(key, []).append(np.asarray(part[key]))

    def finish(self, robot_type: str, episodes_per_file: int) -> None:
        """info.json (with the video's own description), tasks.parquet and stats.json."""
        self.features[IMAGE_KEY]["info"] = mp4.describe(self.tmp / _video_path(_where(0)))
        lerobot.write_tasks(self.tmp, self.tasks)
        columns = {k: np.concatenate(v) for k, v in self.columns.items()}
        _write_json(self.tmp / lerobot.STATS_PATH, lerobot.stats(columns))
        n = len(self.records)
        info = {"codebase_version": lerobot.CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": n,
                "total_frames": self.rows, "total_tasks": len(self.tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": self.fps,
                "splits": {"train": f"0:{n}"}, "data_path": lerobot.DATA_PATH, "video_path": lerobot.VIDEO_PATH,
                "features": self.features,
                "worldenv": {"time_step": "action chunk", "chunk_length": int(self.records[0].actions.shape[1]),
                             "episodes_per_file": episodes_per_file, "kinds": sorted({r.kind for r in self.records})}}
        _write_json(self.tmp / lerobot.INFO_PATH, info)


def _episode_row(record: Record, index: int, first_row: int, where: dict[str, int], span: tuple[float, float]) -> dict:
    """The episode's row of meta/episodes: where its rows and its video span are, and ours."""
    video = f"videos/{IMAGE_KEY}"
    return {"episode_index": index, "tasks": [record.instruction], "length": record.chunks + 1,
            "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
            "dataset_from_index": first_row, "dataset_to_index": first_row + record.chunks + 1,
            f"{video}/chunk_index": where["chunk_index"], f"{video}/file_index": where["file_index"],
            f"{video}/from_timestamp": span[0], f"{video}/to_timestamp": span[1],
            "meta/episodes/chunk_index": where["chunk_index"], "meta/episodes/file_index": where["file_index"],
            "success": bool(record.success.any()), "kind": record.kind, "source_id": record.source_id}


def _write_parquet(path: pathlib.Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_json(path: pathlib.Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4) + "\n")
