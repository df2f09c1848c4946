"""The sans-IO core: every session rule, no I/O and no framework.

An adapter (ASGI, WSGI, Flask) calls, per request:

1. ``begin(cookie_header)``: which session, if any, to load;
2. ``open(incoming, record, user_agent)``: the ``Session`` the app sees;
3. ``finish(incoming, session, status)``: an ``Outcome`` naming what to write and delete;
4. ``outcome.headers(applied, ...)``: the Set-Cookie / Vary / Cache-Control to add.

Only steps 2-3 of the adapter touch the store, and only as the outcome says.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .config import SessionConfig
from .cookies import CookieRules
from .errors import SessionError
from .serializers import Serializer, default_serializer
from .session import Session
from .stores.base import Meta, Record, Touch, Write
from .tokens import Digester, new_token

_T = TypeVar("_T")
security_log = logging.getLogger("session_mw.security")
MAX_USER_AGENT = 256


@dataclass(slots=True)
class Incoming:
    """What the request brought: a candidate token (never printed) and its store key."""

    token: str | None = field(default=None, repr=False)
    key: str | None = None
    presented: bool = False
    meta: Meta | None = None
    dead_key: str | None = None

    @property
    def live(self) -> bool:
        return self.meta is not None


#: What a request without any Cookie header brings. Shared: nothing mutates an ``Incoming``
#: that carries no key (only ``open`` with a stored record does).
NO_COOKIE = Incoming()


@dataclass(slots=True)
class Outcome:
    """What the engine decided at the end of a request."""

    write: Write | None = None
    delete: str | None = None
    token: str | None = field(default=None, repr=False)
    max_age: int | None = None
    expire_cookie: bool = False
    vary: bool = False
    rules: CookieRules | None = field(default=None, repr=False)

    def headers(self, applied: bool = True, existing: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """Headers to add to a response that already has ``existing``.

        ``applied`` is what the store said of ``write`` (False: the session was gone).
        """
        out: list[tuple[str, str]] = []
        if self.rules is None:
            return out
        vary: list[str] = []
        has_cache_control = False
        for name, value in existing:
            lowered = name.lower()
            if lowered == "vary":
                vary.append(value)
            elif lowered == "cache-control":
                has_cache_control = True
        if self.token is not None and applied:
            out.append(("Set-Cookie", self.rules.set_cookie(self.token, self.max_age)))
        elif self.expire_cookie or (self.write is not None and not applied):
            out.append(("Set-Cookie", self.rules.expire_cookie()))
        if self.vary and not any("cookie" in v.lower() or "*" in v for v in vary):
            out.append(("Vary", "Cookie"))
        if out and out[0][0] == "Set-Cookie" and not has_cache_control:
            out.append(("Cache-Control", "no-store"))
        return out


NOTHING = Outcome()
UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"
BUSY_BODY = b"Session busy with another request; please retry shortly.\n"


@dataclass(frozen=True, slots=True)
class LockPlan:
    """How a door takes the session lock: try, sleep ``waits[i]``, try again, then give up."""

    key: str
    owner: str = field(repr=False)
    lease: float
    waits: tuple[float, ...]


def unavailable_headers(config: SessionConfig, body: bytes = UNAVAILABLE_BODY) -> list[tuple[str, str]]:
    """Headers of the 503 both doors send when the store cannot be reached (or the session stays locked)."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Retry-After", str(config.retry_after)),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ]


def _backoff(total: float) -> tuple[float, ...]:
    """Sleeps of 5 ms doubling to 100 ms, adding up to ``total`` seconds."""
    waits: list[float] = []
    delay, spent = 0.005, 0.0
    while spent < total:
        step = min(delay, total - spent)
        waits.append(step)
        spent += step
        delay = min(delay * 2, 0.1)
    return tuple(waits)


class Engine:
    """The session rules of one ``SessionConfig``; shared by every adapter."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        clock: Callable[[], float] = time.time,
        serializer: Serializer | None = None,
        session_class: type[Session] = Session,
    ) -> None:
        self.config = config
        self.clock = clock
        self.serializer = serializer or default_serializer()
        self.session_class = session_class
        self.cookies = CookieRules(config)
        self.digest = Digester(config.digest_key)
        self._touch_interval = float(config.effective_touch_interval)
        self._idle = float(config.idle_timeout)
        self._absolute = float(config.absolute_timeout)
        self._lock_waits = _backoff(config.lock_timeout)
        self._lock_lease = max(30.0, 3 * config.lock_timeout)

    def __repr__(self) -> str:
        return f"Engine(cookie={self.cookies.name!r}, store_url=<hidden>)"

    # -- request in ----------------------------------------------------------------

    def begin(self, cookie_header: str | None) -> Incoming:
        if not cookie_header:
            return NO_COOKIE
        token, presented = self.cookies.read(cookie_header)
        if token is None:
            if presented:
                security_log.info("malformed, oversized or duplicated session cookie ignored")
            return Incoming(presented=presented)
        return Incoming(token=token, key=self.digest(token), presented=True)

    def lock_plan(self, incoming: Incoming) -> LockPlan | None:
        """The lock to hold from load to save, when ``locking`` is on and there is a session to lock."""
        if not self.config.locking or incoming.key is None:
            return None
        return LockPlan(incoming.key, secrets.token_hex(16), self._lock_lease, self._lock_waits)

    def touch(self) -> Touch:
        return Touch(self.clock(), self._touch_interval, self._idle)

    def open(self, incoming: Incoming, record: Record | None, user_agent: str = "") -> Session:
        """The session the app sees, from what the store returned (None: no live session)."""
        now = self.clock()
        session = self.session_class(created_at=now, last_seen=now, user_agent=user_agent[:MAX_USER_AGENT])
        if incoming.presented:
            self._fill(session, incoming, record)
        return session

    def lazy(self, incoming: Incoming, user_agent: str, load: Callable[[str, Touch], Record | None]) -> Session:
        """A session that calls ``load`` only when the app first uses it (sync doors)."""
        now = self.clock()
        session = self.session_class(created_at=now, last_seen=now, user_agent=user_agent[:MAX_USER_AGENT])
        key = incoming.key
        if key is not None:
            session.defer(lambda s: self._fill(s, incoming, load(key, self.touch())))
        return session

    def _fill(self, session: Session, incoming: Incoming, record: Record | None) -> None:
        now = self.clock()
        if record is not None:
            meta = record.meta
            if meta.last_seen + self._idle <= now or meta.absolute_deadline <= now:
                incoming.dead_key = incoming.key
                record = None
            else:
                try:
                    loads = self.serializer.loads
                    data = {k: loads(v) for k, v in record.data.items()}
                except ValueError:
                    security_log.error("stored session could not be decoded; starting a new one")
                    record = None
        if record is None:
            if incoming.key is not None and incoming.dead_key is None:
                security_log.info("unknown or expired session token presented")
            return
        incoming.meta = meta
        touched = meta.last_seen + self._touch_interval <= now
        session._fill(
            data, record.data, meta.created_at, now if touched else meta.last_seen, meta.user_id, meta.remember
        )

    # -- response out --------------------------------------------------------------

    def finish(self, incoming: Incoming, session: Session | None, status: int = 200) -> Outcome:
        """Decide what to write, delete and send, after the app has run.

        Returns ``NOTHING`` (whose ``rules`` is None) when there is nothing to do at all, so
        the doors can skip looking at the response headers.
        """
        if session is not None and not (session.accessed or incoming.presented):
            return NOTHING  # the app never used the session and the browser sent none
        out = self._decide(incoming, session, status)
        if out.write is None and out.delete is None and not (out.expire_cookie or out.vary):
            return NOTHING
        return out

    def _decide(self, incoming: Incoming, session: Session | None, status: int) -> Outcome:
        if session is None:
            return NOTHING if not incoming.presented else Outcome(expire_cookie=True, rules=self.cookies)
        if session.pending:  # never used, never loaded: nothing to say about it
            return NOTHING
        out = Outcome(vary=session.accessed, rules=self.cookies, delete=incoming.dead_key)
        if status >= 500:
            return out
        if session.invalidated or (incoming.live and not session.has_content):
            if incoming.live:
                out.delete = incoming.key
            out.expire_cookie = incoming.presented
            return out
        if not incoming.live:
            out.expire_cookie = incoming.presented
            if session.has_content:
                self._create(out, session, self._encode(session.encoded))
            return out
        assert incoming.meta is not None and incoming.key is not None
        if session.regenerate_requested:
            self._rotate(out, incoming, session)
            return out
        if not (session.accessed or session.meta_changed):
            return out
        changed, removed = self._encode(session.changes)
        if not (changed or removed or session.meta_changed):
            return out
        now = self.clock()
        meta = self._meta(session, incoming.meta, now)
        out.write = Write(
            "update",
            incoming.key,
            meta,
            self._ttl(meta, now),
            set=changed,
            delete=removed,
            previous_user=incoming.meta.user_id,
        )
        if meta.remember != incoming.meta.remember:
            out.token = incoming.token
            out.max_age = self._max_age(meta, now)
        return out

    # -- helpers -------------------------------------------------------------------

    def _create(self, out: Outcome, session: Session, data: dict[str, bytes]) -> None:
        now = self.clock()
        meta = Meta(
            created_at=now,
            last_seen=now,
            absolute_deadline=now + self._absolute,
            user_id=session._user_id,
            user_agent=session.user_agent,
            remember=session.remember,
        )
        token = new_token(self.config.token_bytes)
        out.write = Write("create", self.digest(token), meta, self._ttl(meta, now), set=data)
        out.token = token
        out.max_age = self._max_age(meta, now)
        out.expire_cookie = False

    def _rotate(self, out: Outcome, incoming: Incoming, session: Session) -> None:
        assert incoming.meta is not None
        old = incoming.meta
        now = self.clock()
        if session._user_id != old.user_id:
            created, deadline = now, now + self._absolute  # a login starts a new lifetime
        else:
            created, deadline = old.created_at, old.absolute_deadline
        meta = Meta(created, now, deadline, session._user_id, session.user_agent or old.user_agent, session.remember)
        token = new_token(self.config.token_bytes)
        out.write = Write(
            "rotate",
            self.digest(token),
            meta,
            self._ttl(meta, now),
            set=self._encode(session.encoded),
            old_key=incoming.key,
            previous_user=old.user_id,
        )
        out.token = token
        out.max_age = self._max_age(meta, now)

    def _meta(self, session: Session, old: Meta, now: float) -> Meta:
        return Meta(old.created_at, now, old.absolute_deadline, session._user_id, old.user_agent, session.remember)

    def _ttl(self, meta: Meta, now: float) -> float:
        return min(self._idle, meta.absolute_deadline - now)

    @staticmethod
    def _max_age(meta: Meta, now: float) -> int | None:
        return max(0, int(meta.absolute_deadline - now)) if meta.remember else None

    def _encode(self, encode: Callable[[Callable[[Any], bytes]], _T]) -> _T:
        """Run one of the session's encoders; a value JSON cannot hold is the app's error, named."""
        try:
            return encode(self.serializer.dumps)
        except (TypeError, ValueError) as exc:
            raise SessionError(f"a session value cannot be stored as JSON: {exc}") from None
