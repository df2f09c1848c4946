"""The store contract: what every backend must do, and the record it moves.

A store moves bytes and metadata; it never decides policy. The engine tells it when a
touch is due and which keys changed. Both faces (``Store`` and ``AsyncStore``) use the
same method names and the same ``Record``, so a session written by a sync app is read by
an async one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Meta:
    """Server-side facts about a session; the authority for every expiry decision."""

    created_at: float
    last_seen: float
    absolute_deadline: float
    user_id: str | None = None
    user_agent: str = ""
    remember: bool = False


@dataclass(slots=True)
class Record:
    """A stored session: each app key encoded on its own, plus ``Meta``."""

    data: dict[str, bytes]
    meta: Meta


@dataclass(frozen=True, slots=True)
class Touch:
    """How ``load`` refreshes the idle expiry in the same round trip.

    The store sets ``last_seen = now`` and the expiry to ``ttl_for(meta)`` only when
    ``touch_due(meta)``; a session already expired is returned untouched.
    """

    now: float
    interval: float
    idle_timeout: float

    def alive(self, meta: Meta) -> bool:
        return meta.last_seen + self.idle_timeout > self.now and meta.absolute_deadline > self.now

    def due(self, meta: Meta) -> bool:
        return self.alive(meta) and meta.last_seen + self.interval <= self.now

    def ttl_for(self, meta: Meta) -> float:
        return min(self.idle_timeout, meta.absolute_deadline - self.now)


@dataclass(frozen=True, slots=True)
class Write:
    """One atomic change to the store.

    ``mode`` is ``"create"`` (a new session), ``"update"`` (applied only if ``key`` still
    exists: a logout in another tab is never undone) or ``"rotate"`` (``old_key`` is deleted
    and ``key`` created with the full data, atomically). The per-user index follows
    ``meta.user_id``; ``previous_user`` is the user the session belonged to before.
    """

    mode: str
    key: str
    meta: Meta
    ttl: float
    set: Mapping[str, bytes] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    old_key: str | None = None
    previous_user: str | None = None


@runtime_checkable
class Store(Protocol):
    """A synchronous store. Every method raises ``StoreUnavailable`` when the backend is down."""

    def load(self, key: str, touch: Touch) -> Record | None:
        """Return the record under ``key`` (touching it if due) or None; one round trip."""

    def write(self, op: Write) -> bool:
        """Apply ``op`` atomically; False when an ``update`` found the session gone."""

    def delete(self, key: str) -> None:
        """Remove the session and its entry in the per-user index."""

    def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        """The sessions indexed under ``user_id``; entries whose session is gone are dropped."""

    def gc(self, now: float) -> int:
        """Remove expired sessions the backend does not expire by itself; return how many."""

    def close(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asyncio face of ``Store``: the same methods, awaited."""

    async def load(self, key: str, touch: Touch) -> Record | None: ...

    async def write(self, op: Write) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]: ...

    async def gc(self, now: float) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class LockingStore(Protocol):
    """A store that can serialize the requests of one session (``locking=True``).

    A lock is a lease: it ends by itself after ``lease`` seconds, so a crashed worker never
    blocks a session for longer than that.
    """

    def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        """Take the lock of session ``key`` for ``owner`` unless someone else holds it."""

    def release_lock(self, key: str, owner: str) -> None:
        """Give the lock back, only if ``owner`` still holds it."""


@runtime_checkable
class AsyncLockingStore(Protocol):
    """The asyncio face of ``LockingStore``."""

    async def acquire_lock(self, key: str, owner: str, lease: float) -> bool: ...

    async def release_lock(self, key: str, owner: str) -> None: ...
