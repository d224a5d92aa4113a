"""The trained checkpoints shipped with worldenv, in the registry's format: policy/,
world_model/ and reflector/, and starts.npz, a start-state bank of real LIBERO keyframes.
`reports/models.md` says how they were made (`worldenv pipeline ... --checkpoints`) and what
they measure; `worldenv up` serves them unless told otherwise.

Every setting that names checkpoints takes two words besides a path: 'shipped' (these) and
'none' (random init); a policy setting also takes 'shipped-rl', the SFT policy after RL in
imagination (rl_policy/: plain LOOP, 30 iterations, in the world model with its learned proprio
dynamics; reports/learning-signal.md); `folder`,
`model` and `start_bank` are the one place they are read."""
from __future__ import annotations

import pathlib

DIR = pathlib.Path(__file__).resolve().parent
ROLES = ("policy", "world_model", "reflector")
STARTS = "starts.npz"
SHIPPED, NONE, SHIPPED_RL = "shipped", "none", "shipped-rl"
RL_POLICY = "rl_policy"


def model_dir(role: str, folder: pathlib.Path = DIR) -> pathlib.Path | None:
    """The checkpoint of `role` in `folder`, if there is one."""
    path = folder / role
    return path if (path / "config.json").is_file() else None


def starts(folder: pathlib.Path = DIR) -> pathlib.Path | None:
    """The start-state bank in `folder`, if there is one."""
    path = folder / STARTS
    return path if path.is_file() else None


def folder(value: str) -> pathlib.Path | None:
    """A checkpoints-folder setting: 'shipped' = this folder, 'none' = no folder (random init), else the path."""
    return DIR if value == SHIPPED else None if value == NONE else pathlib.Path(value)


def model(value: str, role: str) -> pathlib.Path | None:
    """A model-checkpoint setting of `role`: 'shipped' = the shipped one (None in an install without
    it), 'none' = None (random init), 'shipped-rl' = the shipped RL policy (policy only), else the path."""
    if value == SHIPPED_RL:
        if role != "policy":
            raise ValueError(f"{SHIPPED_RL!r} names a policy, not a {role}")
        return model_dir(RL_POLICY)
    return model_dir(role) if value == SHIPPED else None if value == NONE else pathlib.Path(value)


def start_bank(value: str) -> pathlib.Path | None:
    """A start-bank setting: 'shipped' = the shipped keyframes (None in an install without them), else the path."""
    return starts() if value == SHIPPED else pathlib.Path(value)
