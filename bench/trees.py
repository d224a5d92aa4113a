"""Another commit's code beside this checkout's, for side-by-side benchmarks: a git worktree of
the commit under the temp directory, and the processes `worldenv up` runs for a worker (the
three model services and one rollout worker) started from a given code tree, whichever worldenv
the environment has installed.

    old = trees.worktree("b6e9ea0")
    with trees.serving(old, redis_url, "old", threads) as stack:   # stack.prefix: its queue
        ...
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from worldenv.config import MODEL_SERVICES
from worldenv.local import probes
from worldenv.local.stack import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
STUBS = pathlib.Path("worldenv") / "v1"   # generated gRPC code (a build product, not in git)
# `python -c BOOT ROOT args...` runs `worldenv args...` with the code of ROOT: its worldenv first
# on the path, and its services/ and client/ as worldenv.services and worldenv.client (an
# editable install maps those two to the installed checkout's folders).
BOOT = """import importlib.util, sys
root = sys.argv.pop(1)
sys.path.insert(0, root)
import worldenv
for sub in ("services", "client"):
    spec = importlib.util.spec_from_file_location("worldenv." + sub, f"{root}/{sub}/__init__.py",
                                                  submodule_search_locations=[f"{root}/{sub}"])
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    setattr(worldenv, sub, module)
from worldenv.cli import main
sys.exit(main(sys.argv[1:]))
"""


def worktree(commit: str) -> pathlib.Path:
    """A detached worktree of `commit` under the temp directory (made once, then reused), with
    this checkout's generated stubs when the protos agree."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], check=True, capture_output=True,
                         text=True).stdout.strip()
    path = pathlib.Path(tempfile.gettempdir()) / f"worldenv-bench-{sha[:12]}"
    if not (path / "worldenv").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(path), sha], check=True,
                       capture_output=True)
    if not (path / STUBS).is_dir():
        same = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", sha, "--", "protos"]).returncode == 0
        if not same:
            raise RuntimeError(f"protos/ differ between {commit} and this checkout: generate its stubs first, "
                               f"with grpcio-tools (a build-time dependency, not in .venv): `python -m venv /tmp/gt && "
                               f"/tmp/gt/bin/pip install grpcio-tools==1.85.1 && cd {path} && /tmp/gt/bin/python "
                               f"worldenv/wire/gen.py`")
        shutil.copytree(ROOT / STUBS, path / STUBS)
    return path


def command(root: pathlib.Path, *args: str) -> list[str]:
    """argv of `worldenv args...` run with the code of `root`."""
    return [sys.executable, "-c", BOOT, str(root), *args]


@dataclasses.dataclass
class TreeStack:
    """The services and the worker of one code tree, on a shared Redis under their own prefix."""

    root: pathlib.Path
    prefix: str
    addresses: dict[str, str]
    processes: list[subprocess.Popen]


def _spawn(argv: list[str], log: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_healthy(address: str, proc: subprocess.Popen, log: pathlib.Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(proc.args[4:6])} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            probes.check("grpc", address, timeout=1.0)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise TimeoutError(f"{address} not healthy after {timeout_s:g} s (log {log})")


@contextlib.contextmanager
def serving(root: pathlib.Path, redis_url: str, prefix: str, threads: dict[str, int], batch_size: int = 8,
            checkpoints: dict[str, str] | None = None, extra: dict[str, list[str]] | None = None,
            workers: int = 1):
    """The three model services (`checkpoints[name]`, else the shipped ones; `threads[name]` torch
    threads each; `extra[name]`: more `serve` flags) and `workers` rollout workers of `root`'s
    code; stopped when the block ends."""
    logs = pathlib.Path(tempfile.mkdtemp(prefix=f"worldenv-bench-{prefix}-"))
    stack = TreeStack(root, prefix, {}, [])
    try:
        for name in MODEL_SERVICES:
            stack.addresses[name] = f"127.0.0.1:{free_port()}"
            argv = command(root, "serve", name, "--host", "127.0.0.1", "--port", stack.addresses[name].split(":")[1],
                           "--threads", str(threads[name]), "--checkpoint", (checkpoints or {}).get(name, "shipped"),
                           *(extra or {}).get(name, []))
            stack.processes.append(_spawn(argv, logs / f"{name}.log"))
        for name, proc in zip(MODEL_SERVICES, stack.processes):
            _wait_healthy(stack.addresses[name], proc, logs / f"{name}.log")
        a = stack.addresses
        for w in range(workers):
            stack.processes.append(_spawn(command(
                root, "worker", "--redis-url", redis_url, "--prefix", prefix, "--world-model-addr", a["world-model"],
                "--reflector-addr", a["reflector"], "--policy-addr", a["policy"], "--batch-size", str(batch_size),
                "--consumer", f"bench-{prefix}-{w}"), logs / f"worker{w}.log"))
        yield stack
    finally:
        for proc in stack.processes:
            proc.terminate()
        for proc in stack.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
