"""`starts build`: the first observation of LIBERO init states, as a start-state bank."""
from __future__ import annotations

from pydantic import Field, field_validator

from worldenv.sim import suites
from worldenv.sim.job_settings import LiberoJobConfig


class StartsConfig(LiberoJobConfig):
    """Render the first observation of init states into a StartBank."""

    inits: str = Field("0-9", description="init state indices per task: '0-49', '0,3', 'all'")
    out: str = Field(description="output .npz (worldenv.data.start_bank.StartBank)")

    @field_validator("inits")
    @classmethod
    def _known_inits(cls, inits: str) -> str:
        _init_ids(inits)
        return inits

    @property
    def init_ids(self) -> list[int]:
        """The init state indices `inits` names."""
        return _init_ids(self.inits)


def _init_ids(spec: str) -> list[int]:
    return _parse_range("0-49" if spec == "all" else spec, suites.INIT_STATES_PER_TASK, "init state")


def _parse_range(spec: str, n: int, what: str) -> list[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"{what} {bad[0]} out of range (0..{n - 1})")
    return sorted(out)


def build_starts(config: StartsConfig) -> int:
    """Write a StartBank .npz: frames, proprio, instructions, ids 'suite/task/init'."""
    import numpy as np
    from worldenv.data.start_bank import StartBank
    from worldenv.sim import pool

    def first_obs(process, job):
        task, init = job
        instruction = process.call("open", config=config.env_config(task))
        return job, instruction, process.call("reset", init_index=init)

    jobs_ = [(t, i) for t in config.task_ids for i in config.init_ids]
    with pool.EnvPool(config.env_processes) as envs:
        rows = envs.map(first_obs, jobs_)
    bank = StartBank(frames=np.stack([o.frame for _, _, o in rows]), proprio=np.stack([o.proprio for _, _, o in rows]),
                     instructions=[ins for _, ins, _ in rows],
                     ids=[f"{config.suite}/{t}/{i}" for (t, i), _, _ in rows],
                     meta={"suite": config.suite, "image_size": config.image_size, "source": "libero",
                           "settle_steps": config.env_config(0).settle_steps},
                     wrist_frames=np.stack([o.wrist for _, _, o in rows]) if config.wrist else None)
    path = bank.save(config.out)
    print(f"{len(bank)} start states -> {path}", flush=True)
    return 0
