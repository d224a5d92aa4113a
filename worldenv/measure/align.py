"""`worldenv align`: the alignment of imagination with LIBERO for one policy (see `alignment`).

Two steps, the first resumable: the policy explores held-out sampled init states in LIBERO
(every episode recorded under <out>/real, every simulator step counted), then the same policy
runs from each episode's first frame inside the world model with the reflector deciding, and
the world model replays each episode's real actions (with --in-libero, LIBERO then executes each
imagined episode's actions too). <out>/alignment.json and alignment.md hold
the figures; <out>/false_successes/ shows the replays the reflector calls done where LIBERO did not.
"""
from __future__ import annotations

import contextlib
import json
import pathlib

import numpy as np
from typing import Literal

from pydantic import Field

from worldenv.config import confirm_field, grasp_gate_field
from worldenv.sim.job_settings import LiberoJobConfig

ALIGN_INITS = 8000   # sampled init states no other stage uses (demos 1000, exploration 2000, held-out 5000/6000, Dyna 7000;
                     # the grasp gate's calibration, scripts/grasp_gate.sh, 9000)


class AlignConfig(LiberoJobConfig):
    """Imagined vs real outcomes of one policy from the same first frames."""

    tasks: str = Field("0,1,2", description="'all', '3', '0,2,5' or '0-4' (LIBERO's task order)")
    policy: str = Field("shipped", description="policy checkpoint directory; 'shipped' = worldenv's trained one")
    world_model: str = Field("shipped", description="world-model checkpoint directory; 'shipped' = worldenv's")
    reflector: str = Field("shipped", description="reflector checkpoint directory; 'shipped' = worldenv's")
    episodes_per_task: int = Field(10, ge=1, description="real episodes per task (init states offset, offset + 1, ...)")
    init_offset: int = Field(ALIGN_INITS, ge=50, description="first sampled init state (>= 50: never LIBERO's fixed "
                             "evaluation states)")
    noise: Literal["none", "laplace"] = Field("none", description="none = the policy's mean in both worlds; laplace = "
                                              "sampled from its Laplace head in both")
    eta: float = Field(0.5, gt=0, lt=1, description="done threshold on p(done)")
    grasp_gate: float = grasp_gate_field()
    confirm: int = confirm_field()
    seed: int = Field(0, description="sampling seed (noise laplace)")
    exploration_scale: float | None = Field(
        None, gt=0, description="noise laplace: the policy's Laplace scale restarted at this value (normalised action "
        "units) in both worlds, as `train rl` explores; none = the checkpoint's own")
    draws: int = Field(0, ge=0, le=32, description="run the closed loop this many more times from first frames "
                       "jittered by at most --jitter grey levels per pixel: how many episodes' imagined verdicts "
                       "the scene does not decide, and the agreement averaged over draws; 0 = one closed loop")
    jitter: int = Field(1, ge=1, le=16, description="--draws: the largest change of a pixel, grey levels")
    in_libero: bool = Field(False, description="also execute each closed loop's action chunks open loop in LIBERO "
                            "from the episode's init state, and hold the imagined verdict against that outcome: the "
                            "reward imagination gives those actions against what they really do (every step counted)")
    false_successes: int = Field(8, ge=0, description="pictures of up to this many failed real episodes whose "
                                 "world-model replay the reflector calls done (real frames over the replay's, "
                                 "around the verdict): false_successes/<id>.png; 0 = none")
    out: str = Field(description="directory: real/ (the recorded real episodes), alignment.json, alignment.md, "
                     "false_successes/")


def resolve(value: str, role: str, flag: str | None = None) -> str:
    """A checkpoint setting ('shipped' or a directory; `checkpoints.model` reads the words) ->
    the directory; a missing one is a ValueError naming the flag (default --<role>)."""
    from worldenv import checkpoints
    found = checkpoints.model(value, role)
    if found is None or not (found / "config.json").is_file():
        raise ValueError(f"{flag or '--' + role.replace('_', '-')}: no checkpoint (config.json) at {value}")
    return str(found)


def load_checkpoint(value: str, role: str, flag: str | None = None):
    """The model of a checkpoint setting (`resolve`'s words and errors)."""
    from worldenv import models
    return models.load(resolve(value, role, flag), role=role)


def write_pictures(folder: pathlib.Path, pictures: dict[str, np.ndarray], scale: int = 3) -> None:
    """Each picture as <folder>/<id with '/' as '_'>.png, enlarged `scale` times (nearest); no
    folder when there are none."""
    if not pictures:
        return
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for name, picture in pictures.items():
        image = Image.fromarray(picture)
        image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(
            folder / f"{name.replace('/', '_')}.png")


def record(config: AlignConfig, policy_dir: str, real: pathlib.Path) -> pathlib.Path:
    """The policy's real episodes under `real` (kept: recorded once, done.json marks them complete)."""
    from worldenv.sim.policy_runs import ExploreConfig, explore
    if not (real / "done.json").is_file():
        explore(ExploreConfig(suite=config.suite, tasks=config.tasks, image_size=config.image_size,
                              env_processes=config.env_processes, policy=policy_dir, noise=config.noise,
                              episodes_per_task=config.episodes_per_task, init_offset=config.init_offset,
                              seed=config.seed, exploration_scale=config.exploration_scale, out=str(real)))
        (real / "done.json").write_text(json.dumps({"policy": policy_dir, "noise": config.noise,
                                                    "exploration_scale": config.exploration_scale}))
    return real


def align(config: AlignConfig) -> int:
    """Record the real episodes (once), measure, write alignment.json and alignment.md."""
    from worldenv import models
    from worldenv.models import laplace
    from worldenv.data import chunks
    from worldenv.measure import alignment, reflector as reflector_measure
    from worldenv.sim import open_loop, suites

    out = pathlib.Path(config.out)
    policy_dir = resolve(config.policy, "policy")
    episodes = chunks.load([record(config, policy_dir, out / "real")])
    policy = models.load(policy_dir, role="policy")
    laplace.restart_scale(policy, config.exploration_scale, "--exploration-scale")
    horizon = suites.MAX_EPISODE_STEPS[config.suite] // policy.spec.chunk_length
    world_model = load_checkpoint(config.world_model, "world_model")
    reflector = load_checkpoint(config.reflector, "reflector")
    replayed = reflector_measure.replay(world_model, episodes)
    with contextlib.ExitStack() as stack:
        executor = stack.enter_context(open_loop.Executor(config.image_size)) if config.in_libero else None
        result = alignment.measure(policy, world_model, reflector, episodes, horizon, config.eta,
                                   deterministic=config.noise == "none", grasp_gate=config.grasp_gate,
                                   replayed=replayed, draws=config.draws, jitter=config.jitter, in_libero=executor,
                                   confirm=config.confirm)
    result |= {"noise": config.noise, "grasp_gate": config.grasp_gate, "exploration_scale": config.exploration_scale,
               "real_success": float(np.mean([e.succeeded for e in episodes])), "policy": policy_dir, "world_model": config.world_model, "reflector": config.reflector,
               "init_states": f"{config.init_offset}.. (sampled)", "sim_steps": int(sum(e.steps[-1] for e in episodes))}
    (out / "alignment.json").write_text(json.dumps(result, indent=2))
    (out / "alignment.md").write_text("\n".join(alignment.markdown(result)) + "\n")
    write_pictures(out / "false_successes", alignment.false_successes(episodes, replayed, result["per_episode"],
                                                                      config.false_successes))
    for line in alignment.console(result):
        print(line, flush=True)
    print(f"-> {out / 'alignment.md'}", flush=True)
    return 0

