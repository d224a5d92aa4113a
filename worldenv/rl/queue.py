"""The rollout job queue on Redis Streams.

`{prefix}:jobs` is a stream read by the consumer group `workers`; `{prefix}:results` is a
stream of finished episodes. Job ids are idempotent (enqueueing the same id twice adds one
entry), a live worker touches the entries it runs every step, entries left pending by a dead
worker are reclaimed with XAUTOCLAIM once idle for the reclaim time, and completion is
one Lua script that publishes the result at most once per job id and acks the entry, so every
job yields exactly one result however often it was delivered.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable

import numpy as np
import redis

from worldenv.wire import codec

log = logging.getLogger(__name__)
GROUP = "workers"
_ENQUEUE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
end
return false
"""
_COMPLETE = """
local first = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3])
if first then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
if first then return 1 end
return 0
"""


@dataclasses.dataclass
class Job:
    """One imagined episode to run from a start state."""

    id: str
    frame: np.ndarray            # (H, W, 3) uint8 start frame
    proprio: np.ndarray          # (P,) float32 start proprio
    instruction: str
    start_id: str = ""           # start-bank id, e.g. "libero_object/3/17"
    run_id: str = ""
    group_id: str = ""           # rollouts of one start state (LOOP groups of N)
    horizon: int = 16            # max action chunks
    seed: int = 0                # policy sampling seed (0 = unseeded)
    eta: float = 0.0             # done threshold (0 = reflector default)
    grasp_gate: float = 0.0      # metres: a verdict counts once the imagined gripper held this gap (0 = off)
    confirm: int = 1             # verdicts in a row (p(done) > eta) that end the episode done
    deterministic: bool = False
    enqueued_at: float = 0.0
    history: np.ndarray | None = None  # (T, H, W, 3) uint8 frames before the start frame (a keyframe's)

    def to_fields(self) -> dict[str, bytes | str]:
        fields = {k: str(getattr(self, k)) for k in _TEXT_FIELDS}
        fields["deterministic"] = "1" if self.deterministic else "0"
        fields["frame"] = codec.to_bytes(self.frame, "frame")
        fields["proprio"] = codec.to_bytes(np.asarray(self.proprio, np.float32), "proprio")
        if self.history is not None:
            fields["history"] = codec.to_bytes(self.history, "history")
        return fields

    def start_frames(self) -> np.ndarray:
        """(T+1, H, W, 3): the history, then the start frame."""
        return self.frame[None] if self.history is None else np.concatenate([self.history, self.frame[None]])

    @classmethod
    def from_fields(cls, f: dict[bytes, bytes]) -> "Job":
        """The job of a stream entry; BadJob naming the job and the field when it cannot be read."""
        try:
            return cls._from_fields(f)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise BadJob(_job_id(f), f"job {_job_id(f)!r}: {reason}") from exc

    @classmethod
    def _from_fields(cls, f: dict[bytes, bytes]) -> "Job":
        s = {k.decode(): v for k, v in f.items()}
        text = {k: v.decode() for k, v in s.items() if k not in _ARRAY_FIELDS}
        if int(text.get("confirm", "1")) < 1:
            raise ValueError(f"confirm must be >= 1, got {text['confirm']}")
        return cls(id=text["id"], frame=codec.from_bytes(s["frame"], "frame"), proprio=codec.from_bytes(s["proprio"], "proprio"),
                   instruction=text["instruction"], start_id=text["start_id"], run_id=text["run_id"],
                   group_id=text["group_id"], horizon=int(text["horizon"]), seed=int(text["seed"]),
                   eta=float(text["eta"]), grasp_gate=float(text.get("grasp_gate", "0")),
                   confirm=int(text.get("confirm", "1")),
                   deterministic=text["deterministic"] == "1",
                   enqueued_at=float(text["enqueued_at"]),
                   history=codec.from_bytes(s["history"], "history") if "history" in s else None)


_ARRAY_FIELDS = ("frame", "proprio", "history")
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if f.name not in _ARRAY_FIELDS)


class BadJob(ValueError):
    """A stream entry that is not a readable job (malformed tensor, missing field)."""

    def __init__(self, job_id: str, message: str):
        super().__init__(message)
        self.job_id = job_id


def _text(f: dict[bytes, bytes], name: str) -> str:
    raw = f.get(name.encode(), f.get(name, b""))
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _str(value: bytes | str) -> str:
    """A stream entry id or name as text, whichever way the client returned it."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_id(f: dict[bytes, bytes]) -> str:
    return _text(f, "id")


@dataclasses.dataclass
class Claimed:
    entry_id: str
    job: Job
    attempts: int
    reclaimed: bool


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RolloutQueue:
    """Jobs and results streams under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str = "worldenv", results_maxlen: int = 100_000,
                 key_ttl_s: int = 7 * 24 * 3600):
        self.r, self.prefix = client, prefix
        self.jobs_key, self.results_key = f"{prefix}:jobs", f"{prefix}:results"
        self.results_maxlen, self.key_ttl_s = results_maxlen, key_ttl_s
        self._enqueue = client.register_script(_ENQUEUE)
        self._complete = client.register_script(_COMPLETE)
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.jobs_key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def enqueue(self, job: Job) -> bool:
        """Add a job; False (and nothing added) if this job id was enqueued before."""
        return self.enqueue_many([job])[0]

    def enqueue_many(self, jobs: list[Job]) -> list[bool]:
        """Add jobs in one transaction (one round trip), so a worker claims full batches rather
        than the first few of a run still being enqueued; per job, False if enqueued before."""
        with self.r.pipeline(transaction=True) as pipe:
            for job in jobs:
                job.enqueued_at = job.enqueued_at or time.time()
                args = [self.key_ttl_s] + [x for kv in job.to_fields().items() for x in kv]
                self._enqueue(keys=[self.jobs_key, f"{self.prefix}:job:{job.id}"], args=args, client=pipe)
            return [reply is not None for reply in pipe.execute()]

    def claim(self, consumer: str, count: int, block_ms: int = 1000, reclaim_idle_ms: int = 60_000) -> list[Claimed]:
        """Up to `count` jobs: first those pending too long on dead consumers, then new ones."""
        entries = self._reclaim(consumer, count, reclaim_idle_ms)
        reclaimed = {e[0] for e in entries}
        if len(entries) < count:
            got = self.r.xreadgroup(GROUP, consumer, {self.jobs_key: ">"}, count=count - len(entries),
                                    block=None if entries else block_ms)
            for _, items in got or []:
                entries.extend(items)
        readable = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending
                self.r.xack(self.jobs_key, GROUP, entry_id)
                continue
            try:
                readable.append((entry_id, Job.from_fields(fields)))
            except BadJob as exc:
                self._reject(entry_id, fields, exc)
        with self.r.pipeline(transaction=False) as pipe:  # one round trip for the batch's attempt counts
            for _, job in readable:
                pipe.hincrby(f"{self.prefix}:attempts", job.id, 1)
            attempts = pipe.execute() if readable else []
        return [Claimed(_str(entry_id), job, n, entry_id in reclaimed)
                for (entry_id, job), n in zip(readable, attempts)]

    def drop_undelivered(self, stale: Callable[[str], bool]) -> int:
        """Delete the jobs no worker has been given yet whose run id `stale` picks (a restarted
        trainer's earlier attempts, which nobody waits for and which would otherwise be imagined
        ahead of its new jobs). Jobs a worker already holds finish as usual (their entries are
        acked on completion). Returns how many were deleted."""
        groups = {_str(g["name"]): g for g in self.r.xinfo_groups(self.jobs_key)}
        last = groups[GROUP]["last-delivered-id"]
        start, dropped = "(" + _str(last), 0
        while True:
            entries = self.r.xrange(self.jobs_key, min=start, max="+", count=512)
            if not entries:
                return dropped
            picked = [entry_id for entry_id, fields in entries if stale(_text(fields, "run_id"))]
            if picked:
                dropped += self.r.xdel(self.jobs_key, *picked)
            start = "(" + _str(entries[-1][0])

    def touch(self, consumer: str, entry_ids: list[str]) -> None:
        """Heartbeat of a live worker: reset the idle time of the entries it is running, so only
        a dead worker's entries reach the reclaim idle time, however long the episodes run."""
        if entry_ids:
            self.r.xclaim(self.jobs_key, GROUP, consumer, min_idle_time=0, message_ids=entry_ids, justid=True)

    def _reject(self, entry_id, entry: dict, exc: BadJob) -> None:
        """An entry no worker can run: publish it as failed with the reason, and ack it, so it
        is neither retried forever nor waited for."""
        log.error("job stream entry %s rejected: %s", entry_id, exc)
        job_id = exc.job_id or _str(entry_id)
        fields = {"job_id": job_id, "run_id": _text(entry, "run_id"), "group_id": _text(entry, "group_id"),
                  "status": "failed", "error": str(exc)}
        args = [GROUP, entry_id, self.key_ttl_s, self.results_maxlen] + [x for kv in fields.items() for x in kv]
        self._complete(keys=[f"{self.prefix}:done:{job_id}", self.results_key, self.jobs_key], args=args)

    def _reclaim(self, consumer: str, count: int, idle_ms: int) -> list:
        out, cursor = [], "0-0"
        for _ in range(16):  # bounded scan of the pending list
            reply = self.r.xautoclaim(self.jobs_key, GROUP, consumer, min_idle_time=idle_ms,
                                      start_id=cursor, count=count - len(out))
            cursor, items = reply[0], reply[1]
            out.extend(items)
            if len(out) >= count or cursor in (b"0-0", "0-0"):
                break
        return out

    def complete(self, claimed: Claimed, result: dict[str, str | int | float]) -> bool:
        """Publish the job's result (once per job id, ever) and ack its entry."""
        fields = {"job_id": claimed.job.id, "run_id": claimed.job.run_id, "group_id": claimed.job.group_id, **result}
        args = [GROUP, claimed.entry_id, self.key_ttl_s, self.results_maxlen] + [str(x) for kv in fields.items() for x in kv]
        first = self._complete(keys=[f"{self.prefix}:done:{claimed.job.id}", self.results_key, self.jobs_key], args=args)
        self.r.hdel(f"{self.prefix}:attempts", claimed.job.id)
        return bool(first)

    def results_cursor(self) -> str:
        """The id to read results after: everything already published is before it."""
        last = self.r.xrevrange(self.results_key, count=1)
        return last[0][0].decode() if last else "0-0"

    def wait_results(self, run_id: str, n: int, after: str = "0-0", timeout_s: float = 600.0,
                     on_wait: Callable[[], None] | None = None) -> list[dict[str, str]]:
        """Block until `n` results of `run_id` arrived after `after`; returns them in order.
        `timeout_s` bounds the wait for the next result, not for all of them: a slow stack that
        keeps finishing episodes is waited for, a stalled one fails. `on_wait` is called between
        reads (about once a second) while results are missing."""
        deadline, found = time.monotonic() + timeout_s, []
        while len(found) < n:
            if on_wait is not None:
                on_wait()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise TimeoutError(f"{len(found)} of {n} results of run {run_id!r}: none new for {timeout_s:g} s")
            reply = self.r.xread({self.results_key: after}, count=512, block=min(remaining_ms, 1000))
            for _, items in reply or []:
                for entry_id, fields in items:
                    after = entry_id.decode()
                    result = {k.decode(): v.decode() for k, v in fields.items()}
                    if result.get("run_id") == run_id:
                        found.append(result)
                        deadline = time.monotonic() + timeout_s
        return found

    def pending(self) -> int:
        return self.r.xpending(self.jobs_key, GROUP)["pending"]
