"""`worldenv explore`: a policy with sampled actions in LIBERO; every episode recorded."""
from __future__ import annotations

from worldenv.commands import libero
from worldenv.sim import jobs


def register(sub) -> None:
    p = sub.add_parser("explore", help="run a policy with sampled actions in LIBERO, record all episodes")
    libero.add_common(p)
    libero.add_policy(p)
    p.add_argument("--noise", choices=["laplace", "none"], default="laplace",
                   help="laplace = sample from the policy's Laplace head; none = its mean")
    p.add_argument("--out", required=True, help="output directory: <out>/<suite>/<task>_demo.hdf5")
    p.set_defaults(func=libero.handler(jobs.explore, jobs.ExploreConfig), episodes_per_task=10)
