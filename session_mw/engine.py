"""The sans-IO core: every session rule, no I/O and no framework.

One ``Exchange`` holds a request's session state, and every transition is in it. A door
(ASGI, WSGI, Flask) does, per request:

1. ``exchange = engine.exchange(cookie_header, user_agent, path)``;
2. when ``exchange.needs_load``: ``answer = driver.run(exchange.opening())``, the lock and
   the load; an ``Answer`` (503) replaces the app's response;
3. runs the app with ``exchange.session``;
4. at the response start: ``driver.run(exchange.closing(status, headers))``, which writes
   what the app changed and returns the headers to send, or an ``Answer`` to send instead;
5. finally ``driver.run(exchange.releasing())`` (the lock, when one is held).

The plans yield typed store operations (and ``Pause``); the drivers carry them to the store.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import SessionConfig
from .cookies import CookieRules
from .errors import SessionBusy, SessionError, SessionTooLarge, StoreUnavailable, ValueNotStorable
from .serializers import Serializer, default_serializer
from .session import Session
from .stepping import Plan
from .stores.base import (
    MAX_USER_AGENT,
    MAX_USER_ID,
    AcquireLock,
    Create,
    Delete,
    Lifetime,
    Load,
    Meta,
    Op,
    Record,
    ReleaseLock,
    Rotate,
    Update,
    public_id,
)
from .tokens import Digester, new_token

security_log = logging.getLogger("session_mw.security")
log = logging.getLogger("session_mw")
Headers = list[tuple[str, str]]

UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"
BUSY_BODY = b"Session busy with another request; please retry shortly.\n"
UNSAVED_BODY = b"The session could not be saved.\n"


@dataclass(frozen=True, slots=True)
class Pause:
    """Not a store operation: the driver sleeps (between two tries of a lock)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the middleware sends instead of the app's; the same in every door."""

    status: int
    reason: str
    body: bytes
    headers: Headers

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}"


def _answer(config: SessionConfig, status: int, reason: str, body: bytes) -> Answer:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    if status == 503:
        headers.append(("Retry-After", str(config.retry_after)))
    headers.append(("Content-Length", str(len(body))))
    return Answer(status, reason, body, headers)


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
    """The session rules of one ``SessionConfig``; shared by every door and request."""

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
        self.expire_cookie = self.cookies.expire_cookie()  # the same for every response: built once
        self.digest = Digester(config.digest_key)
        self.lifetime = Lifetime(
            float(config.idle_timeout), float(config.absolute_timeout), float(config.effective_touch_interval)
        )
        self.lock_waits = _backoff(config.lock_timeout)
        self.lock_lease = max(30.0, 3 * config.lock_timeout)
        self.unavailable = _answer(config, 503, "Service Unavailable", UNAVAILABLE_BODY)
        self.busy = _answer(config, 503, "Service Unavailable", BUSY_BODY)
        self.unsaved = _answer(config, 500, "Internal Server Error", UNSAVED_BODY)

    def __repr__(self) -> str:
        return f"Engine(cookie={self.cookies.name!r}, store_url=<hidden>)"

    def exchange(self, cookie_header: str | None, user_agent: str = "", path: str | None = None) -> Exchange:
        """The session state of one request, from its Cookie header (lines joined by ``;`` or ``,``)
        and, when ``cookie_path`` is not ``/``, the request's full path (outside it, a cookie of our
        name was set for another path: it may be read, never expired)."""
        if not cookie_header:
            return Exchange(self, (), user_agent)
        tokens, ignored = self.cookies.read(cookie_header)
        if ignored:
            security_log.info("a malformed or oversized cookie under the session cookie's name was ignored")
        return Exchange(self, tokens, user_agent, path is None or self.cookies.in_scope(path))

    def answer_for(self, exc: BaseException, *, report: bool = True) -> Answer | None:
        """The answer to a session failure: 503 for the store down or the session busy; None for others.

        ``report``: log it (once: a failure already logged where it was caught is not logged again).
        """
        if isinstance(exc, StoreUnavailable):
            if report:
                log.warning("session store unavailable: %s", exc)
            return self.unavailable
        if isinstance(exc, SessionBusy):
            return self.busy
        return None


class Exchange:
    """One request's session: what came in, what the app did, and what goes out."""

    __slots__ = (
        "_candidates",
        "_held",
        "_owner",
        "_token",
        "corrupt",
        "engine",
        "events",
        "failure",
        "key",
        "meta",
        "presented",
        "session",
        "user_agent",
    )

    def __init__(self, engine: Engine, tokens: tuple[str, ...], user_agent: str, ours: bool = True) -> None:
        self.engine = engine
        # one token: the session's; several (cookies of our name for other paths or domains):
        # ``opening`` finds ours among them
        self._token = tokens[0] if len(tokens) == 1 else None
        self._candidates = tokens if len(tokens) > 1 else ()
        self.key = engine.digest(self._token) if self._token is not None else None
        #: the browser sent a token under our name: a dead one is expired by a response that
        #: used the session (never a value we could not have set)
        self.presented = bool(tokens) and ours
        self.user_agent = user_agent[:MAX_USER_AGENT]
        self.meta: Meta | None = None
        self.corrupt = False
        self.failure: SessionError | None = None
        self.events: list[str] = []
        self._owner: str | None = None
        self._held = False
        now = engine.clock()
        self.session = engine.session_class(
            created_at=now, last_seen=now, user_agent=self.user_agent, remember=engine.config.remember_default
        )

    def __repr__(self) -> str:
        return f"Exchange(presented={self.presented}, live={self.live})"

    @property
    def needs_load(self) -> bool:
        return self.key is not None or bool(self._candidates)

    @property
    def live(self) -> bool:
        """The request brought a session that the store still had."""
        return self.meta is not None

    @property
    def holds_lock(self) -> bool:
        return self._held

    @property
    def untouched(self) -> bool:
        """Nothing to do at the response: the app never used the session and the browser sent none."""
        return not (self.session.accessed or self.presented)

    def defer(self, load: Callable[[Exchange], None]) -> None:
        """Load lazily: ``load(self)`` runs the opening plan the first time the app uses the session."""
        if self.needs_load:
            self.session.defer(lambda session: load(self))

    # -- opening: the lock, then the load ------------------------------------------------

    def opening(self, *, lock: bool = True) -> Plan[Answer | None]:
        """The lock (when ``locking`` is on and ``lock``), then the load; an ``Answer`` if either failed."""
        engine = self.engine
        try:
            probed = (yield from self._choose()) if self._candidates else None
            if self.key is None:
                return None
            locking = lock and engine.config.locking
            if locking and not (yield from self._acquire()):
                self.failure = SessionBusy("the session stayed locked by another request")
                return engine.busy
            record = probed if probed is not None and not locking else (yield Load(self.key, engine.lifetime))
        except StoreUnavailable as exc:
            self.failure = exc
            yield from self.releasing()
            return engine.answer_for(exc)
        self._fill(record)
        return None

    def _choose(self) -> Plan[Record | None]:
        """Several tokens under our name: ours is the one live session among them.

        One read per token, only in this rare case. Two live sessions mean a cookie was planted
        for a longer path or a parent domain (cookie tossing; ``__Host-`` cookies cannot be):
        neither is used and none is expired, so a planted session never replaces the user's own.
        """
        engine, found = self.engine, None
        for token in self._candidates:
            key = engine.digest(token)
            record = yield Load(key, engine.lifetime)
            if record is None:
                continue
            if found is not None:
                security_log.warning("two live sessions under the session cookie's name: neither is used")
                self.presented = False
                self._token = self.key = None
                return None
            found, self._token, self.key = record, token, key
        if found is None:
            security_log.info("unknown or expired session tokens presented")
        return found

    def _acquire(self) -> Plan[bool]:
        engine = self.engine
        assert self.key is not None
        self._owner = owner = secrets.token_hex(16)
        for wait in (*engine.lock_waits, None):
            if (yield AcquireLock(self.key, owner, engine.lock_lease)):
                self._held = True
                return True
            if wait is not None:
                yield Pause(wait)
        return False

    def releasing(self) -> Plan[None]:
        if not self._held:
            return
        self._held = False
        assert self.key is not None and self._owner is not None
        try:
            yield ReleaseLock(self.key, self._owner)
        except StoreUnavailable:
            log.warning("could not release a session lock; its lease will end it")

    def _fill(self, record: Record | None) -> None:
        if record is None:
            security_log.info("unknown or expired session token presented")
            return
        loads = self.engine.serializer.loads
        try:
            data = {name: loads(value) for name, value in record.data.items()}
        except (ValueError, TypeError, RecursionError):
            security_log.warning("undecodable session value: the session is dropped")
            self.corrupt = True
            return
        meta = self.meta = record.meta
        assert self.key is not None  # a record came: it was loaded under this key
        self.session._fill(
            data,
            record.data,
            meta.created_at,
            meta.last_seen,
            meta.user_id,
            meta.remember,
            meta.user_agent,
            public_id(self.key, meta),  # as the session manager's listing shows it
        )

    # -- closing: the writes, then the headers ---------------------------------------------

    def closing(self, status: int, headers: Headers) -> Plan[Headers | Answer]:
        """Write what the app changed and return ``headers`` plus ours, or the ``Answer`` to send instead."""
        engine = self.engine
        if status >= 500 and self.failure is not None:
            # the app met the failure (a lazy load inside it) and answered 5xx itself: our answer instead
            yield from self.releasing()
            answer = engine.answer_for(self.failure, report=False)
            if answer is not None:
                return answer
        try:
            decision = self._decide(status)
        except SessionError as exc:
            log.error("session not saved: %s: %s", type(exc).__name__, exc)
            yield from self.releasing()
            return engine.unsaved
        applied = True
        try:
            for op in decision.ops:
                result = yield op
                if op is decision.conditional and not result:
                    applied = False
        except StoreUnavailable as exc:
            yield from self.releasing()
            answer = engine.answer_for(exc)
            assert answer is not None
            return answer
        if self._held:
            yield from self.releasing()
        cookie = decision.cookie
        if not applied:
            self.events.append("stale_write_refused")
            security_log.warning("stale write refused: the session ended while this request ran")
            cookie = engine.expire_cookie
        return self._headers(headers, cookie)

    def _headers(self, headers: Headers, cookie: str | None) -> Headers:
        session, config = self.session, self.engine.config
        vary = session.accessed
        if cookie is None and not vary:
            return headers
        # never cached: a response that carries a session cookie, and (no_store_authenticated) one
        # built from a logged-in session, so Back after a logout cannot show it from the cache
        private = cookie is not None or (config.no_store_authenticated and session._user_id is not None)
        out: Headers = []
        merged = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "cache-control" and private:
                continue  # no-store replaces whatever the app said
            if lowered == "vary" and vary and not merged:
                merged = True
                if "cookie" not in value.lower() and "*" not in value:
                    value = f"{value}, Cookie" if value.strip() else "Cookie"
            out.append((name, value))
        if vary and not merged:
            out.append(("Vary", "Cookie"))
        if cookie is not None:
            out.append(("Set-Cookie", cookie))
        if private:
            out.append(("Cache-Control", "no-store"))
        if config.clear_site_data_on_logout and session.invalidated and self.meta is not None:
            out.append(("Clear-Site-Data", '"cache", "cookies", "storage"'))
        return out

    def _decide(self, status: int) -> _Decision:
        session = self.session
        cookies = self.engine.cookies
        if session.pending:  # a lazy session the app never used: nothing was loaded
            return _NOTHING
        plain = self.meta is not None and not (self.corrupt or session.invalidated or session.regenerate_requested)
        if plain and (not session.accessed or status >= 500):
            return _NOTHING  # the common cases: a live session the app did not use, or a failed request
        ops: list[Op[Any]] = []
        if self.corrupt:
            assert self.key is not None
            ops.append(Delete(self.key))
        meta = self.meta
        # a dead cookie is cleared only by a response that used the session: a request that never
        # did (an asset, say) still in flight across a login must not clear the new cookie
        expire = self.engine.expire_cookie if self.presented and session.accessed else None
        if status >= 500:  # the app failed: save nothing, but a logout stays a logout
            if session.invalidated and meta is not None:
                assert self.key is not None
                ops.append(Delete(self.key, meta.user_id))
                return _Decision(tuple(ops), expire)
            return _Decision(tuple(ops), None)
        if meta is None or session.invalidated:
            if meta is not None:
                assert self.key is not None
                ops.append(Delete(self.key, meta.user_id))
            if not session.has_content:
                return _Decision(tuple(ops), expire)
            create, cookie = self._create()
            ops.append(create)
            return _Decision(tuple(ops), cookie)
        assert self.key is not None
        if not session.has_content:
            ops.append(Delete(self.key, meta.user_id))
            return _Decision(tuple(ops), expire)
        if session.regenerate_requested:
            rotate, cookie = self._rotate(meta)
            ops.append(rotate)
            return _Decision(tuple(ops), cookie, conditional=rotate)
        if not session.accessed:
            return _Decision(tuple(ops), None)
        loads = self.engine.serializer.loads
        changed, removed = self._encode(lambda dumps: session.changes(dumps, loads))
        remember = session._remember if session._remember != meta.remember else None
        if not (changed or removed or remember is not None):
            return _Decision(tuple(ops), None)
        self._check_size({**{k: v for k, v in session._loaded.items() if k not in removed}, **changed})
        update = Update(self.key, self.engine.lifetime, changed, removed, remember)
        ops.append(update)
        same_token: str | None = None
        if remember is not None:  # the same token, with the new persistence
            assert self._token is not None
            same_token = cookies.set_cookie(self._token, self._max_age(meta, remember, self.engine.clock()))
        return _Decision(tuple(ops), same_token, conditional=update)

    # -- helpers ---------------------------------------------------------------------

    def _create(self) -> tuple[Create, str]:
        engine, session = self.engine, self.session
        now = engine.clock()
        meta = Meta(
            created_at=now,
            last_seen=now,
            absolute_deadline=now + engine.lifetime.absolute_timeout,
            user_id=self._user_id(),
            user_agent=self.user_agent,
            remember=session._remember,
            public_id=secrets.token_hex(8),
        )
        token = new_token(engine.config.token_bytes)
        op = Create(engine.digest(token), meta, self._encode_all(), engine.lifetime)
        return op, engine.cookies.set_cookie(token, self._max_age(meta, meta.remember, now))

    def _rotate(self, old: Meta) -> tuple[Rotate, str]:
        engine, session = self.engine, self.session
        assert self.key is not None
        now = engine.clock()
        if session.logged_in:  # a login starts a new lifetime and a new identity in the UI
            created, deadline, public_id = now, now + engine.lifetime.absolute_timeout, secrets.token_hex(8)
        else:
            created, deadline, public_id = old.created_at, engine.lifetime.deadline(old), old.public_id
        meta = Meta(created, now, deadline, self._user_id(), self.user_agent, session._remember, public_id)
        token = new_token(engine.config.token_bytes)
        op = Rotate(self.key, engine.digest(token), meta, self._encode_all(), engine.lifetime, old.user_id)
        return op, engine.cookies.set_cookie(token, self._max_age(meta, meta.remember, now))

    def _max_age(self, meta: Meta, remember: bool, now: float) -> int | None:
        """A persistent cookie lives as long as the session may: to its (capped) absolute deadline."""
        if not remember:
            return None
        return max(0, int(self.engine.lifetime.deadline(meta) - now))

    def _user_id(self) -> str | None:
        user = self.session._user_id
        if user is None:
            return None
        try:
            user.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueNotStorable("user_id is not valid Unicode text (a lone surrogate)") from None
        if len(user) > MAX_USER_ID:
            raise ValueNotStorable(f"user_id is longer than {MAX_USER_ID} characters")
        return user

    def _encode_all(self) -> dict[str, bytes]:
        data: dict[str, bytes] = self._encode(self.session.encoded)
        self._check_size(data)
        return data

    def _check_size(self, data: Mapping[str, bytes]) -> None:
        limit = self.engine.config.max_session_bytes
        try:
            size = sum(len(name.encode("utf-8")) + len(value) for name, value in data.items())
        except UnicodeEncodeError:
            raise ValueNotStorable("a session key is not valid Unicode text (a lone surrogate)") from None
        if size > limit:
            raise SessionTooLarge(f"the session holds {size} bytes, more than max_session_bytes={limit}")

    def _encode(self, encode: Callable[[Callable[[Any], bytes]], Any]) -> Any:
        """Run one of the session's encoders; a value JSON cannot hold is the app's error, named."""
        try:
            return encode(self.engine.serializer.dumps)
        except SessionError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueNotStorable(f"a session value cannot be stored as JSON: {type(exc).__name__}") from None


class _Decision:
    """What ``closing`` writes, the Set-Cookie it sends, and the write whose refusal expires the cookie.

    A plain slotted class, not a frozen dataclass: one is built per request.
    """

    __slots__ = ("conditional", "cookie", "ops")

    def __init__(self, ops: tuple[Op[Any], ...], cookie: str | None, conditional: Op[Any] | None = None) -> None:
        self.ops = ops
        self.cookie = cookie
        self.conditional = conditional


_NOTHING = _Decision((), None)
