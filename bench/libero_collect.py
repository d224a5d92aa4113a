"""Wall time and peak memory of `worldenv demos collect` (default: 10 tasks x 5 demos).

Usage: python bench/libero_collect.py [--suite libero_object --tasks all --per-task 5 --env-processes 2 --out /tmp/demos]
Runs the CLI as a child process and samples the resident memory of its whole process tree (the
driver and every env process) every 0.5 s; the peak of that sum is what the machine must hold.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time


def tree_rss_mb(root: int) -> float:
    """Sum of VmRSS over `root` and all its descendants, MiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(entry.name), int(fields["PPid"])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", default="all")
    p.add_argument("--per-task", type=int, default=5)
    p.add_argument("--env-processes", type=int, default=2)
    p.add_argument("--out", default="/tmp/worldenv-demos-bench")
    args = p.parse_args()
    cmd = [sys.executable, "-m", "worldenv.cli", "demos", "collect", "--suite", args.suite, "--tasks", args.tasks,
           "--per-task", str(args.per_task), "--env-processes", str(args.env_processes), "--out", args.out]
    started, peak = time.perf_counter(), 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.5)
    wall = time.perf_counter() - started
    print(proc.stdout.read())
    size = sum(f.stat().st_size for f in pathlib.Path(args.out, args.suite).glob("*.hdf5")) / 2 ** 20
    print(json.dumps({"command": " ".join(cmd[1:]), "exit": proc.returncode, "wall_s": round(wall, 1),
                      "peak_tree_rss_mb": round(peak), "hdf5_mb": round(size, 1), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
