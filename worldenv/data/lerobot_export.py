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


def _where(file_number: int) -> dict[str, int]:
    return {"chunk_index": file_number // CHUNKS_SIZE, "file_index": file_number % CHUNKS_SIZE}


def write(root: str | pathlib.Path, records: list[Record], fps: int = 10, codec: str = "h264",
          robot_type: str = "panda", episodes_per_file: int = 1000, overwrite: bool = False) -> dict:
    """Write `records` as a dataset at `root`; returns a summary (episodes, frames, tasks, files)."""
    root = pathlib.Path(root)
    _check(root, records, overwrite)
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "meta").mkdir(parents=True)
    tasks = list(dict.fromkeys(r.instruction for r in records))
    features = lerobot.features(records[0])
    columns: dict[str, list[np.ndarray]] = {}
    frames = 0
    for start in range(0, len(records), episodes_per_file):
        block = records[start:start + episodes_per_file]
        frames = _write_block(tmp, block, start, frames, _where(start // episodes_per_file), tasks, features, fps,
                              codec, columns)
    features[IMAGE_KEY]["info"] = mp4.describe(tmp / VIDEO(_where(0)))
    lerobot.write_tasks(tmp, tasks)
    _write_json(tmp / lerobot.STATS_PATH, lerobot.stats({k: np.concatenate(v) for k, v in columns.items()}))
    info = _info(records, tasks, features, frames, fps, robot_type, episodes_per_file)
    _write_json(tmp / lerobot.INFO_PATH, info)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return {"root": str(root), "episodes": len(records), "frames": frames, "tasks": len(tasks), "fps": fps,
            "codec": codec}


def VIDEO(where: dict[str, int]) -> str:  # noqa: N802 (a path pattern, filled in)
    return lerobot.VIDEO_PATH.format(video_key=IMAGE_KEY, **where)


def _check(root: pathlib.Path, records: list[Record], overwrite: bool) -> None:
    if not records:
        raise ValueError("episodes: nothing to export")
    if root.exists() and not overwrite:
        raise FileExistsError(f"out: {root} exists (pass --overwrite to replace it)")
    shapes = {(r.frames.shape[1:], r.proprio.shape[1], r.actions.shape[1:]) for r in records}
    if len(shapes) > 1:
        raise ValueError(f"episodes: one dataset holds one shape of frame, proprio and action chunk; got {shapes}")
    for r in records:
        if r.kind not in lerobot.KINDS:
            raise ValueError(f"kind: {r.kind!r} is not one of {lerobot.KINDS}")


def _write_block(tmp: pathlib.Path, block: list[Record], first_episode: int, first_row: int, where: dict[str, int],
                 tasks: list[str], features: dict, fps: int, codec: str, columns: dict[str, list]) -> int:
    """One data file, one video file and one episodes file for `block`; returns the rows so far."""
    h, w = block[0].frames.shape[1:3]
    data: dict[str, list] = {}
    episodes: list[dict] = []
    with mp4.Writer(tmp / VIDEO(where), fps, h, w, codec) as video:
        for i, record in enumerate(block):
            index = first_episode + i
            part = lerobot.rows(record, index, first_row, tasks.index(record.instruction), fps)
            for key, values in part.items():
                data.setdefault(key, []).extend(values)
            span = video.append(record.frames)
            episodes.append(_episode_row(record, index, first_row, where, span))
            first_row += record.chunks + 1
            for key, values in ((IMAGE_KEY, record.frames), *((k, np.asarray(part[k])) for k in _STAT_KEYS)):
                columns.setdefault(key, []).append(values)
    schema = pa.schema([(k, lerobot.arrow_type(features[k])) for k in data])
    _write_parquet(tmp / lerobot.DATA_PATH.format(**where), pa.table(data, schema=schema))
    _write_parquet(tmp / lerobot.EPISODES_PATH.format(**where), pa.Table.from_pylist(episodes))
    return first_row


_STAT_KEYS = (lerobot.STATE_KEY, "action", "action_length", "p_done", "success", "next.reward", "next.done",
              "timestamp", "frame_index", "episode_index", "index", "task_index")


def _episode_row(record: Record, index: int, first_row: int, where: dict[str, int], span: tuple[float, float]) -> dict:
    video = f"videos/{IMAGE_KEY}"
    return {"episode_index": index, "tasks": [record.instruction], "length": record.chunks + 1,
            "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
            "dataset_from_index": first_row, "dataset_to_index": first_row + record.chunks + 1,
            f"{video}/chunk_index": where["chunk_index"], f"{video}/file_index": where["file_index"],
            f"{video}/from_timestamp": span[0], f"{video}/to_timestamp": span[1],
            "meta/episodes/chunk_index": where["chunk_index"], "meta/episodes/file_index": where["file_index"],
            "success": bool(record.success.any()), "kind": record.kind, "source_id": record.source_id}


def _info(records: list[Record], tasks: list[str], features: dict, frames: int, fps: int, robot_type: str,
          episodes_per_file: int) -> dict:
    k = int(records[0].actions.shape[1])
    return {"codebase_version": lerobot.CODEBASE_VERSION, "robot_type": robot_type,
            "total_episodes": len(records), "total_frames": frames, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
            "splits": {"train": f"0:{len(records)}"}, "data_path": lerobot.DATA_PATH, "video_path": lerobot.VIDEO_PATH,
            "features": features,
            "worldenv": {"time_step": "action chunk", "chunk_length": k, "episodes_per_file": episodes_per_file,
                         "kinds": sorted({r.kind for r in records})}}


def _write_parquet(path: pathlib.Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _write_json(path: pathlib.Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4) + "\n")
