"""A bounded pool of LIBERO env processes, restarted when they crash.

Each env process holds ~2.2 GB of RAM, so the pool size is capped by what the machine has free,
and asking for more is refused before anything starts. Each env process serves one env over
a pipe; the driver side (`EnvProcess`) turns a dead process into `EnvCrashed` and starts a fresh
one, so a crash fails one episode (with its reason) and the run goes on.
"""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing as mp
import os
import traceback
from typing import Any, Callable, Iterable, TypeVar

from worldenv.sim.env import EnvConfig

GB = 1024 ** 3
ENV_GB = 2.5          # measured ~2.2 GB per env process, plus headroom
RESERVE_GB = 3.0      # left for the driver, a policy and the rest of the machine
COMMAND_TIMEOUT_S = 600.0

T = TypeVar("T")
R = TypeVar("R")


class PoolError(ValueError):
    """More env processes asked for than the machine can hold."""


class EnvError(RuntimeError):
    """The env raised inside its process (the process is still alive)."""


class EnvCrashed(RuntimeError):
    """The env process died or hung; it has been replaced."""


def available_gb() -> float:
    """RAM available now (MemAvailable), in GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / GB


def capacity() -> int:
    """Most env processes that fit: free RAM after a reserve, ENV_GB each, at least 1."""
    return max(1, int((available_gb() - RESERVE_GB) // ENV_GB))


def default_size() -> int:
    """Pool size when none is given: what fits, at most 2 and at most the CPU count."""
    return max(1, min(2, os.cpu_count() or 1, capacity()))


def check_size(size: int | None) -> int:
    """`size` (or the default) if the machine can hold it, else PoolError."""
    if size is None or size == 0:
        return default_size()
    fits = capacity()
    if size < 0 or size > fits:
        raise PoolError(f"{size} env processes asked for, but only {fits} fit: each needs ~{ENV_GB} GB and "
                        f"{available_gb():.1f} GB is available ({RESERVE_GB} GB kept in reserve)")
    return size


def _serve(conn) -> None:
    """Env process main loop: one LiberoEnv (in an `EnvHost`), commands as (method, kwargs) tuples."""
    from worldenv.sim import env_host
    host = env_host.EnvHost()
    while True:
        try:
            method, kwargs = conn.recv()
        except EOFError:
            return
        if method == "exit":
            host.close()
            return
        try:
            conn.send(("ok", getattr(host, method)(**kwargs)))
        except Exception:  # noqa: BLE001 - every error goes back to the driver with its traceback
            conn.send(("error", traceback.format_exc()))


class EnvProcess:
    """Driver-side handle of one env process. Calls block until the process answers."""

    def __init__(self, timeout_s: float = COMMAND_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the driver's threads and GL state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="worldenv-libero-env")
        self._proc.start()
        child.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def call(self, method: str, **kwargs) -> Any:
        """Run `EnvHost.<method>(**kwargs)` in the process; EnvError / EnvCrashed on failure."""
        try:
            self._conn.send((method, kwargs))
            if not self._conn.poll(self.timeout_s):
                raise EnvCrashed(f"env process {self.pid} did not answer {method!r} within {self.timeout_s:.0f}s")
            status, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            self._proc.join(1)
            code = self._proc.exitcode
            self.restart()
            raise EnvCrashed(f"env process died during {method!r} (exit code {code}): {exc!r}") from None
        except EnvCrashed:
            self.restart()
            raise
        if status == "error":
            raise EnvError(value)
        return value

    def restart(self) -> None:
        """Kill the process (if alive) and start a fresh one with no env loaded."""
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()

    def close(self) -> None:
        try:
            if self._proc.is_alive():
                self._conn.send(("exit", {}))
                self._proc.join(20)
        except (BrokenPipeError, OSError):
            pass
        self._kill()


class EnvPool:
    """`size` env processes; `map` runs one job per free process in parallel, in job order out."""

    def __init__(self, size: int | None = None, timeout_s: float = COMMAND_TIMEOUT_S):
        self.size = check_size(size)
        self.processes = [EnvProcess(timeout_s) for _ in range(self.size)]

    def map(self, fn: Callable[[EnvProcess, T], R], jobs: Iterable[T],
            on_result: Callable[[R], None] | None = None) -> list[R]:
        """fn(process, job) for every job, at most `size` at once; `on_result` sees each result as it lands."""
        import queue
        free: "queue.Queue[EnvProcess]" = queue.Queue()
        for process in self.processes:
            free.put(process)

        def run(job):
            process = free.get()
            try:
                return fn(process, job)
            finally:
                free.put(process)

        jobs = list(jobs)
        results: list = [None] * len(jobs)
        with futures.ThreadPoolExecutor(self.size, thread_name_prefix="env") as executor:
            pending = {executor.submit(run, job): i for i, job in enumerate(jobs)}
            for done in futures.as_completed(pending):
                results[pending[done]] = done.result()
                if on_result is not None:
                    on_result(results[pending[done]])
        return results

    def close(self) -> None:
        for process in self.processes:
            process.close()

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_env(process: EnvProcess, config: EnvConfig) -> None:
    """Make `process` hold an env for `config` (kept if it already does)."""
    process.call("open", config=config)
