"""A user's sessions: list them, revoke one, revoke all ("log out everywhere").

The rules (which sessions are live, which one is current) are pure functions here; the sync
and async managers only add the store calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .engine import Incoming
from .session import Session
from .stores.base import AsyncStore, Meta, Store, Touch


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as shown on an "active sessions" page.

    ``digest`` is the store key (a digest of the token, never the token itself): pass it to
    ``revoke`` to end that session.
    """

    digest: str
    user_id: str | None
    created_at: datetime
    last_seen: datetime
    user_agent: str
    remember: bool
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.digest[:16],
            "created_at": self.created_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "user_agent": self.user_agent,
            "current": self.current,
        }


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def live_infos(rows: list[tuple[str, Meta]], touch: Touch, current_key: str | None) -> list[SessionInfo]:
    """The rows still alive by the idle and absolute rules, newest activity first."""
    infos = [
        SessionInfo(key, m.user_id, _utc(m.created_at), _utc(m.last_seen), m.user_agent, m.remember, key == current_key)
        for key, m in rows
        if touch.alive(m)
    ]
    infos.sort(key=lambda i: i.last_seen, reverse=True)
    return infos


class _Bound:
    """What every manager knows: the clock, and the request's session and what it came with."""

    def __init__(self, touch: Any, session: Session | None = None, incoming: Incoming | None = None) -> None:
        self._touch = touch
        self._session = session
        self._incoming = incoming

    @property
    def _current_key(self) -> str | None:
        if self._session is None or self._incoming is None:
            return None
        self._session._use()  # a lazy session must be loaded to know whether it is live
        return self._incoming.key if self._incoming.live else None

    def _user(self, user_id: str | None) -> str | None:
        if user_id is not None:
            return user_id
        return self._session.user_id if self._session is not None else None

    def _end_current(self, digests: list[str]) -> None:
        if self._session is not None and self._current_key in digests:
            self._session.invalidate()


class SessionManager(_Bound):
    """Sync per-user operations; ``user_id=None`` means the current session's user."""

    def __init__(
        self, store: Store, touch: Any, session: Session | None = None, incoming: Incoming | None = None
    ) -> None:
        super().__init__(touch, session, incoming)
        self.store = store

    def list(self, user_id: str | None = None) -> list[SessionInfo]:
        user = self._user(user_id)
        return [] if user is None else live_infos(self.store.user_sessions(user), self._touch(), self._current_key)

    def revoke(self, digest: str) -> None:
        self.store.delete(digest)
        self._end_current([digest])

    def revoke_all(self, user_id: str | None = None, *, except_current: bool = False) -> int:
        doomed = [i.digest for i in self.list(user_id) if not (except_current and i.current)]
        for digest in doomed:
            self.store.delete(digest)
        self._end_current(doomed)
        return len(doomed)


class AsyncSessionManager(_Bound):
    """The asyncio face of ``SessionManager``."""

    def __init__(
        self, store: AsyncStore, touch: Any, session: Session | None = None, incoming: Incoming | None = None
    ) -> None:
        super().__init__(touch, session, incoming)
        self.store = store

    async def list(self, user_id: str | None = None) -> list[SessionInfo]:
        user = self._user(user_id)
        return (
            [] if user is None else live_infos(await self.store.user_sessions(user), self._touch(), self._current_key)
        )

    async def revoke(self, digest: str) -> None:
        await self.store.delete(digest)
        self._end_current([digest])

    async def revoke_all(self, user_id: str | None = None, *, except_current: bool = False) -> int:
        doomed = [i.digest for i in await self.list(user_id) if not (except_current and i.current)]
        for digest in doomed:
            await self.store.delete(digest)
        self._end_current(doomed)
        return len(doomed)
