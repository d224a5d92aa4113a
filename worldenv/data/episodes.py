"""Imagined episodes: the record a rollout worker writes and the Redis store that keeps them.

Workers and the debug API run in different pods, so episodes live in Redis (AOF persistence in
deployment, so a restarted API loses nothing). Arrays are serialized `worldenv.v1.Tensor`
messages from `worldenv.wire.codec` - the same bytes as on the gRPC wire, never pickle.

Redis layout under `{prefix}:ep:` (an id cannot contain ':', so no id collides with the rest):
    id:{id}              hash   meta (JSON), actions, log_probs, p_done, proprio (Tensor bytes)
    id:{id}:frames       list   one Tensor per frame, (H, W, 3) uint8, so one frame is one LINDEX
    idx:all              zset   every episode id, scored by insertion sequence (newest = highest)
    idx:status:{status}  zset   the same, per status
    idx:version:{v}      zset   the same, per policy version
    idx:run:{run_id}     zset   the same, per run (only when run_id is set)
    seq                  string the insertion counter
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid

import numpy as np
import redis

from worldenv.wire import codec

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
STATUSES = ("done", "horizon", "failed")
ARRAY_FIELDS = ("actions", "log_probs", "p_done", "proprio")  # stored in the hash; frames apart
_ID_RE = re.compile(ID_PATTERN[1:-1])


def check_id(episode_id: str) -> str:
    """Return `episode_id` if it is a valid episode id, else raise ValueError naming it."""
    if not isinstance(episode_id, str) or _ID_RE.fullmatch(episode_id) is None:
        raise ValueError(f"episode_id: {episode_id!r} does not match {ID_PATTERN} "
                         "(letters, digits, '_', '.', '-'; up to 128; starts with a letter or digit)")
    return episode_id


def new_id() -> str:
    """A fresh random episode id."""
    return uuid.uuid4().hex


def _f32(name: str, value, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


@dataclasses.dataclass
class ImaginedEpisode:
    """One imagined episode of T steps. Arrays are numpy; those from the store are read-only."""

    id: str
    status: str                       # "done" (reflector said done) | "horizon" | "failed"
    policy_version: int
    instruction: str
    start_id: str                     # start-state id, e.g. "libero_object/3/17"
    _: dataclasses.KW_ONLY
    frames: np.ndarray                # (T+1, H, W, 3) uint8: start frame + one per step
    actions: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))  # (T, K, A)
    log_probs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))      # (T,)
    p_done: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))         # (T,)
    proprio: np.ndarray | None = None  # (T+1, P) float32; None = not recorded, (T+1, 0)
    group_id: str = ""                # the N rollouts of one start state share it (LOOP groups)
    run_id: str = ""                  # the rollout command / trainer iteration that enqueued it
    done_step: int | None = None      # first step with p_done > eta, else None
    reward: float = 0.0               # p_done at the termination step (or the last step)
    timings_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # "act", "step", "judge"
    created_at: float = dataclasses.field(default_factory=time.time)  # unix time
    error: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # free JSON; "eta" is shown by the API

    def __post_init__(self):
        check_id(self.id)
        if self.status not in STATUSES:
            raise ValueError(f"status: {self.status!r} is not one of {', '.join(STATUSES)}")
        self.policy_version = int(self.policy_version)
        self._check_arrays()
        self._check_scalars()

    @property
    def steps(self) -> int:
        """T, the number of steps taken (frames holds T+1)."""
        return len(self.frames) - 1

    def _check_arrays(self) -> None:
        frames = np.asarray(self.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 1:
            raise ValueError(f"frames: expected (T+1, H, W, 3) uint8 with T >= 0, got {frames.dtype} {frames.shape}")
        self.frames, t = frames, len(frames) - 1
        self.actions = _f32("actions", self.actions, 3)
        self.log_probs = _f32("log_probs", self.log_probs, 1)
        self.p_done = _f32("p_done", self.p_done, 1)
        proprio = np.zeros((t + 1, 0), np.float32) if self.proprio is None else self.proprio
        self.proprio = _f32("proprio", proprio, 2)
        for name, want in (("actions", t), ("log_probs", t), ("p_done", t), ("proprio", t + 1)):
            got = len(getattr(self, name))
            if got != want:
                raise ValueError(f"{name}: length {got} disagrees with frames (T={t}: {want} expected)")
        if not np.isfinite(self.p_done).all():
            raise ValueError("p_done: contains NaN or inf")

    def _check_scalars(self) -> None:
        if self.done_step is not None and not 0 <= int(self.done_step) < self.steps:
            raise ValueError(f"done_step: {self.done_step} is outside 0..{self.steps - 1}")
        self.done_step = None if self.done_step is None else int(self.done_step)
        self.reward = float(self.reward)
        if not math.isfinite(self.reward):
            raise ValueError(f"reward: {self.reward} is not finite")
        self.timings_ms = {str(k): [float(x) for x in v] for k, v in self.timings_ms.items()}
        try:
            json.dumps(self.extra, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"extra: not JSON-serializable ({e})") from None

    def meta(self) -> dict:
        """JSON-able metadata: every field except the arrays, plus their shapes."""
        skip = {"frames", *ARRAY_FIELDS}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out.update(steps=self.steps, frame_shape=list(self.frames.shape[1:]),
                   action_shape=list(self.actions.shape[1:]), proprio_dim=int(self.proprio.shape[1]))
        return out


def synthetic_episode(episode_id: str | None = None, steps: int = 5, image_size: int = 16, seed: int = 0,
                      chunk: tuple[int, int] = (8, 7), proprio_dim: int = 8, **fields) -> ImaginedEpisode:
    """A small random episode for tests and smoke runs; `fields` override any ImaginedEpisode field."""
    rng = np.random.default_rng(seed)
    p_done = np.sort(rng.random(steps)).astype(np.float32)  # rising, as a reflector's would
    done = np.flatnonzero(p_done > 0.5)
    done_step = int(done[0]) if len(done) else None
    defaults = dict(
        id=new_id() if episode_id is None else episode_id, policy_version=0,
        status="done" if done_step is not None else "horizon",
        instruction="pick up the red block and place it in the basket", start_id=f"synthetic/0/{seed}",
        frames=rng.integers(0, 256, (steps + 1, image_size, image_size, 3), dtype=np.uint8),
        actions=rng.standard_normal((steps, *chunk)).astype(np.float32),
        log_probs=rng.standard_normal(steps).astype(np.float32), p_done=p_done,
        proprio=rng.standard_normal((steps + 1, proprio_dim)).astype(np.float32), done_step=done_step,
        reward=float(p_done[done_step if done_step is not None else -1]) if steps else 0.0,
        timings_ms={k: rng.uniform(1, 50, steps).round(3).tolist() for k in ("act", "step", "judge")},
        extra={"eta": 0.5})
    return ImaginedEpisode(**{**defaults, **fields})


_PUT = """
-- KEYS: 1 episode hash, 2 frames list, 3 sequence counter, 4.. index zsets
-- ARGV: 1 id, 2 number of hash field/value pairs k, 3..2+2k the pairs, then one entry per frame
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local k = tonumber(ARGV[2])
for i = 3, 2 + 2 * k, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3 + 2 * k, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local seq = redis.call('INCR', KEYS[3])
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], seq, ARGV[1]) end
return 1
"""

_META_FIELDS = ("id", "status", "policy_version", "instruction", "start_id", "group_id", "run_id", "done_step",
                "reward", "timings_ms", "created_at", "error", "extra")


class EpisodeStore:
    """Episodes in Redis with bounded retention: the oldest beyond `max_episodes` are dropped.

    `client` must return bytes (the redis-py default, not `decode_responses=True`).
    """

    def __init__(self, client: redis.Redis, prefix: str = "worldenv", max_episodes: int = 10000):
        if max_episodes < 1:
            raise ValueError(f"max_episodes: must be >= 1, got {max_episodes}")
        self._r, self.client, self.prefix = client, client, prefix
        self._ns = f"{prefix}:ep:"
        self.max_episodes = max_episodes
        self._put = client.register_script(_PUT)

    # ---- keys -----------------------------------------------------------------------------
    def _key(self, episode_id: str) -> str:
        return f"{self._ns}id:{check_id(episode_id)}"

    def _indexes(self, status: str | None = None, policy_version: int | None = None,
                 run_id: str | None = None) -> list[str]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        keys = [f"{self._ns}idx:status:{status}"] if status is not None else []
        if policy_version is not None:
            keys.append(f"{self._ns}idx:version:{int(policy_version)}")
        if run_id:
            keys.append(f"{self._ns}idx:run:{run_id}")
        return keys

    def _indexes_of(self, meta: dict) -> list[str]:
        return [f"{self._ns}idx:all", *self._indexes(meta["status"], meta["policy_version"], meta["run_id"])]

    # ---- writing --------------------------------------------------------------------------
    def put(self, ep: ImaginedEpisode) -> bool:
        """Store `ep` atomically; False (and nothing changed) if its id is already stored."""
        key, meta = self._key(ep.id), ep.meta()
        fields = {"meta": json.dumps(meta, allow_nan=False)}
        fields.update({name: codec.to_bytes(getattr(ep, name), name) for name in ARRAY_FIELDS})
        frames = [codec.to_bytes(frame, "frames") for frame in ep.frames]
        args = [ep.id, len(fields), *(x for pair in fields.items() for x in pair), *frames]
        keys = [key, f"{key}:frames", f"{self._ns}seq", *self._indexes_of(meta)]
        stored = bool(self._put(keys=keys, args=args))
        if stored:
            self._trim()
        return stored

    def _trim(self) -> None:
        excess = self._r.zcard(f"{self._ns}idx:all") - self.max_episodes
        if excess > 0:
            for raw in self._r.zrange(f"{self._ns}idx:all", 0, excess - 1):
                self.delete(raw.decode())

    def delete(self, episode_id: str) -> bool:
        """Remove an episode and its index entries; False if it was not stored."""
        meta = self.meta(episode_id)
        if meta is None:
            return False
        key = self._key(episode_id)
        with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key, f"{key}:frames")
            for index in self._indexes_of(meta):
                pipe.zrem(index, episode_id)
            pipe.execute()
        return True

    # ---- reading --------------------------------------------------------------------------
    def ping(self) -> None:
        """Raise redis.RedisError unless the store's Redis answers."""
        self._r.ping()

    def count(self) -> int:
        """Number of stored episodes."""
        return int(self._r.zcard(f"{self._ns}idx:all"))

    def meta(self, episode_id: str) -> dict | None:
        """JSON-able metadata (no arrays; includes steps and frame_shape), or None if unknown."""
        raw = self._r.hget(self._key(episode_id), "meta")
        return None if raw is None else json.loads(raw)

    def metas(self, episode_ids: list[str]) -> list[dict | None]:
        """`meta` of each id, in one round trip."""
        with self._r.pipeline(transaction=False) as pipe:
            for episode_id in episode_ids:
                pipe.hget(self._key(episode_id), "meta")
            return [None if raw is None else json.loads(raw) for raw in pipe.execute()]

    def get(self, episode_id: str) -> ImaginedEpisode | None:
        """The whole episode, or None if unknown."""
        key = self._key(episode_id)
        with self._r.pipeline(transaction=True) as pipe:
            fields, frames = pipe.hgetall(key).lrange(f"{key}:frames", 0, -1).execute()
        if not fields:
            return None
        meta = json.loads(fields[b"meta"])
        arrays = {name: codec.from_bytes(fields[name.encode()], name) for name in ARRAY_FIELDS}
        frames = np.stack([codec.from_bytes(f, "frames") for f in frames])
        return ImaginedEpisode(**{k: meta[k] for k in _META_FIELDS}, frames=frames, **arrays)

    def frame(self, episode_id: str, t: int) -> np.ndarray | None:
        """Frame t, (H, W, 3) uint8, or None if the id is unknown or t is outside 0..T."""
        if t < 0:
            return None
        raw = self._r.lindex(f"{self._key(episode_id)}:frames", t)
        return None if raw is None else codec.from_bytes(raw, "frames")

    def frames(self, episode_id: str) -> np.ndarray | None:
        """All frames, (T+1, H, W, 3) uint8, or None if unknown."""
        raw = self._r.lrange(f"{self._key(episode_id)}:frames", 0, -1)
        return np.stack([codec.from_bytes(f, "frames") for f in raw]) if raw else None

    def rewards(self, episode_id: str) -> dict | None:
        """Per-step p_done, done_step, reward, status and eta (if the worker stored one in extra)."""
        meta_raw, p_raw = self._r.hmget(self._key(episode_id), ["meta", "p_done"])
        if meta_raw is None:
            return None
        meta = json.loads(meta_raw)
        return {"p_done": codec.from_bytes(p_raw, "p_done").tolist(), "done_step": meta["done_step"],
                "reward": meta["reward"], "eta": meta["extra"].get("eta"), "steps": meta["steps"],
                "status": meta["status"]}

    def list(self, status: str | None = None, policy_version: int | None = None, run_id: str | None = None,
             offset: int = 0, limit: int = 50) -> tuple[list[dict], int]:
        """Metadata of matching episodes, newest first, one page; and how many match in all."""
        if offset < 0 or limit < 1:
            raise ValueError(f"offset/limit: need offset >= 0 and limit >= 1, got offset={offset} limit={limit}")
        ids, total = self._page(self._indexes(status, policy_version, run_id), offset, limit)
        with self._r.pipeline(transaction=False) as pipe:  # one round trip for the whole page
            for raw_id in ids:
                pipe.hget(f"{self._ns}id:{raw_id.decode()}", "meta")
            metas = pipe.execute() if ids else []
        # An id trimmed between the two round trips has no meta any more: skip it.
        return [json.loads(m) for m in metas if m is not None], total

    def _page(self, filters: list[str], offset: int, limit: int) -> tuple[list[bytes], int]:
        """Ids of one page (newest first) and the total, read in one transaction."""
        stop = offset + limit - 1
        if len(filters) <= 1:
            key = filters[0] if filters else f"{self._ns}idx:all"
            with self._r.pipeline(transaction=True) as pipe:
                ids, total = pipe.zrevrange(key, offset, stop).zcard(key).execute()
            return ids, int(total)
        tmp = f"{self._ns}tmp:{uuid.uuid4().hex}"  # the intersection of the filters, gone at EXEC's end
        with self._r.pipeline(transaction=True) as pipe:
            pipe.zinterstore(tmp, filters, aggregate="MAX").zrevrange(tmp, offset, stop).delete(tmp)
            total, ids, _ = pipe.execute()
        return ids, int(total)
