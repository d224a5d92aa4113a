"""Whether an RL run still learns: why an iteration had no group to train on, and the loud stop
after K such iterations in a row for the same cause (`--max-hopeless`). Light to import."""
from __future__ import annotations

import dataclasses

# Causes of an iteration with no usable group. "no_reward_spread" (groups came back, but their
# rewards did not differ) is a state of learning, not a broken run, so it never stops one.
HOPELESS = {
    "stale": "every group had episodes sampled by a policy that is not the trainer's (a policy replica that "
             "restarted on other weights, or a version older than --max-staleness allows)",
    "failed": "every group had failed episodes (a service refusing the calls, or workers giving up)",
    "incomplete": "every group came back short of --group-size episodes",
    "unreachable": "no policy replica answered at --policy-addr",
}


class NoProgress(RuntimeError):
    """K iterations in a row had no usable group for one cause."""

    def __init__(self, cause: str, iterations: int, detail: str):
        super().__init__(f"no usable group in {iterations} consecutive iterations, cause: {cause}: {HOPELESS[cause]}"
                         + (f"; last: {detail}" if detail else ""))
        self.cause, self.iterations, self.detail = cause, iterations, detail


def cause_of(kept_groups: int, informative: int, dropped: dict[str, int]) -> str | None:
    """Why an iteration made no update (None: it made one): the cause that dropped the most
    groups when none was kept, else "no_reward_spread"."""
    if informative:
        return None
    if kept_groups:
        return "no_reward_spread"
    counts = {cause: dropped.get(f"dropped_{cause}", 0) for cause in ("stale", "failed", "incomplete")}
    return max(counts, key=counts.get) if any(counts.values()) else "incomplete"


@dataclasses.dataclass
class Watch:
    """Counts consecutive iterations with no usable group for one cause; `limit` = 0 never stops."""

    limit: int
    cause: str | None = None
    count: int = 0

    def see(self, row: dict) -> dict:
        """Note `row`'s cause; returns the row with its `hopeless_streak`."""
        cause = row.get("no_update_cause")
        if cause in HOPELESS:
            self.count = self.count + 1 if cause == self.cause else 1
            self.cause = cause
        else:
            self.cause, self.count = None, 0
        return {**row, "hopeless_streak": self.count}

    def check(self, row: dict) -> None:
        """Raise NoProgress when the streak reached the limit."""
        if self.limit and self.count >= self.limit:
            raise NoProgress(self.cause, self.count, row.get("drop_reason", ""))
