"""`worldenv export lerobot`: recorded or imagined episodes as a LeRobotDataset v3.0 directory.

    worldenv export lerobot out/demos_lerobot --data runs/demos,runs/explore     # LIBERO HDF5 files
    worldenv export lerobot out/imagined_lerobot --imagined --run-id rl-0003      # the episode store

The directory loads with LeRobot's `LeRobotDataset(repo_id, root=...)`, and `worldenv train
policy|world-model|reflector --data DIR` trains on it (layout: `worldenv.data.lerobot`).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Literal

from pydantic import Field, model_validator

from worldenv.commands import flags
from worldenv.config import Settings, comma_list, redis_url_field


class ExportConfig(Settings):
    """What `worldenv export lerobot` writes, and from where."""

    out: str = Field(description="dataset directory to write", json_schema_extra=flags.POSITIONAL)
    data: str = Field("", description="HDF5 episode files or folders of them, comma-separated (demos, exploration)")
    kind: Literal["auto", "demo", "exploration"] = Field(
        "auto", description="what --data holds; auto: the scripted expert's episodes are demos, others exploration")
    imagined: bool = Field(False, description="export imagined episodes from the episode store in Redis")
    redis_url: str = redis_url_field("Redis holding the episode store (--imagined)")
    prefix: str = Field("worldenv", description="key prefix of the episode store in Redis (--imagined)")
    run_id: str = Field("", description="--imagined: only this run's episodes (empty: any run)")
    status: Literal["any", "done", "horizon", "failed"] = Field("any", description="--imagined: only this status")
    limit: int = Field(1000, ge=1, description="--imagined: the newest episodes, at most this many")
    image_size: int = Field(0, ge=0, description="resize frames to this side (0: as recorded)")
    fps: int = Field(10, ge=1, description="frames per second in info.json and the video (one row per action "
                     "chunk, so a playback rate, not the control rate)")
    codec: Literal["h264", "lossless"] = Field(
        "h264", description="video codec: h264 (yuv420p, what players read) or lossless (H.264 in RGB, exact frames)")
    episodes_per_file: int = Field(1000, ge=1, description="episodes per data, video and episodes file")
    overwrite: bool = Field(False, description="replace --out if it exists")

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.data) == self.imagined:
            raise ValueError("give exactly one source: --data FILES or --imagined")
        return self


def _recorded(config: ExportConfig) -> list:
    from worldenv.data import chunks, lerobot
    episodes = chunks.load(comma_list(config.data), image_size=config.image_size or None)
    kind = lambda e: config.kind if config.kind != "auto" else ("demo" if e.id.endswith("/expert")  # noqa: E731
                                                                else "exploration")
    return [lerobot.from_chunked(e, kind(e)) for e in episodes]


def _imagined(config: ExportConfig) -> list:
    import redis

    from worldenv.data import hdf5, lerobot
    from worldenv.data.episodes import EpisodeStore
    store = EpisodeStore(redis.Redis.from_url(config.redis_url), prefix=config.prefix)
    status = None if config.status == "any" else config.status
    metas, _ = store.list(status=status, run_id=config.run_id or None, limit=config.limit)
    episodes = [store.get(m["id"]) for m in reversed(metas)]        # oldest first
    records = [lerobot.from_imagined(e) for e in episodes if e is not None]   # (one trimmed meanwhile: skipped)
    if not config.image_size:
        return records
    return [dataclasses.replace(r, frames=hdf5.resize(r.frames, config.image_size)) for r in records]


def export(config: ExportConfig) -> int:
    from worldenv.data import lerobot_export
    records = _imagined(config) if config.imagined else _recorded(config)
    summary = lerobot_export.write(config.out, records, fps=config.fps, codec=config.codec,
                                   episodes_per_file=config.episodes_per_file, overwrite=config.overwrite)
    print(json.dumps(summary))
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="episodes in another project's format")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    flags.command(formats.add_parser("lerobot", help="a LeRobotDataset v3.0 directory (parquet + mp4)"),
                  "export lerobot", ExportConfig, export, errors=(ValueError, FileNotFoundError, FileExistsError))
