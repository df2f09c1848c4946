"""A user's sessions: list them, revoke one, revoke all ("log out everywhere").

The rules are plans here, run by a driver (``drivers.SessionManager`` for blocking apps,
``drivers.AsyncSessionManager`` for asyncio ones). A manager bound to a request acts on the
current user's sessions only; the ops CLI builds one bound to no request, for any user.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import SessionError
from .events import SecurityEvents
from .stepping import Plan
from .stores.base import Delete, Lifetime, Meta, RevokeAll, SessionsOf, public_id

if TYPE_CHECKING:
    from .engine import Exchange


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as shown on an "active sessions" page.

    ``id`` is random, stored with the session: it reveals nothing of the token or the store
    key. Pass it to ``revoke`` to end that session.
    """

    id: str
    user_id: str | None
    created_at: datetime
    last_seen: datetime
    user_agent: str
    remember: bool
    current: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "user_agent": self.user_agent,
            "current": self.current,
        }


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class Sessions:
    """The plans behind a session manager, bound to a request's ``Exchange`` (or to none: the CLI)."""

    def __init__(
        self, lifetime: Lifetime, exchange: Exchange | None = None, events: SecurityEvents | None = None
    ) -> None:
        self._lifetime = lifetime
        self._exchange = exchange
        self._events = events if events is not None or exchange is None else exchange.engine.events

    def _report(self, kind: str, keys: list[str], user: str, detail: str = "") -> None:
        """A revocation by the user (through a request) or by an operator (no request: the CLI, an admin)."""
        events = self._events
        if events is None:
            return
        client = self._exchange.client if self._exchange is not None else ""
        if self._exchange is None:
            kind, detail = "revoked_by_admin", detail or kind
        for key in keys:
            events.emit(kind, key, user, client, detail)

    def _user(self, user_id: str | None) -> str | None:
        exchange = self._exchange
        if exchange is None:
            if user_id is None:
                raise SessionError("a session manager bound to no request needs a user_id")
            return user_id
        current = exchange.session.user_id  # loads a lazy session
        if user_id is not None and user_id != current:
            raise SessionError("a request's session manager acts only on the current user's sessions")
        return current

    def _current_key(self) -> str | None:
        exchange = self._exchange
        return exchange.key if exchange is not None and exchange.live else None

    def _rows(self, user: str) -> Plan[list[tuple[str, Meta]]]:
        rows: list[tuple[str, Meta]] = yield SessionsOf(user, self._lifetime)
        return rows

    def listing(self, user_id: str | None = None) -> Plan[list[SessionInfo]]:
        """The user's live sessions, the most recently active first."""
        user = self._user(user_id)
        if user is None:
            return []
        current = self._current_key()
        infos = [
            SessionInfo(
                public_id(key, m),
                m.user_id,
                _utc(m.created_at),
                _utc(m.last_seen),
                m.user_agent,
                m.remember,
                key == current,
            )
            for key, m in (yield from self._rows(user))
        ]
        infos.sort(key=lambda i: i.last_seen, reverse=True)
        return infos

    def revoking(self, session_id: str) -> Plan[bool]:
        """End the current user's session whose id is ``session_id``; False when none is."""
        user = self._user(None)
        if user is None or not isinstance(session_id, str) or not session_id.isascii():
            return False  # our ids are hex: anything else is no id of ours
        for key, meta in (yield from self._rows(user)):
            if hmac.compare_digest(public_id(key, meta).encode(), session_id.encode()):
                yield Delete(key, user)
                self._report("revoked", [key], user)
                self._end_current([key])
                return True
        return False

    def revoking_all(self, user_id: str | None = None, except_current: bool = False) -> Plan[int]:
        """End every live session of the user (this one too, unless ``except_current``)."""
        user = self._user(user_id)
        if user is None:
            return 0
        current = self._current_key()
        doomed: list[str] = yield RevokeAll(user, self._lifetime, current if except_current else None)
        self._report("revoked_all", doomed, user)
        self._end_current(doomed)
        return len(doomed)

    def _end_current(self, keys: list[str]) -> None:
        current = self._current_key()
        if current is not None and current in keys:
            assert self._exchange is not None
            self._exchange.session.invalidate()


__all__ = ["SessionInfo", "Sessions", "public_id"]
