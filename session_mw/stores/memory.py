"""In-process store, for tests and single-process development.

Thread-safe; expired sessions are dropped from a heap as writes go by, so no write ever
scans every session.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections.abc import Callable

from .base import Meta, Record, Touch, Write


class MemoryStore:
    """A dict of records with per-record expiry and a per-user index."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, tuple[Record, float]] = {}
        self._users: dict[str, set[str]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._locks: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._records)})"

    def _get(self, key: str, now: float) -> Record | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self._drop(key)
            return None
        return entry[0]

    def _put(self, key: str, record: Record, ttl: float, now: float) -> None:
        expires = now + ttl
        self._records[key] = (record, expires)
        heapq.heappush(self._expiry, (expires, key))
        self._collect(now)

    def _drop(self, key: str) -> None:
        entry = self._records.pop(key, None)
        if entry is not None:
            self._unindex(entry[0].meta.user_id, key)

    def _unindex(self, user: str | None, key: str) -> None:
        if user is None:
            return
        keys = self._users.get(user)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[user]

    def _collect(self, now: float) -> int:
        dropped = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            entry = self._records.get(key)
            if entry is not None and entry[1] <= now:
                self._drop(key)
                dropped += 1
        return dropped

    def load(self, key: str, touch: Touch) -> Record | None:
        with self._lock:
            now = self._clock()
            record = self._get(key, now)
            if record is None:
                return None
            result = Record(dict(record.data), record.meta)
            if touch.due(record.meta):
                record.meta = dataclasses.replace(record.meta, last_seen=touch.now)
                self._put(key, record, touch.ttl_for(record.meta), now)
            return result

    def write(self, op: Write) -> bool:
        with self._lock:
            now = self._clock()
            if op.mode == "update":
                record = self._get(op.key, now)
                if record is None:
                    return False
                data = record.data
                for name in op.delete:
                    data.pop(name, None)
                data.update(op.set)
                self._unindex(record.meta.user_id, op.key)
                record.meta = op.meta
            else:
                self._drop(op.key)  # a create replaces whatever was there, index entry included
                if op.old_key is not None:
                    self._drop(op.old_key)
                record = Record(dict(op.set), op.meta)
            self._put(op.key, record, op.ttl, now)
            if op.meta.user_id is not None:
                self._users.setdefault(op.meta.user_id, set()).add(op.key)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        with self._lock:
            now = self._clock()
            out = []
            for key in list(self._users.get(user_id, ())):
                record = self._get(key, now)
                if record is not None:
                    out.append((key, record.meta))
            return out

    def gc(self, now: float) -> int:
        with self._lock:
            return self._collect(self._clock())

    def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        with self._lock:
            now = self._clock()
            held = self._locks.get(key)
            if held is not None and held[1] > now and held[0] != owner:
                return False
            self._locks[key] = (owner, now + lease)
            return True

    def release_lock(self, key: str, owner: str) -> None:
        with self._lock:
            held = self._locks.get(key)
            if held is not None and held[0] == owner:
                del self._locks[key]

    def close(self) -> None:
        pass

    def count(self) -> int:
        with self._lock:
            return len(self._records)
