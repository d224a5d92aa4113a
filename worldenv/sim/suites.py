"""LIBERO suites, tasks and init states, looked up without creating any env.

Argument checks (unknown suite, task index out of range) live here so every command can reject
bad input before an env process starts.
"""
from __future__ import annotations

import dataclasses
import functools
import os

from worldenv.sim import install

# Standard evaluation horizons (policy steps after the settle steps), as used by OpenVLA(-OFT)
# and most LIBERO results since: longest training demo of each suite, rounded up.
MAX_EPISODE_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                     "libero_10": 520, "libero_90": 400}
SUITES = tuple(MAX_EPISODE_STEPS)
INIT_STATES_PER_TASK = 50  # every task of the standard suites ships 50 fixed init states


def init_index(offset: int, episode: int) -> int:
    """The init state of the `episode`-th run from `offset`: LIBERO's fixed 0-49 wrap around;
    sampled ones (50 and up, see env.LiberoEnv.init_state) are never reused."""
    if offset < INIT_STATES_PER_TASK:
        return (offset + episode) % INIT_STATES_PER_TASK
    return offset + episode


class SuiteError(ValueError):
    """A suite name, task index or init-state index that does not exist."""


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: str        # absolute path of the task's BDDL file
    init_states_file: str  # absolute path of its fixed init states


def check_suite(suite: str) -> str:
    if suite not in MAX_EPISODE_STEPS:
        raise SuiteError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    return suite


@functools.lru_cache(maxsize=None)
def _benchmark(suite: str):
    install.prepare()
    from libero.libero import benchmark  # noqa: WPS433 - heavy, imported on first use
    return benchmark.get_benchmark_dict()[suite]()


def num_tasks(suite: str) -> int:
    return _benchmark(check_suite(suite)).n_tasks


def task(suite: str, index: int) -> TaskInfo:
    """The task `index` of `suite` in LIBERO's standard order."""
    n = num_tasks(suite)
    if not 0 <= index < n:
        raise SuiteError(f"task index {index} out of range for {suite} (0..{n - 1})")
    from libero.libero import get_libero_path
    t = _benchmark(suite).get_task(index)
    return TaskInfo(suite, index, t.name, t.language,
                    os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file),
                    os.path.join(get_libero_path("init_states"), t.problem_folder, t.init_states_file))


def parse_tasks(suite: str, spec: str) -> list[int]:
    """'all' | '3' | '0,2,5' | '0-4' -> sorted task indices, each checked against the suite."""
    n = num_tasks(suite)
    if spec.strip() == "all":
        return list(range(n))
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SuiteError(f"bad task list {spec!r}; expected 'all', '3', '0,2,5' or '0-4'") from None
    bad = sorted(i for i in out if not 0 <= i < n)
    if bad:
        raise SuiteError(f"task index {bad[0]} out of range for {suite} (0..{n - 1})")
    return sorted(out)


def init_states(suite: str, index: int):
    """(50, S) float64 flattened MuJoCo states of the task's standard init states."""
    return _benchmark(suite).get_task_init_states(task(suite, index).index)
