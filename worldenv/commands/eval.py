"""`worldenv eval`: success rate per task and suite in LIBERO (Wilson 95 % intervals)."""
from __future__ import annotations

from worldenv.commands import libero
from worldenv.sim import jobs


def register(sub) -> None:
    p = sub.add_parser("eval", help="success rate per task and suite (Wilson 95 %% CI)")
    libero.add_common(p)
    libero.add_policy(p)
    p.add_argument("--termination", choices=["sim", "reflector"], default="sim",
                   help="sim = LIBERO's success ends an episode; reflector = p(done) > eta from --reflector")
    p.add_argument("--reflector", default=None, help="host:port of a Reflector server (termination=reflector)")
    p.add_argument("--eta", type=float, default=0.5, help="done threshold on p(done)")
    p.add_argument("--sample", action="store_true", help="sample actions (default: the policy's mean)")
    p.add_argument("--videos", type=int, default=3, help="videos to write (successes and failures)")
    p.add_argument("--out", required=True, help="output directory for eval.json, eval.md and videos")
    p.set_defaults(func=libero.handler(jobs.evaluate, jobs.EvalConfig))
