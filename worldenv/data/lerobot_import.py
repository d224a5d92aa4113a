"""A LeRobotDataset v3.0 directory read as `chunks.ChunkedEpisode`s, the training data of the
three models (`worldenv train ... --data DIR` takes such a directory beside HDF5 files).

Two shapes of dataset are read:
- one row per action chunk, `action` (K, A): what `worldenv export lerobot` writes (the layout
  in `worldenv.data.lerobot`); rows map to chunks one to one, `action_length` and `success`
  are taken as written;
- one row per control step, `action` (A,): LeRobot's own recordings and the community's LIBERO
  sets. Rows are cut into chunks of K from the first (frame before each chunk, the last row's
  frame closing the episode; the last row's action is dropped, as nothing shows its result).
  A frame's success is `success` if the dataset has it, else `next.reward` > 0 of the row
  before it, else (a set of demonstrations) true on the last frame only.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pyarrow.parquet as pq

from worldenv.data import hdf5, lerobot, mp4
from worldenv.data.chunked_episode import ChunkedEpisode


def is_dataset(path: str | pathlib.Path) -> bool:
    """Whether `path` is a LeRobotDataset directory (it has meta/info.json)."""
    return (pathlib.Path(path) / lerobot.INFO_PATH).is_file()


def read_info(root: pathlib.Path, image_key: str) -> dict:
    """meta/info.json, checked: format v3.0 and the features worldenv trains on."""
    info = json.loads((root / lerobot.INFO_PATH).read_text())
    version = info.get("codebase_version")
    if version != lerobot.CODEBASE_VERSION:
        raise ValueError(f"{root / lerobot.INFO_PATH}: codebase_version {version!r}; worldenv reads "
                         f"{lerobot.CODEBASE_VERSION} (LeRobot converts older sets: convert_dataset_v21_to_v30)")
    features = info.get("features", {})
    for key in (image_key, lerobot.STATE_KEY, "action"):
        if key not in features:
            raise ValueError(f"{root / lerobot.INFO_PATH}: no feature {key!r} (features: {sorted(features)})")
    if features[image_key]["dtype"] != "video":
        raise ValueError(f"{root / lerobot.INFO_PATH}: feature {image_key!r} is {features[image_key]['dtype']!r}; "
                         "worldenv reads frames stored as video")
    return info


def _table(root: pathlib.Path, folder: str) -> dict[str, list]:
    files = sorted((root / folder).glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root / folder}: no chunk-*/file-*.parquet files")
    columns: dict[str, list] = {}
    for file in files:
        for key, values in pq.read_table(file).to_pydict().items():
            columns.setdefault(key, []).extend(values)
    return columns


def _tasks(root: pathlib.Path) -> dict[int, str]:
    table = pq.read_table(root / lerobot.TASKS_PATH).to_pydict()
    text = next((table[k] for k in ("__index_level_0__", "task") if k in table), None)
    if text is None:
        raise ValueError(f"{root / lerobot.TASKS_PATH}: no task text column (expected the pandas index or 'task')")
    return dict(zip(table["task_index"], text))


def episodes(root: str | pathlib.Path, k: int = 8, image_size: int | None = None, per_task: int = 0,
             image_key: str = lerobot.IMAGE_KEY) -> list[ChunkedEpisode]:
    """Every episode of the dataset at `root` as chunks of `k` (a per-chunk export keeps its
    own K); frames resized to `image_size`; `per_task` > 0 keeps each task's first that many."""
    root = pathlib.Path(root)
    info, tasks = read_info(root, image_key), _tasks(root)
    meta, data = _table(root, "meta/episodes"), _table(root, "data")
    rows_of = _rows_by_episode(data)
    videos: dict[tuple[int, int], np.ndarray] = {}
    out, kept = [], {}
    for i, index in enumerate(meta["episode_index"]):
        rows = rows_of[index]
        instruction = tasks[data["task_index"][rows[0]]]
        if per_task and kept.get(instruction, 0) >= per_task:
            continue
        kept[instruction] = kept.get(instruction, 0) + 1
        frames = _frames(root, info, image_key, meta, i, len(rows), videos)
        out.append(_episode(data, rows, hdf5.resize(frames, image_size), instruction, f"{root.name}/{index}", k))
    return out


def _rows_by_episode(data: dict[str, list]) -> dict[int, list[int]]:
    order = np.lexsort((np.asarray(data["frame_index"]), np.asarray(data["episode_index"])))
    rows: dict[int, list[int]] = {}
    for r in order:
        rows.setdefault(int(data["episode_index"][r]), []).append(int(r))
    return rows


def _frames(root: pathlib.Path, info: dict, key: str, meta: dict[str, list], i: int, n: int,
            cache: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """The episode's n frames: its span of the video file holding it."""
    where = (meta[f"videos/{key}/chunk_index"][i], meta[f"videos/{key}/file_index"][i])
    if where not in cache:
        cache.clear()  # one video file in memory at a time: episodes are stored file by file
        path = root / info["video_path"].format(video_key=key, chunk_index=where[0], file_index=where[1])
        cache[where] = mp4.read(path)
    first = int(round(meta[f"videos/{key}/from_timestamp"][i] * info["fps"]))
    frames = cache[where][first:first + n]
    if len(frames) != n:
        raise ValueError(f"{root}: episode {meta['episode_index'][i]} has {n} rows but its video holds {len(frames)}")
    return frames


def _episode(data: dict[str, list], rows: list[int], frames: np.ndarray, instruction: str, ident: str,
             k: int) -> ChunkedEpisode:
    column = lambda key: np.asarray([data[key][r] for r in rows]) if key in data else None  # noqa: E731
    state, actions = column(lerobot.STATE_KEY).astype(np.float32), column("action").astype(np.float32)
    if actions.ndim == 3:   # one row per chunk (worldenv's export)
        lengths, success = column("action_length"), column("success")
        lengths = np.full(len(rows), actions.shape[1]) if lengths is None else lengths
        success = np.zeros(len(rows), bool) if success is None else success.astype(bool)
        return ChunkedEpisode(frames, state, actions[:-1], lengths[:-1].astype(int), success,
                              np.arange(len(rows)), instruction, ident)
    return _chunked_steps(frames, state, actions, _step_success(column, len(rows)), instruction, ident, k)


def _step_success(column, n: int) -> np.ndarray:
    if column("success") is not None:
        return column("success").astype(bool)
    reward = column("next.reward")
    if reward is not None:
        return np.concatenate([[False], reward[:-1] > 0])
    return np.arange(n) == n - 1


def _chunked_steps(frames: np.ndarray, state: np.ndarray, actions: np.ndarray, success: np.ndarray,
                   instruction: str, ident: str, k: int) -> ChunkedEpisode:
    """Rows of single steps -> chunks of k: frames before each chunk and the last row's frame."""
    last = len(frames) - 1
    if last < 1:
        raise ValueError(f"episode {ident}: {len(frames)} row(s), need 2 or more to make a chunk")
    starts = np.arange(0, last, k)
    lengths = np.minimum(k, last - starts)
    chunked = np.zeros((len(starts), k, actions.shape[1]), np.float32)
    for c, (s, n) in enumerate(zip(starts, lengths)):
        chunked[c, :n] = actions[s:s + n]
    keep = np.append(starts, last)
    return ChunkedEpisode(frames[keep], state[keep], chunked, lengths, success[keep], keep, instruction, ident)
