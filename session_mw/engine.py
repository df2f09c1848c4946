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

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .clients import address_prefix, binding_digest, client_address
from .config import SessionConfig
from .cookies import CookieRules
from .errors import SessionBusy, SessionError, SessionTooLarge, StoreUnavailable, ValueNotStorable
from .events import Listener, SecurityEvents
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
    SessionsOf,
    Update,
    public_id,
)
from .tokens import Digester, is_well_formed, new_token, same_secret, token_length

security_log = logging.getLogger("session_mw.security")
log = logging.getLogger("session_mw")
Headers = list[tuple[str, str]]

UNAVAILABLE_BODY = b"Session store unavailable; please retry shortly.\n"
BUSY_BODY = b"Session busy with another request; please retry shortly.\n"
UNSAVED_BODY = b"The session could not be saved.\n"
CONFLICT_BODY = b"The session changed while this request ran; nothing was saved. Please retry.\n"
LIMIT_BODY = b"Too many active sessions for this account; sign out of another device first.\n"
CSRF_BODY = b"Cross-site request refused (missing or wrong CSRF token, or a foreign origin).\n"
#: The answers of the recent-authentication guards (FastAPI dependency, Flask decorator).
NOT_LOGGED_IN = "Sign in first.\n"
REAUTH_NEEDED = "This action needs you to confirm your password again.\n"


def reauth_refusal(session: Session, max_age: float) -> tuple[int, str] | None:
    """The guards' one rule for a sensitive action: 401 with no user logged in, 403 when the last
    proof of a credential is older than ``max_age`` seconds; None when it may go on."""
    if session.user_id is None:
        return 401, NOT_LOGGED_IN
    if session.requires_reauth(max_age):
        return 403, REAUTH_NEEDED
    return None


#: Methods that change nothing (RFC 9110 safe methods): never CSRF-checked.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: The scheme of a token in ``Authorization: Session <token>``.
AUTH_SCHEME = "session"


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
    """The session rules of one ``SessionConfig``; shared by every door and request.

    ``listeners`` receive every security event (``session_mw.events``); ``account_active``,
    when given, is asked on each request of a logged-in session whether its user may still
    use it (an account disabled or locked): False ends the session there and then, even if
    the app's revoke call was missed. Keep it fast (a cached lookup): it runs on every such
    request, inside the request.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        clock: Callable[[], float] = time.time,
        serializer: Serializer | None = None,
        session_class: type[Session] = Session,
        listeners: Iterable[Listener] = (),
        account_active: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.serializer = serializer or default_serializer()
        self.session_class = session_class
        self.cookies = CookieRules(config)
        self.expire_cookie = self.cookies.expire_cookie()  # the same for every response: built once
        self.digest = Digester(config.digest_key)
        self.previous_digests = tuple(Digester(secret) for secret in config.previous_digest_keys)
        self.lifetime = Lifetime(
            float(config.idle_timeout), float(config.absolute_timeout), float(config.effective_touch_interval)
        )
        self.lock_waits = _backoff(config.lock_timeout)
        self.lock_lease = max(30.0, 3 * config.lock_timeout)
        self.events = SecurityEvents(
            config.digest_key, listeners, threshold=config.guess_threshold, window=config.guess_window, clock=clock
        )
        self.account_active = account_active
        self.binds = config.bind_user_agent or config.bind_client_ip
        #: the lower-cased name of the request header that may carry the token; None: cookies only
        self.token_header = config.token_header.lower() if config.token_header else None
        self._token_length = token_length(config.token_bytes)
        #: Secure is off: warned about once, at start-up for a Domain outside localhost, else on
        #: the first request to a host that is not a loopback name (``insecure_host``)
        self.insecure = not config.cookie_secure
        if self.insecure and config.cookie_domain and not _local_host(config.cookie_domain):
            self._warn_insecure(config.cookie_domain)
        self.unavailable = _answer(config, 503, "Service Unavailable", UNAVAILABLE_BODY)
        self.busy = _answer(config, 503, "Service Unavailable", BUSY_BODY)
        self.unsaved = _answer(config, 500, "Internal Server Error", UNSAVED_BODY)
        self.conflict = _answer(config, 409, "Conflict", CONFLICT_BODY)
        self.limited = _answer(config, 403, "Forbidden", LIMIT_BODY)
        self.csrf_refused = _answer(config, 403, "Forbidden", CSRF_BODY)

    def __repr__(self) -> str:
        return f"Engine(cookie={self.cookies.name!r}, store_url=<hidden>)"

    def insecure_host(self, host: str | None) -> None:
        """With Secure off, a request to a host other than localhost: one warning per engine."""
        if self.insecure and host and not _local_host(host):
            self._warn_insecure(host)

    def _warn_insecure(self, host: str) -> None:
        self.insecure = False  # once
        log.warning(
            "cookie_secure=False outside localhost (%s): the session cookie travels over plain http, "
            "where anyone on the network can read it; keep it for local development only",
            host.split(":")[0][:100],
        )

    def exchange(
        self,
        cookie_header: str | None,
        user_agent: str = "",
        path: str | None = None,
        *,
        client: str = "",
        forwarded: str | None = None,
        header_value: str | None = None,
    ) -> Exchange:
        """The session state of one request, from its Cookie header (lines joined by ``;`` or ``,``)
        and, when ``cookie_path`` is not ``/``, the request's full path (outside it, a cookie of our
        name was set for another path: it may be read, never expired).

        ``client`` is the socket peer's address and ``forwarded`` the value of ``client_ip_header``
        (when set and sent): the client address is worked out from them only when needed.
        ``header_value`` is the value of the ``token_header`` request header, when that transport
        is on and the header was sent: a well-formed token there wins over the cookie.
        """
        client_from = (client, forwarded)
        if header_value is not None and self.token_header is not None:
            token = self.header_token(header_value)
            if token is not None:
                return Exchange(self, (token,), user_agent, True, client_from, HEADER)
        if not cookie_header or not self.config.cookie_transport:
            return Exchange(self, (), user_agent, True, client_from)
        tokens, ignored = self.cookies.read(cookie_header)
        if ignored:
            security_log.info("a malformed or oversized cookie under the session cookie's name was ignored")
        return Exchange(self, tokens, user_agent, path is None or self.cookies.in_scope(path), client_from)

    def header_token(self, value: str) -> str | None:
        """The token in a ``token_header`` value; None for anything else (never an error: an
        ``Authorization`` header of another scheme belongs to other code). A line break anywhere
        (which no real server passes on) makes it no token."""
        if "\r" in value or "\n" in value:
            security_log.info("a session token header with a line break was ignored")
            return None
        value = value.strip()
        if self.token_header == "authorization":  # noqa: S105 - a header name
            scheme, _, value = value.partition(" ")
            if scheme.lower() != AUTH_SCHEME:
                return None
            value = value.strip()
        if is_well_formed(value, self._token_length):
            return value
        security_log.info("a malformed session token header was ignored")
        return None

    def binding(self, user_agent: str, client: str) -> str:
        """What a session born in this request is bound to; "" when binding is off."""
        if not self.binds:
            return ""
        config = self.config
        prefix = None
        if config.bind_client_ip:
            prefix = address_prefix(client, config.bind_ipv4_prefix, config.bind_ipv6_prefix)
        return binding_digest(user_agent if config.bind_user_agent else None, prefix)

    def cross_site(self, origin: str | None, fetch_site: str | None, host: str | None, scheme: str) -> bool:
        """True when the browser says the request comes from another site: ``Sec-Fetch-Site`` is
        neither ``same-origin`` nor ``none``, or ``Origin`` is not this scheme and host."""
        if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
            return True
        if origin is None:
            return False
        origin = origin.strip().lower()
        return not host or origin != f"{scheme}://{host.strip().lower()}"

    def answer_for(self, exc: BaseException, *, report: bool = True) -> Answer | None:
        """The answer to a session failure: 503 for the store down or the session busy; None for others.

        ``report``: log it (once: a failure already logged where it was caught is not logged again).
        """
        if isinstance(exc, StoreUnavailable):
            if report:
                log.warning("session store unavailable: %s", exc)
                self.events.emit("store_unavailable", detail=type(exc).__name__)
            return self.unavailable
        if isinstance(exc, SessionBusy):
            return self.busy
        return None


COOKIE = "cookie"
HEADER = "header"
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def _local_host(host: str) -> bool:
    """A loopback name (``localhost``, ``*.localhost``, ``127.0.0.1``, ``[::1]``), port or not."""
    name = host.strip().lower().lstrip(".")
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name in _LOOPBACK or name.endswith(".localhost") or name.startswith("127.")


class Exchange:
    """One request's session: what came in, what the app did, and what goes out."""

    __slots__ = (
        "_candidates",
        "_client",
        "_client_from",
        "_contended",
        "_ended",
        "_held",
        "_moving_to",
        "_next",
        "_owner",
        "_renew",
        "_token",
        "corrupt",
        "engine",
        "events",
        "failure",
        "key",
        "meta",
        "presented",
        "retired",
        "session",
        "transport",
        "user_agent",
    )

    def __init__(
        self,
        engine: Engine,
        tokens: tuple[str, ...],
        user_agent: str,
        ours: bool = True,
        client_from: tuple[str, str | None] = ("", None),
        transport: str = COOKIE,
    ) -> None:
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
        self._client_from = client_from
        self._client: str | None = None
        #: how the token came (and so how a new one goes back): "cookie" or "header"
        self.transport = transport
        self.meta: Meta | None = None
        self.corrupt = False
        #: the token was rotated by another request moments ago: this one reads, never writes
        self.retired = False
        self.failure: SessionError | None = None
        self.events: list[str] = []
        self._owner: str | None = None
        self._held = False
        self._contended = False
        self._ended = False
        self._renew = False
        self._moving_to: str | None = None
        self._next: str | None = None
        now = engine.clock()
        session = self.session = engine.session_class(
            created_at=now, last_seen=now, user_agent=self.user_agent, remember=engine.config.remember_default
        )
        session._clock = engine.clock
        session._csrf = self._csrf_value

    def __repr__(self) -> str:
        return f"Exchange(presented={self.presented}, live={self.live})"

    @property
    def client(self) -> str:
        """The client's address (``clients.client_address``), worked out on first use."""
        if self._client is None:
            peer, forwarded = self._client_from
            self._client = client_address(peer, forwarded, self.engine.config.trusted_proxies)
        return self._client

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

    def _emit(self, kind: str, key: str | None = None, user_id: str | None = None, detail: str = "") -> None:
        self.events.append(kind)
        self.engine.events.emit(kind, key, user_id, self.client, detail)

    # -- opening: the lock, then the load ------------------------------------------------

    def opening(self, *, lock: bool = True) -> Plan[Answer | None]:
        """The lock (when ``locking`` is on and ``lock``), then the load; an ``Answer`` if either failed.

        A lock held by another request past ``lock_timeout`` does not fail the request: it runs
        unlocked, so what it reads is served and a logout goes through; a write is refused at the
        end (``closing``), so the lock still means that no update is lost.
        """
        engine = self.engine
        try:
            probed = (yield from self._choose()) if self._candidates else None
            if self.key is None:
                return None
            if lock and engine.config.locking and not (yield from self._acquire()):
                self._contended = True
            record: Record | None = probed
            if probed is None or self._held:
                record = yield Load(self.key, engine.lifetime, report=self._store_found)
            if record is None and engine.previous_digests and self._token is not None:
                record = yield from self._under_previous_secret(self._token)
            record = yield from self._screen(record)
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
            self._unknown()
        return found

    def _unknown(self) -> None:
        """A token never ours, or revoked (an expired one the store reports as such): counted per client."""
        self.engine.events.unknown_token(self.client)
        self.events.append("unknown_token")

    def _store_found(self, kind: str, detail: str) -> None:
        """What the store found instead of a live session (expired, corrupt): an event of its own."""
        self._ended = True
        self._emit(kind, self.key, None, detail)

    def _under_previous_secret(self, token: str) -> Plan[Record | None]:
        """A token stored under a previous ``digest_key``: found there, moved on its next write."""
        for digester in self.engine.previous_digests:
            key = digester(token)
            record: Record | None = yield Load(key, self.engine.lifetime)
            if record is not None:
                assert self.key is not None
                self._moving_to, self.key = self.key, key
                return record
        return None

    def _screen(self, record: Record | None) -> Plan[Record | None]:
        """The checks a loaded session must pass before the app sees it: its binding, its account."""
        engine = self.engine
        if record is None:
            if self.presented and not self._candidates and not self._ended:
                self._unknown()
            return None
        meta = record.meta
        assert self.key is not None
        # a token rotated moments ago reads its old session only while the new one lives: a logout
        # or revoke through the new token ends the old one too (one more read, only in this case)
        if meta.retired_until and meta.successor and (yield Load(meta.successor, engine.lifetime)) is None:
            return None
        bound = engine.binds and meta.binding
        if bound and not same_secret(meta.binding, engine.binding(self.user_agent, self.client)):
            yield Delete(self.key, meta.user_id)
            self._emit("binding_mismatch", self.key, meta.user_id, "the session was used from another client")
            return None
        check = engine.account_active
        if check is not None and meta.user_id is not None and not check(meta.user_id):
            yield Delete(self.key, meta.user_id)
            self._emit("revoked_by_admin", self.key, meta.user_id, "the account is disabled")
            return None
        return record

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
            return
        loads = self.engine.serializer.loads
        try:
            data = {name: loads(value) for name, value in record.data.items()}
        except (ValueError, TypeError, RecursionError):
            self.corrupt = True
            self._emit("corrupt_record", self.key, record.meta.user_id, "an undecodable value: the session is dropped")
            return
        meta = self.meta = record.meta
        assert self.key is not None  # a record came: it was loaded under this key
        engine = self.engine
        if meta.retired_until:
            self.retired = True
        else:
            interval = engine.config.renew_interval
            if interval is not None and (meta.issued_at or meta.created_at) + interval <= engine.clock():
                self._renew = True
        self.session._fill(
            data,
            record.data,
            meta.created_at,
            meta.last_seen,
            meta.user_id,
            meta.remember,
            meta.user_agent,
            public_id(self.key, meta),  # as the session manager's listing shows it
            meta.authenticated_at,
        )

    # -- CSRF: the door asks, before the app runs ----------------------------------------

    def csrf_refuses_origin(
        self, method: str, origin: str | None, fetch_site: str | None, host: str | None, scheme: str
    ) -> bool:
        """Before the load: True when an unsafe request is refused for where it comes from.

        A foreign ``Origin``/``Sec-Fetch-Site`` is refused whatever it carries, with or without a
        session (that covers login CSRF, a forged post to ``/login`` before any session exists).
        A token in a request header is no ambient credential: such requests (CORS API calls) are
        never refused here.
        """
        if not self.engine.config.csrf_protect or method.upper() in SAFE_METHODS or self.transport == HEADER:
            return False
        if not self.engine.cross_site(origin, fetch_site, host, scheme):
            return False
        self._emit("csrf_refused", None, None, "a cross-site request")
        return True

    def csrf_needs_token(self, method: str, origin: str | None, fetch_site: str | None) -> bool:
        """After the load: the request must carry ``csrf_token`` (the ``csrf_header`` header or
        the ``csrf_field`` form field), for ``csrf_answer``. Only unsafe methods of
        cookie-authenticated requests do: a request with no live session has nothing to ride on."""
        config = self.engine.config
        if not config.csrf_protect or method.upper() in SAFE_METHODS or self.transport == HEADER or not self.live:
            return False
        return not (origin is None and fetch_site is None and config.csrf_trust_plain_clients)

    def csrf_answer(self, submitted: str | None) -> Answer | None:
        """None when ``submitted`` is this session's CSRF token; else the 403 to send (and an event)."""
        if submitted is not None and same_secret(submitted.strip(), self._csrf_value()):
            return None
        self._emit("csrf_refused", self.key, self._user(), "a missing or wrong CSRF token")
        return self.engine.csrf_refused

    def _user(self) -> str | None:
        return self.meta.user_id if self.meta is not None else None

    def _csrf_value(self) -> str:
        """The CSRF token: an HMAC of the session token it goes with, which it cannot reveal.

        Before the session has a token (a new one, or one this response rotates), the token it
        will get is drawn now, and the response hands out that one.
        """
        session = self.session
        token = self._token
        if token is None or self.meta is None or session.invalidated or session.regenerate_requested:
            token = self._mint()
        mac = hmac.new(token.encode(), b"session_mw csrf v1", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def _mint(self) -> str:
        """The token this response hands out: drawn once, so a CSRF token read earlier matches it."""
        if self._next is None:
            self._next = new_token(self.engine.config.token_bytes)
        return self._next

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
        if decision.ops and self.retired:
            # a request in flight with a token another request has just rotated: it reads the
            # session as it was, and cannot write through the old token
            self._emit("stale_write_refused", self.key, self._user(), "a write through a rotated token")
            return engine.conflict
        if self._contended and any(not isinstance(op, Delete) for op in decision.ops):
            if not self.session.invalidated:
                self.failure = SessionBusy("the session stayed locked by another request")
                return engine.busy
            # a logout that also wrote (a flash message): the logout goes through, the rest is dropped
            deletes = tuple(op for op in decision.ops if isinstance(op, Delete))
            notes = self._ended_notes(self.meta) if self.meta is not None else []
            decision = _Decision(deletes, None, expire=self.presented, notes=notes)
        applied = True
        try:
            if self.session.logged_in and engine.config.max_sessions_per_user:
                refusal = yield from self._limit()
                if refusal is not None:
                    yield from self.releasing()
                    return refusal
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
        if not applied:
            self._emit("stale_write_refused", self.key, self._user(), "the session ended while this request ran")
            if engine.config.rotation_grace:
                return engine.conflict  # the browser may hold the new token: expire nothing
            return self._headers(headers, _Decision((), None, expire=True))
        for kind, key, user, detail in decision.notes:
            self._emit(kind, key, user, detail)
        return self._headers(headers, decision)

    def _limit(self) -> Plan[Answer | None]:
        """A login with ``max_sessions_per_user``: the oldest sessions past the limit are revoked,
        or the login is refused (``session_limit_action``). Concurrent logins may briefly exceed it."""
        engine, config = self.engine, self.engine.config
        user = self.session._user_id
        assert user is not None
        rows: list[tuple[str, Meta]] = yield SessionsOf(user, engine.lifetime)
        others = [(key, meta) for key, meta in rows if key != self.key]
        excess = len(others) - (config.max_sessions_per_user - 1)
        if excess <= 0:
            return None
        if config.session_limit_action == "refuse":
            self._emit("session_limit", None, user, "login refused: the account has too many sessions")
            return engine.limited
        others.sort(key=lambda row: row[1].created_at)
        for key, _ in others[:excess]:
            yield Delete(key, user)
            self._emit("revoked", key, user, "the oldest session past max_sessions_per_user")
        return None

    def _headers(self, headers: Headers, decision: _Decision) -> Headers:
        session, config = self.session, self.engine.config
        vary = session.accessed
        by_header = self.transport == HEADER or (not config.cookie_transport)
        token, expire = decision.token, decision.expire
        handing = token is not None or expire
        if not handing and not vary:
            return headers
        # never cached: a response that carries a session token, and (no_store_authenticated) one
        # built from a logged-in session, so Back after a logout cannot show it from the cache
        private = handing or (config.no_store_authenticated and session._user_id is not None)
        varies_on = (config.token_header or "Authorization") if by_header else "Cookie"
        out: Headers = []
        merged = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "cache-control" and private:
                continue  # no-store replaces whatever the app said
            if lowered == "vary" and vary and not merged:
                merged = True
                if varies_on.lower() not in value.lower() and "*" not in value:
                    value = f"{value}, {varies_on}" if value.strip() else varies_on
            out.append((name, value))
        if vary and not merged:
            out.append(("Vary", varies_on))
        if handing:
            if by_header:
                out.append((config.token_response_header, token or ""))
            elif token is not None:
                out.append(("Set-Cookie", self.engine.cookies.set_cookie(token, decision.max_age)))
            else:
                out.append(("Set-Cookie", self.engine.expire_cookie))
        if private:
            out.append(("Cache-Control", "no-store"))
        if config.clear_site_data_on_logout and session.invalidated and self.meta is not None:
            out.append(("Clear-Site-Data", '"cache", "cookies", "storage"'))
        return out

    def _decide(self, status: int) -> _Decision:
        session = self.session
        if session.pending:  # a lazy session the app never used: nothing was loaded
            return _NOTHING
        renew = self._renew and status < 500
        plain = self.meta is not None and not (
            self.corrupt or session.invalidated or session.regenerate_requested or renew
        )
        if plain and (not session.accessed or status >= 500):
            return _NOTHING  # the common cases: a live session the app did not use, or a failed request
        ops: list[Op[Any]] = []
        if self.corrupt:
            assert self.key is not None
            ops.append(Delete(self.key))
        meta = self.meta
        # a dead token is cleared only by a response that used the session: a request that never
        # did (an asset, say) still in flight across a login must not clear the new cookie
        expire = self.presented and session.accessed
        if status >= 500:  # the app failed: save nothing, but a logout stays a logout
            if session.invalidated and meta is not None:
                assert self.key is not None
                ops.append(Delete(self.key, meta.user_id))
                return _Decision(tuple(ops), None, expire=expire, notes=self._ended_notes(meta))
            return _Decision(tuple(ops), None)
        if meta is None or session.invalidated:
            notes: list[_Note] = []
            if meta is not None:
                assert self.key is not None
                ops.append(Delete(self.key, meta.user_id))
                notes = self._ended_notes(meta)
            if not session.has_content:
                return _Decision(tuple(ops), None, expire=expire, notes=notes)
            create, token, max_age = self._create()
            ops.append(create)
            notes.append(("created", create.key, create.meta.user_id, "login" if session.logged_in else ""))
            return _Decision(tuple(ops), token, max_age=max_age, notes=notes)
        assert self.key is not None
        if not session.has_content:
            ops.append(Delete(self.key, meta.user_id))
            return _Decision(tuple(ops), None, expire=expire, notes=self._ended_notes(meta))
        if session.regenerate_requested or renew:
            rotate, token, max_age = self._rotate(meta)
            ops.append(rotate)
            note = self._rotate_note(meta, rotate)
            return _Decision(tuple(ops), token, rotate, max_age=max_age, notes=[note])
        if not session.accessed:
            return _Decision(tuple(ops), None)
        loads = self.engine.serializer.loads
        changed, removed = self._encode(lambda dumps: session.changes(dumps, loads))
        remember = session._remember if session._remember != meta.remember else None
        if not (changed or removed or remember is not None):
            return _Decision(tuple(ops), None)
        self._check_size({**{k: v for k, v in session._loaded.items() if k not in removed}, **changed})
        # the same token, with the new persistence
        assert self._token is not None
        same_token, max_age = None, None
        if remember is not None:
            same_token, max_age = self._token, self._max_age(meta, remember, self.engine.clock())
        if self._moving_to is not None:  # stored under a previous secret: moves to the current one
            move = self._move(meta)
            ops.append(move)
            return _Decision(tuple(ops), same_token, move, max_age=max_age)
        update = Update(self.key, self.engine.lifetime, changed, removed, remember)
        ops.append(update)
        return _Decision(tuple(ops), same_token, update, max_age=max_age)

    def _ended_notes(self, meta: Meta) -> list[_Note]:
        kind = "cleared" if self.session.cleared else "invalidated"
        return [(kind, self.key, meta.user_id, "")]

    def _rotate_note(self, old: Meta, rotate: Rotate) -> _Note:
        session, user = self.session, rotate.meta.user_id
        if session.logged_in:
            changed = old.user_id is not None and old.user_id != user
            return ("user_changed" if changed else "regenerated", rotate.key, user, "login")
        if session.reauth_requested:
            return ("reauthenticated", rotate.key, user, "")
        if session.regenerate_requested:
            return ("regenerated", rotate.key, user, "")
        return ("renewed", rotate.key, user, "the token reached renew_interval")

    # -- helpers ---------------------------------------------------------------------

    def _create(self) -> tuple[Create, str, int | None]:
        engine, session = self.engine, self.session
        now = engine.clock()
        user = self._user_id()
        meta = Meta(
            created_at=now,
            last_seen=now,
            absolute_deadline=now + engine.lifetime.absolute_timeout,
            user_id=user,
            user_agent=self.user_agent,
            remember=session._remember,
            public_id=secrets.token_hex(8),
            authenticated_at=now if user is not None else 0.0,
            issued_at=now,
            binding=engine.binding(self.user_agent, self.client),
        )
        token = self._mint()
        op = Create(engine.digest(token), meta, self._encode_all(), engine.lifetime)
        return op, token, self._max_age(meta, meta.remember, now)

    def _rotate(self, old: Meta) -> tuple[Rotate, str, int | None]:
        engine, session = self.engine, self.session
        assert self.key is not None
        now = engine.clock()
        authenticated = old.authenticated_at
        if session.logged_in:  # a login starts a new lifetime and a new identity in the UI
            created, deadline, public_id = now, now + engine.lifetime.absolute_timeout, secrets.token_hex(8)
            authenticated = now
        else:
            created, deadline, public_id = old.created_at, engine.lifetime.deadline(old), old.public_id
            if session.reauth_requested:
                authenticated = now
                if engine.config.reauth_resets_lifetime:
                    created, deadline = now, now + engine.lifetime.absolute_timeout
        meta = Meta(
            created,
            now,
            deadline,
            self._user_id(),
            self.user_agent,
            session._remember,
            public_id,
            authenticated_at=authenticated if session._user_id is not None else 0.0,
            issued_at=now,
            binding=engine.binding(self.user_agent, self.client),
        )
        token = self._mint()
        op = Rotate(
            self.key,
            engine.digest(token),
            meta,
            self._encode_all(),
            engine.lifetime,
            old.user_id,
            grace=engine.config.rotation_grace,
        )
        return op, token, self._max_age(meta, meta.remember, now)

    def _move(self, old: Meta) -> Rotate:
        """The same token, stored under the current ``digest_key``: the data moves, nothing else."""
        assert self.key is not None and self._moving_to is not None
        meta = replace(old, last_seen=self.engine.clock(), remember=self.session._remember)
        return Rotate(self.key, self._moving_to, meta, self._encode_all(), self.engine.lifetime, old.user_id)

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


#: An event to emit once the writes applied: kind, store key, user, detail.
_Note = tuple[str, "str | None", "str | None", str]


class _Decision:
    """What ``closing`` writes, the token it hands out (or ``expire``), and the write whose
    refusal means the session ended meanwhile.

    A plain slotted class, not a frozen dataclass: one is built per request.
    """

    __slots__ = ("conditional", "expire", "max_age", "notes", "ops", "token")

    def __init__(
        self,
        ops: tuple[Op[Any], ...],
        token: str | None,
        conditional: Op[Any] | None = None,
        *,
        max_age: int | None = None,
        expire: bool = False,
        notes: list[_Note] | tuple[_Note, ...] = (),
    ) -> None:
        self.ops = ops
        self.token = token
        self.conditional = conditional
        self.max_age = max_age
        self.expire = expire and token is None
        self.notes = notes


_NOTHING = _Decision((), None)
