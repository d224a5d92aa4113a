"""`worldenv up`: Redis, the three services, the debug API and a worker on this machine."""
from __future__ import annotations

import os
import pathlib
import signal
import threading

from worldenv.commands import home
from worldenv.config import MODEL_SERVICES, SERVICES


def register(sub) -> None:
    ports = ", ".join(f"{name} {service.port}" for name, service in SERVICES.items())
    p = sub.add_parser("up", help="start everything on one machine (embedded Redis unless REDIS_URL is set)")
    p.add_argument("--home", default=None, help="state and logs directory (default $WORLDENV_HOME or ~/.worldenv)")
    p.add_argument("--host", default="127.0.0.1", help="interface the services bind")
    p.add_argument("--free-ports", action="store_true", help="pick free ports instead of the default ports (" + ports + ")")
    p.add_argument("--workers", type=int, default=1, help="rollout workers (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="jobs each worker runs as one batch (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per model service (default 1)")
    for name in MODEL_SERVICES:
        p.add_argument(f"--{name}-checkpoint", default=None, help=f"{name} checkpoint directory (default: random init)")
    p.add_argument("--rollout", type=int, default=0, metavar="N", help="once up, imagine N episodes and print throughput")
    p.add_argument("--horizon", type=int, default=12, help="max chunks per episode for --rollout (default 12)")
    p.add_argument("--starts", default=None, help="start-state bank for --rollout (default: synthetic start states)")
    p.add_argument("--exit", action="store_true", help="stop everything after --rollout instead of serving on")
    p.set_defaults(func=main)


def main(args) -> int:
    from worldenv.commands import stack as local

    if args.workers < 0 or args.batch_size < 1:
        raise SystemExit("worldenv up: --workers must be >= 0 and --batch-size >= 1")
    if args.starts and not pathlib.Path(args.starts).is_file():
        raise SystemExit(f"worldenv up: --starts: no such file {args.starts}")
    state = pathlib.Path(args.home) if args.home else home.path()
    checkpoints = {n: getattr(args, n.replace("-", "_") + "_checkpoint") for n in MODEL_SERVICES}
    cfg = local.StackConfig(home=state, host=args.host, free_ports=args.free_ports, redis_url=os.environ.get("REDIS_URL"),
                            workers=args.workers, batch_size=args.batch_size, threads=args.threads,
                            checkpoints={k: v for k, v in checkpoints.items() if v})
    print(f"starting worldenv in {state} ...", flush=True)
    stack = local.start(cfg)
    try:
        _print_addresses(stack)
        if args.rollout:
            _rollout(stack, args.rollout, args.horizon, args.starts)
        if not args.exit:
            print("serving; Ctrl-C to stop", flush=True)
            _wait_for_signal()
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0


def _print_addresses(stack) -> None:
    embedded = "" if stack.config.redis_url else " (embedded)"
    print(f"redis        {stack.redis_url}{embedded}")
    for name in MODEL_SERVICES:
        print(f"{name:<12} {stack.addresses[name]}  (gRPC)")
    print(f"debug-api    {stack.addresses['debug-api']}  (REST; HTML episode viewer at /)")
    print(f"workers      {stack.config.workers} x batch {stack.config.batch_size}")
    print(f"export REDIS_URL={stack.redis_url}", flush=True)


def _rollout(stack, episodes: int, horizon: int, starts: str | None) -> None:
    import redis

    from worldenv.client import rollout
    from worldenv.client.queue import RolloutQueue
    from worldenv.data.episodes import EpisodeStore
    from worldenv.data.start_bank import StartBank, synthetic

    client = redis.Redis.from_url(stack.redis_url)
    bank = StartBank.load(starts) if starts else synthetic(n=max(1, -(-episodes // 8)))
    jobs = rollout.make_jobs(bank, episodes, rollout.new_run_id(), horizon, group_size=8)
    report = rollout.run(RolloutQueue(client, stack.config.prefix), EpisodeStore(client, stack.config.prefix), jobs)
    print("\n".join(report.lines()))
    print(f"look at them: {stack.addresses['debug-api']}/episodes/{report.episode_ids[0]}/view", flush=True)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
