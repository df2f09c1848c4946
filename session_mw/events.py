"""Security events: what happened to a session, for an audit log or an alert.

Every event goes to the stdlib logger ``session_mw.security`` (its structured fields in
``extra``, under ``session_mw``) and to each callable the app registered. An event names the
session by a keyed hash of its store key (never the token, never the key itself), so two
events of one session can be correlated without either being usable to take it over.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .clients import address_prefix

security_log = logging.getLogger("session_mw.security")

#: Every kind of event, and the level it is logged at.
KINDS: dict[str, int] = {
    "created": logging.INFO,
    "regenerated": logging.INFO,
    "renewed": logging.INFO,
    "user_changed": logging.INFO,
    "reauthenticated": logging.INFO,
    "invalidated": logging.INFO,
    "cleared": logging.INFO,
    "expired_idle": logging.INFO,
    "expired_absolute": logging.INFO,
    "revoked": logging.WARNING,
    "revoked_all": logging.WARNING,
    "revoked_by_admin": logging.WARNING,
    "session_limit": logging.WARNING,
    "unknown_token": logging.INFO,
    "token_guessing": logging.WARNING,
    "corrupt_record": logging.WARNING,
    "stale_write_refused": logging.WARNING,
    "binding_mismatch": logging.WARNING,
    "csrf_refused": logging.WARNING,
    "store_unavailable": logging.WARNING,
}


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One event. ``session`` is a keyed hash of the session (None when there was none)."""

    kind: str
    session: str | None
    user_id: str | None
    client: str
    at: float
    detail: str = ""

    def as_extra(self) -> dict[str, object]:
        return {
            "event": self.kind,
            "session": self.session,
            "user_id": self.user_id,
            "client": self.client,
            "at": self.at,
            "detail": self.detail,
        }


Listener = Callable[[SecurityEvent], None]


class GuessCounter:
    """Unknown tokens per client address in a sliding window, bounded in memory.

    Per process: with several workers each counts its own share, so the threshold is per
    worker. The oldest addresses are forgotten first when ``capacity`` is reached.
    """

    def __init__(self, threshold: int, window: float, capacity: int = 10_000) -> None:
        self.threshold = threshold
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, client: str, now: float) -> int:
        """Record one unknown token from ``client``; how many it sent within the window (counted
        up to ``threshold + 1``: exactly ``threshold`` once per burst, when it is crossed)."""
        with self._lock:
            times = self._seen.pop(client, None) or []
            cutoff = now - self.window
            times = [t for t in times if t > cutoff]
            times.append(now)
            seen = len(times)
            del times[: max(0, seen - self.threshold)]  # only the last ``threshold`` matter
            self._seen[client] = times
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return seen


class SecurityEvents:
    """Emits events to the logger and the listeners; one per engine."""

    def __init__(
        self,
        secret: str | None,
        listeners: Iterable[Listener] = (),
        *,
        threshold: int = 20,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # without a configured secret, a per-process one: events still correlate within a worker
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"session_mw events\x00" + material).digest()
        self.listeners: list[Listener] = list(listeners)
        self.guesses = GuessCounter(threshold, window)
        self.clock = clock

    def __repr__(self) -> str:
        return f"SecurityEvents(listeners={len(self.listeners)})"

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def ref(self, key: str | None) -> str | None:
        """The keyed hash that names a session in events; None for no session."""
        if key is None:
            return None
        return hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()[:24]

    def emit(
        self, kind: str, key: str | None = None, user_id: str | None = None, client: str = "", detail: str = ""
    ) -> SecurityEvent:
        event = SecurityEvent(kind, self.ref(key), user_id, client, self.clock(), detail)
        level = KINDS.get(kind, logging.INFO)
        if security_log.isEnabledFor(level):
            message = f"session {kind}" + (f": {detail}" if detail else "")
            security_log.log(level, message, extra={"session_mw": event.as_extra()})
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the request
                security_log.exception("a security event listener failed")
        return event

    def unknown_token(self, client: str) -> None:
        """An unknown, expired or revoked token was presented: counted per client address (per
        /64 for IPv6, which a client may spread its guesses over)."""
        self.emit("unknown_token", client=client)
        counted = address_prefix(client, 32, 64) if ":" in client else client
        seen = self.guesses.count(counted or "?", self.clock())
        if seen == self.guesses.threshold:
            self.emit(
                "token_guessing",
                client=client,
                detail=f"{seen} unknown session tokens within {self.guesses.window:g} s",
            )
