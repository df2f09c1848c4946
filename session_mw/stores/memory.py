"""In-process store, for tests and single-process development.

Thread-safe; expired sessions are dropped from a heap as writes go by, so no write ever
scans every session. A retired record (the old key of a grace rotate) stays in the records
and in its user's index until its grace ends; only ``Load`` returns it, ``RevokeAll`` ends it.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import threading
import time
from collections.abc import Callable

from . import base
from .base import Lifetime, Meta, Op, R, Record


class MemoryStore(base.Dispatching):
    """A dict of records with per-record expiry and a per-user index."""

    capabilities = frozenset({base.LOCKS})

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, tuple[dict[str, bytes], Meta, float]] = {}
        self._users: dict[str, set[str]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._locks: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._records)})"

    # -- helpers, called with the lock held ------------------------------------------------

    def _live(
        self, key: str, lifetime: Lifetime, now: float, *, retired: bool = False
    ) -> tuple[dict[str, bytes], Meta] | None:
        """The record if alive (dropped if not); a retired one only when ``retired`` is asked for."""
        entry = self._records.get(key)
        if entry is None:
            return None
        data, meta, expires = entry
        if expires <= now or not lifetime.alive(meta, now):
            self._drop(key)
            return None
        if meta.retired_until and not retired:
            return None
        return data, meta

    def _put(
        self, key: str, data: dict[str, bytes], meta: Meta, lifetime: Lifetime, now: float, until: float = math.inf
    ) -> None:
        expires = min(lifetime.expires_at(meta), until)
        self._records[key] = (data, meta, expires)
        heapq.heappush(self._expiry, (expires, key))
        if meta.user_id is not None:
            self._users.setdefault(meta.user_id, set()).add(key)
        self._collect(now)

    def _drop(self, key: str) -> None:
        entry = self._records.pop(key, None)
        if entry is None or entry[1].user_id is None:
            return
        keys = self._users.get(entry[1].user_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[entry[1].user_id]

    def _collect(self, now: float) -> int:
        dropped = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            entry = self._records.get(key)
            if entry is not None and entry[2] <= now:
                self._drop(key)
                dropped += 1
        return dropped

    # -- the Store protocol ------------------------------------------------------------------

    def execute(self, op: Op[R]) -> R:
        with self._lock:  # one operation at a time: each is atomic
            return super().execute(op)

    def on_load(self, op: base.Load) -> Record | None:
        key, lifetime = op.key, op.lifetime
        now = self._clock()
        entry = self._records.get(key) if op.report is not None else None
        live = self._live(key, lifetime, now, retired=True)
        if live is None:
            if entry is not None and not entry[1].retired_until:
                base.tell(op, lifetime.ended(entry[1], now) or "expired_idle")
            return None
        data, meta = live
        if not meta.retired_until and lifetime.touch_due(meta, now):
            meta = dataclasses.replace(meta, last_seen=now)
            self._put(key, data, meta, lifetime, now)
        return Record(dict(data), meta)

    def on_create(self, op: base.Create) -> None:
        now = self._clock()
        self._drop(op.key)
        self._put(op.key, dict(op.data), _current(op.meta), op.lifetime, now)

    def on_update(self, op: base.Update) -> bool:
        now = self._clock()
        live = self._live(op.key, op.lifetime, now)
        if live is None:
            return False
        data, meta = live
        for name in op.delete:
            data.pop(name, None)
        data.update(op.set)
        remember = meta.remember if op.remember is None else op.remember
        self._put(op.key, data, dataclasses.replace(meta, last_seen=now, remember=remember), op.lifetime, now)
        return True

    def on_rotate(self, op: base.Rotate) -> bool:
        now = self._clock()
        old = self._live(op.old_key, op.lifetime, now)
        if old is None:
            return False
        if op.grace > 0:
            until = now + op.grace
            old_data, old_meta = old
            self._put(
                op.old_key,
                old_data,
                dataclasses.replace(old_meta, retired_until=until, successor=op.key),
                op.lifetime,
                now,
                until,
            )
        else:
            self._drop(op.old_key)
        self._drop(op.key)
        self._put(op.key, dict(op.data), _current(op.meta), op.lifetime, now)
        return True

    def on_delete(self, op: base.Delete) -> None:
        self._drop(op.key)

    def on_revoke_all(self, op: base.RevokeAll) -> list[str]:
        now = self._clock()
        doomed = []
        for key in sorted(self._users.get(op.user_id, ())):
            live = None if key == op.keep else self._live(key, op.lifetime, now, retired=True)
            if live is not None:
                self._drop(key)
                if not live[1].retired_until:  # a retired key ends uncounted: its successor is the session
                    doomed.append(key)
        return doomed

    def on_sessions_of(self, op: base.SessionsOf) -> list[tuple[str, Meta]]:
        now = self._clock()
        out = []
        for key in sorted(self._users.get(op.user_id, ())):
            live = self._live(key, op.lifetime, now)
            if live is not None:
                out.append((key, live[1]))
        out.sort(key=lambda row: row[1].created_at)
        return out

    def on_collect(self, op: base.Collect) -> int:
        return self._collect(self._clock())

    def on_check(self, op: base.Check) -> None:
        return None

    def on_close(self, op: base.Close) -> None:
        return None

    def on_acquire_lock(self, op: base.AcquireLock) -> bool:
        now = self._clock()
        held = self._locks.get(op.key)
        if held is not None and held[1] > now and held[0] != op.owner:
            return False
        self._locks[op.key] = (op.owner, now + op.lease)
        return True

    def on_release_lock(self, op: base.ReleaseLock) -> None:
        held = self._locks.get(op.key)
        if held is not None and held[0] == op.owner:
            del self._locks[op.key]

    def count(self) -> int:
        with self._lock:
            return len(self._records)


def _current(meta: Meta) -> Meta:
    """Retirement is the store's to set (on the old key of a grace rotate), never a new session's."""
    return dataclasses.replace(meta, retired_until=0.0, successor="") if meta.retired_until or meta.successor else meta
