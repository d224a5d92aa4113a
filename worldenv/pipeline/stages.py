"""Resumable pipeline stages: each runs as a `worldenv` subprocess, its wall time and the peak
memory of its whole process tree (env processes included) are recorded, and a finished stage is
not run again (its record in <home>/stages/<name>.json says it finished)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time


@dataclasses.dataclass
class StageRecord:
    name: str
    command: list[str]
    wall_s: float
    peak_rss_mb: float
    returncode: int


def _children(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


def _rss_mb(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(home: pathlib.Path, name: str, args: list[str], log: pathlib.Path | None = None) -> StageRecord:
    """Run `worldenv <args>` once; a stage whose record exists was finished before and is skipped."""
    record_path = home / "stages" / f"{name}.json"
    if record_path.is_file():
        record = StageRecord(**json.loads(record_path.read_text()))
        if record.returncode == 0:
            print(f"[{name}] done before ({record.wall_s:.0f} s), skipped", flush=True)
            return record
    command = [sys.executable, "-m", "worldenv.cli", *args]
    print(f"[{name}] worldenv {' '.join(args)}", flush=True)
    started, peak = time.perf_counter(), 0.0
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "a") if log else None  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while process.poll() is None:
            peak = max(peak, sum(_rss_mb(p) for p in [process.pid, *_children(process.pid)]))
            time.sleep(0.5)
    finally:
        if out:
            out.close()
    record = StageRecord(name, args, time.perf_counter() - started, peak, process.returncode)
    if record.returncode == 0:
        _save(home, record)
    else:
        raise RuntimeError(f"stage {name} failed with exit code {record.returncode}; see {log or 'the output above'}")
    print(f"[{name}] {record.wall_s:.0f} s, peak {record.peak_rss_mb:.0f} MB", flush=True)
    return record


def _save(home: pathlib.Path, record: StageRecord) -> None:
    """The record that marks stage `record.name` finished."""
    path = home / "stages" / f"{record.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(record), indent=2))


def records(home: pathlib.Path) -> dict[str, StageRecord]:
    """Every finished stage's record."""
    return {p.stem: StageRecord(**json.loads(p.read_text())) for p in sorted((home / "stages").glob("*.json"))}



def finished(home: pathlib.Path, name: str) -> bool:
    """Whether stage `name` finished before."""
    path = home / "stages" / f"{name}.json"
    return path.is_file() and json.loads(path.read_text())["returncode"] == 0


def inline(home: pathlib.Path, name: str, fn) -> StageRecord:
    """Run `fn()` in this process as stage `name` (skipped if it finished before); peak memory is
    this process's high-water mark, which includes earlier work."""
    import resource
    record_path = home / "stages" / f"{name}.json"
    if finished(home, name):
        print(f"[{name}] done before, skipped", flush=True)
        return StageRecord(**json.loads(record_path.read_text()))
    print(f"[{name}] in process", flush=True)
    started = time.perf_counter()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = StageRecord(name, ["(in process)", name], time.perf_counter() - started, peak, 0)
    _save(home, record)
    print(f"[{name}] {record.wall_s:.0f} s", flush=True)
    return record
