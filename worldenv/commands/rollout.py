"""`worldenv rollout --episodes N`: enqueue N imagined episodes, wait, print throughput."""
from __future__ import annotations

import os

from worldenv.commands import home


def register(sub) -> None:
    p = sub.add_parser("rollout", help="enqueue N imagined episodes, wait for them, print throughput and latency")
    p.add_argument("--episodes", type=int, default=16, help="episodes to imagine (default 16)")
    p.add_argument("--starts", default=None, help="start-state bank (.npz from `worldenv starts build`); default: synthetic")
    p.add_argument("--horizon", type=int, default=12, help="max action chunks per episode (default 12)")
    p.add_argument("--group-size", type=int, default=8, help="rollouts per start state (default 8)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed base; 0 = unseeded (default 1)")
    p.add_argument("--eta", type=float, default=0.0, help="done threshold; 0 = the reflector's default")
    p.add_argument("--redis-url", default=None, help="default: $REDIS_URL, else the one `worldenv up` recorded")
    p.add_argument("--prefix", default=os.environ.get("WORLDENV_PREFIX", "worldenv"), help="key prefix in Redis")
    p.add_argument("--run-id", default=None, help="default: a new unique id")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all results")
    p.set_defaults(func=main)


def validate(args) -> None:
    if args.episodes < 1:
        raise SystemExit("worldenv rollout: --episodes must be >= 1")
    if args.horizon < 1 or args.group_size < 1:
        raise SystemExit("worldenv rollout: --horizon and --group-size must be >= 1")
    if not 0 <= args.eta < 1:
        raise SystemExit("worldenv rollout: --eta must be in [0, 1)")
    if args.starts and not os.path.isfile(args.starts):
        raise SystemExit(f"worldenv rollout: --starts: no such file {args.starts}")


def main(args) -> int:
    validate(args)
    import redis

    from worldenv.client import rollout
    from worldenv.client.queue import RolloutQueue
    from worldenv.data.episodes import EpisodeStore
    from worldenv.data.start_bank import StartBank, synthetic

    url = args.redis_url or home.redis_url()
    bank = StartBank.load(args.starts) if args.starts else synthetic(n=max(1, -(-args.episodes // args.group_size)))
    client = redis.Redis.from_url(url)
    run_id = args.run_id or rollout.new_run_id()
    jobs = rollout.make_jobs(bank, args.episodes, run_id, args.horizon, args.group_size, args.seed, args.eta)
    print(f"enqueued {len(jobs)} episodes from {len(bank)} start states ({bank.meta.get('source', args.starts)}) on {url}",
          flush=True)
    report = rollout.run(RolloutQueue(client, args.prefix), EpisodeStore(client, args.prefix), jobs, args.timeout)
    print("\n".join(report.lines()), flush=True)
    return 0
