"""CLI: `worldenv demos collect`, `starts build`, `explore`, `eval` (LIBERO, the ground truth).

Every handler checks its arguments (suite, task indices, pool size, policy reachability)
before any env process starts, and returns 2 with a one-line message when they are wrong.
"""
from __future__ import annotations

import argparse
import sys

from worldenv.sim import jobs


def _common(p: argparse.ArgumentParser, tasks_default: str = "all", image_size: int = 64) -> None:
    p.add_argument("--suite", default="libero_object", help="libero_object | libero_spatial | libero_goal | libero_10 | libero_90")
    p.add_argument("--tasks", default=tasks_default, help="'all', '3', '0,2,5' or '0-4' (LIBERO's task order)")
    p.add_argument("--image-size", type=int, default=image_size, help="square frame side in pixels")
    p.add_argument("--wrist", action=argparse.BooleanOptionalAction, default=False, help="also render the wrist camera")
    p.add_argument("--workers", type=int, default=0, help="env processes (0 = what fits the machine, at most 2)")


def _policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="host:port of a Policy server, a checkpoint directory, or 'expert'")
    p.add_argument("--auth-token", default=None, help="bearer token for a remote policy")
    p.add_argument("--episodes-per-task", type=int, default=50, help="episodes per task (init states 0, 1, ... wrap at 50)")
    p.add_argument("--init-offset", type=int, default=0, help="first init state index")
    p.add_argument("--max-steps", type=int, default=0, help="policy steps per episode (0 = the suite's standard)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for a checkpoint policy")


def register(subparsers) -> None:
    demos = subparsers.add_parser("demos", help="scripted expert demonstrations (LIBERO HDF5)")
    demo_actions = demos.add_subparsers(dest="action", required=True, metavar="ACTION")
    collect = demo_actions.add_parser("collect", help="run the scripted expert, keep successful demos")
    _common(collect, image_size=128)
    collect.add_argument("--per-task", type=int, default=5, help="successful demos to keep per task")
    collect.add_argument("--max-attempts", type=int, default=50, help="init states tried per task at most")
    collect.add_argument("--every-step", action=argparse.BooleanOptionalAction, default=True,
                         help="frames at every step (LIBERO's layout); --no-every-step = once per chunk")
    collect.add_argument("--out", required=True, help="output directory: <out>/<suite>/<task>_demo.hdf5")
    collect.set_defaults(func=_run(jobs.collect_demos, jobs.CollectConfig), wrist=True)

    starts = subparsers.add_parser("starts", help="start-state bank for imagined rollouts")
    start_actions = starts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = start_actions.add_parser("build", help="render the first observation of LIBERO init states")
    _common(build)
    build.add_argument("--inits", default="0-9", help="init state indices per task: '0-49', '0,3', 'all'")
    build.add_argument("--out", required=True, help="output .npz (worldenv.data.start_bank.StartBank)")
    build.set_defaults(func=_run(jobs.build_starts, jobs.StartsConfig))

    explore = subparsers.add_parser("explore", help="run a policy with sampled actions in LIBERO, record all episodes")
    _common(explore)
    _policy(explore)
    explore.add_argument("--noise", choices=["laplace", "none"], default="laplace",
                         help="laplace = sample from the policy's Laplace head; none = its mean")
    explore.add_argument("--out", required=True, help="output directory: <out>/<suite>/<task>_demo.hdf5")
    explore.set_defaults(func=_run(jobs.explore, jobs.ExploreConfig), episodes_per_task=10)

    ev = subparsers.add_parser("eval", help="success rate per task and suite (Wilson 95 %% CI)")
    _common(ev)
    _policy(ev)
    ev.add_argument("--termination", choices=["sim", "reflector"], default="sim",
                    help="sim = LIBERO's success ends an episode; reflector = p(done) > eta from --reflector")
    ev.add_argument("--reflector", default=None, help="host:port of a Reflector server (termination=reflector)")
    ev.add_argument("--eta", type=float, default=0.5, help="done threshold on p(done)")
    ev.add_argument("--sample", action="store_true", help="sample actions (default: the policy's mean)")
    ev.add_argument("--videos", type=int, default=3, help="videos to write (successes and failures)")
    ev.add_argument("--out", required=True, help="output directory for eval.json, eval.md and videos")
    ev.set_defaults(func=_run(jobs.evaluate, jobs.EvalConfig))


def _run(main, config_class):
    """Handler: Namespace -> typed config -> main(config); bad input -> exit code 2 and a message."""
    def handler(args: argparse.Namespace) -> int:
        try:
            config = config_class.from_args(args)
            return int(main(config) or 0)
        except jobs.BadArguments as exc:
            print(f"worldenv {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return handler
