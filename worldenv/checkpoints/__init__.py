"""The trained checkpoints shipped with worldenv, in the registry's format: policy/,
world_model/ and reflector/, and starts.npz, a start-state bank of real LIBERO keyframes.
`reports/models.md` says how they were made (`worldenv pipeline ... --checkpoints`) and what
they measure; `worldenv up` serves them unless told otherwise."""
from __future__ import annotations

import pathlib

DIR = pathlib.Path(__file__).resolve().parent
ROLES = ("policy", "world_model", "reflector")
STARTS = "starts.npz"


def model_dir(role: str, folder: pathlib.Path = DIR) -> pathlib.Path | None:
    """The checkpoint of `role` in `folder`, if there is one."""
    path = folder / role
    return path if (path / "config.json").is_file() else None


def starts(folder: pathlib.Path = DIR) -> pathlib.Path | None:
    """The start-state bank in `folder`, if there is one."""
    path = folder / STARTS
    return path if path.is_file() else None
