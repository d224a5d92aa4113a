"""Server-side sessions of the world model and the reflector: each holds one episode's opaque
model state (what the model keeps is the model's business), expires after an idle TTL, and the
store holds at most `max_sessions`."""
from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
import time
from typing import Any

from worldenv.services.common import memory
from worldenv.services.common.errors import FailedPrecondition, NotFound, ResourceExhausted

SESSION_ID_BYTES = 26  # a session id in an Open reply: 24 hex characters and its tag and length


@dataclasses.dataclass
class Session:
    state: Any                 # the model's state for this episode, opaque here
    steps: int = 0             # calls that advanced it (world model: chunks taken; reflector: frames added)
    last_used: float = 0.0     # time.monotonic()
    busy: bool = False         # a call is in flight


class SessionStore:
    """Thread-safe map of session id -> Session with TTL expiry and a capacity limit."""

    def __init__(self, ttl_s: float, max_sessions: int, clock=time.monotonic):
        self.ttl_s, self.max_sessions, self._clock = ttl_s, max_sessions, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._freed = 0  # sessions dropped (expired or closed) since the last trim
        self.trims = 0   # trims done

    def __len__(self) -> int:
        return len(self._sessions)

    def sweep(self) -> int:
        """Drop sessions idle longer than the TTL; returns how many."""
        now = self._clock()
        with self._lock:
            dead = [k for k, s in self._sessions.items() if not s.busy and now - s.last_used > self.ttl_s]
            for k in dead:
                del self._sessions[k]
            self._freed += len(dead)
        return len(dead)

    async def sweep_forever(self) -> None:
        """Sweep a few times per TTL until cancelled; after sessions were freed, hand their
        memory back to the system (off the event loop: trimming a large heap takes a while)."""
        while True:
            await asyncio.sleep(max(0.05, min(self.ttl_s / 4, 30.0)))
            self.sweep()
            with self._lock:
                freed, self._freed = self._freed, 0
            if freed:
                await asyncio.to_thread(self.trim)

    def trim(self) -> bool:
        """Return the heap's free memory to the system; True if any was returned."""
        returned = memory.trim()
        self.trims += 1
        return returned

    def held(self) -> int:
        """Items held over all open sessions: each session's first plus one per call that advanced
        it (the reflector's frames)."""
        with self._lock:
            return sum(s.steps + 1 for s in self._sessions.values())

    def open(self, states: list[Any]) -> list[str]:
        """B model states -> B new session ids."""
        self.sweep()
        batch = len(states)
        with self._lock:
            if len(self._sessions) + batch > self.max_sessions:
                raise ResourceExhausted(f"max_sessions: {len(self._sessions)} sessions open, {batch} more requested, "
                                        f"limit {self.max_sessions}; close sessions or wait for the idle TTL")
            now, ids = self._clock(), []
            for state in states:
                sid = secrets.token_hex(12)
                self._sessions[sid] = Session(state, last_used=now)
                ids.append(sid)
        return ids

    def acquire(self, ids: list[str]) -> list[Session]:
        """Mark sessions busy for one call (a Step, an Observe); NOT_FOUND for unknown or expired ids."""
        now = self._clock()
        with self._lock:
            sessions = []
            for i, sid in enumerate(ids):
                session = self._sessions.get(sid)
                if session is not None and not session.busy and now - session.last_used > self.ttl_s:
                    del self._sessions[sid]
                    self._freed += 1
                    session = None
                if session is None:
                    raise NotFound(f"session_ids[{i}]: unknown or expired session {sid!r}")
                if session.busy:
                    raise FailedPrecondition(f"session_ids[{i}]: session {sid!r} already has a call in flight")
                sessions.append(session)
            for session in sessions:
                session.busy = True
        return sessions

    def release(self, sessions: list[Session], states: list[Any] | None = None) -> None:
        """End a call: keep each session's next state (when the call succeeded) and free them."""
        now = self._clock()
        with self._lock:
            for i, session in enumerate(sessions):
                if states is not None:
                    session.state = states[i]
                    session.steps += 1
                session.busy = False
                session.last_used = now

    def close(self, ids: list[str]) -> int:
        with self._lock:
            closed = sum(self._sessions.pop(sid, None) is not None for sid in ids)
            self._freed += closed
        return closed
