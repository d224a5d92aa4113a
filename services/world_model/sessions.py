"""Server-side world-model sessions: each holds its history frames (the memory bank), proprio
and instruction, expires after an idle TTL, and the store holds at most `max_sessions`."""
from __future__ import annotations

import dataclasses
import secrets
import threading
import time

import numpy as np

from worldenv.services.common.errors import FailedPrecondition, NotFound, ResourceExhausted


@dataclasses.dataclass
class Session:
    history: np.ndarray        # (T, H, W, 3) uint8, oldest first
    proprio: np.ndarray        # (P,) float32
    instruction: str
    steps: int = 0             # chunks taken
    last_used: float = 0.0     # time.monotonic()
    busy: bool = False         # a Step is in flight


class SessionStore:
    """Thread-safe map of session id -> Session with TTL expiry and a capacity limit."""

    def __init__(self, ttl_s: float, max_sessions: int, clock=time.monotonic):
        self.ttl_s, self.max_sessions, self._clock = ttl_s, max_sessions, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def sweep(self) -> int:
        """Drop sessions idle longer than the TTL; returns how many."""
        now = self._clock()
        with self._lock:
            dead = [k for k, s in self._sessions.items() if not s.busy and now - s.last_used > self.ttl_s]
            for k in dead:
                del self._sessions[k]
        return len(dead)

    def open(self, history: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> list[str]:
        """history (B, T, H, W, 3), proprio (B, P) -> B new session ids."""
        self.sweep()
        batch = len(history)
        with self._lock:
            if len(self._sessions) + batch > self.max_sessions:
                raise ResourceExhausted(f"max_sessions: {len(self._sessions)} sessions open, {batch} more requested, "
                                        f"limit {self.max_sessions}; close sessions or wait for the idle TTL")
            now, ids = self._clock(), []
            for i in range(batch):
                sid = secrets.token_hex(12)
                self._sessions[sid] = Session(history[i].copy(), proprio[i].copy(), instructions[i], last_used=now)
                ids.append(sid)
        return ids

    def acquire(self, ids: list[str]) -> list[Session]:
        """Mark sessions busy for one Step; NOT_FOUND for unknown or expired ids."""
        now = self._clock()
        with self._lock:
            sessions = []
            for i, sid in enumerate(ids):
                session = self._sessions.get(sid)
                if session is not None and not session.busy and now - session.last_used > self.ttl_s:
                    del self._sessions[sid]
                    session = None
                if session is None:
                    raise NotFound(f"session_ids[{i}]: unknown or expired session {sid!r}")
                if session.busy:
                    raise FailedPrecondition(f"session_ids[{i}]: session {sid!r} already has a Step in flight")
                sessions.append(session)
            for session in sessions:
                session.busy = True
        return sessions

    def release(self, sessions: list[Session], frames: np.ndarray | None = None, proprio: np.ndarray | None = None) -> None:
        """End a Step: append the predicted frame to each memory bank (when given) and free them."""
        now = self._clock()
        with self._lock:
            for i, session in enumerate(sessions):
                if frames is not None:
                    session.history = np.concatenate([session.history[1:], frames[i:i + 1]])
                    session.proprio = np.array(proprio[i], np.float32)
                    session.steps += 1
                session.busy = False
                session.last_used = now

    def close(self, ids: list[str]) -> int:
        with self._lock:
            return sum(self._sessions.pop(sid, None) is not None for sid in ids)
