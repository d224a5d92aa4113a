"""What the LIBERO jobs share: their settings base, and the error of a job that cannot start.

Each job (`sim.demos`, `sim.starts`, `sim.policy_runs`) is a typed settings class, validated at
construction before any env starts (its field descriptions are the command's `--help`), and a
function that runs it. A job that needs a policy or a reflector connects to it first and raises
BadArguments if it cannot, still before any env.
"""
from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from worldenv.config import Settings
from worldenv.sim import suites


class BadArguments(ValueError):
    """A job that cannot start (its policy or reflector is unreachable); the message says why."""


def _checked(check, *args):
    """check(*args), with a missing LIBERO reported as a ValueError (a settings error)."""
    from worldenv.sim import install
    try:
        return check(*args)
    except install.LiberoNotInstalled as exc:
        raise ValueError(str(exc)) from None


def image_size_field(default: int):
    """The --image-size field, with this default."""
    return Field(default, ge=16, le=512, description="square frame side in pixels")


class LiberoJobConfig(Settings):
    """What every LIBERO job takes: suite, tasks, frames, env processes."""

    suite: str = Field("libero_object", description=" | ".join(suites.SUITES))
    tasks: str = Field("all", description="'all', '3', '0,2,5' or '0-4' (LIBERO's task order)")
    image_size: int = image_size_field(64)
    wrist: bool = Field(False, description="also render the wrist camera")
    env_processes: int = Field(0, description="LIBERO env processes run in parallel (0 = what fits, at most 2)",
                               json_schema_extra={"aliases": ["--workers"], "metavar": "N"})

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, suite: str) -> str:
        return suites.check_suite(suite)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: str, info: ValidationInfo) -> str:
        if "suite" in info.data:
            _checked(suites.parse_tasks, info.data["suite"], tasks)
        return tasks

    @field_validator("env_processes")
    @classmethod
    def _processes_fit(cls, n: int) -> int:
        from worldenv.sim import pool
        return pool.check_size(n)

    @property
    def task_ids(self) -> list[int]:
        """The task indices `tasks` names."""
        return suites.parse_tasks(self.suite, self.tasks)

    def env_config(self, task: int, image_size: int | None = None):
        """The env of `task` at this config's (or the given) frame size."""
        from worldenv.sim.env import EnvConfig
        return EnvConfig(self.suite, task, image_size or self.image_size, self.wrist)


def check_expert(config: LiberoJobConfig) -> None:
    """ValueError unless the scripted expert handles every task of `config`."""
    from worldenv.sim import expert
    expert.check_tasks(config.suite, config.task_ids)   # UnsupportedTask is a ValueError
