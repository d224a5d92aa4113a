"""`worldenv starts build | keyframes`: start-state banks, from LIBERO's init states or from the
chunk boundaries of recorded episodes."""
from __future__ import annotations

from pydantic import Field

from worldenv.commands import flags
from worldenv.config import Settings, comma_list
from worldenv.sim.job_settings import BadArguments
from worldenv.sim.starts import StartsConfig, build_starts


class KeyframesConfig(Settings):
    """Keyframes of recorded episodes (demos, exploration) as a start-state bank."""

    data: str = Field(description="HDF5 episode files or folders of them, comma-separated")
    history: int = Field(1, ge=0, description="chunk-boundary frames kept before each keyframe")
    every: int = Field(1, ge=1, description="every n-th chunk boundary of an episode")
    before_success: int = Field(0, ge=0, description="starts where the outcome is open: a successful episode gives "
                                "only its last K chunk boundaries before success, a failed one all of its boundaries "
                                "(0 = every boundary before success)")
    out: str = Field(description="output .npz (worldenv.data.start_bank.StartBank)")


def build_keyframes(config: KeyframesConfig) -> int:
    """Write the bank; keyframes stop before each episode's success."""
    from worldenv.data import chunks, start_bank
    episodes = chunks.load(comma_list(config.data))
    bank = start_bank.keyframes(episodes, history=config.history, every=config.every,
                                before_success=config.before_success)
    path = bank.save(config.out)
    print(f"{len(bank)} keyframes from {len(episodes)} episodes -> {path}", flush=True)
    return 0


def register(sub) -> None:
    starts = sub.add_parser("starts", help="start-state bank for imagined rollouts")
    actions = starts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="render the first observation of LIBERO init states")
    flags.command(build, "starts build", StartsConfig, build_starts, errors=(BadArguments,))
    keys = actions.add_parser("keyframes", help="keyframes (any chunk boundary) of recorded episodes")
    flags.command(keys, "starts keyframes", KeyframesConfig, build_keyframes, errors=(ValueError, FileNotFoundError))
