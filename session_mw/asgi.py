"""Pure ASGI middleware (Starlette, FastAPI, any ASGI app).

The session lives in ``scope["session"]``, so Starlette's ``request.session`` works as is.
The store is read once, before the app runs, and only when the request carries a cookie
shaped like one of our tokens; it is written once, when the response starts. This module
only translates ASGI to the engine's plans and back; ``AsyncDriver`` runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .config import SessionConfig
from .csrf import MAX_FORM_BODY, form_field, is_form
from .drivers import STATE_KEY, AsyncDriver, AsyncSessionManager, request_manager
from .engine import SAFE_METHODS, Answer, Engine, Exchange
from .errors import ConfigError, SessionError, SessionNotLoaded
from .events import Listener
from .session import Session
from .stores import open_async_store
from .stores.base import AsyncStore

# As permissive as Starlette's own middleware types, so add_middleware() type-checks.
Scope = Any
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("session_mw")


class SessionMiddleware:
    """Server-side sessions for an ASGI app.

    ``app.add_middleware(SessionMiddleware, config=SessionConfig.from_env())``; ``store``
    and ``engine`` replace the ones built from ``config`` (tests, custom stores). The store
    is checked at the ASGI lifespan start-up, so a store that cannot work stops the app there.
    ``listeners`` and ``account_active`` are the engine's (security events, disabled accounts).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: SessionConfig | None = None,
        *,
        store: AsyncStore | None = None,
        engine: Engine | None = None,
        listeners: Iterable[Listener] = (),
        account_active: Callable[[str], bool] | None = None,
    ) -> None:
        config = config or SessionConfig()
        self.app = app
        self.config = config
        self.engine = engine or Engine(config, listeners=listeners, account_active=account_active)
        self.store = store if store is not None else open_async_store(config)
        self._owns_store = store is None  # a store handed in is closed by whoever made it
        self.driver = AsyncDriver(self.store, locking=config.locking)
        self._exclude = config.exclude_paths
        engine_config = self.engine.config
        self._token_header = self.engine.token_header.encode("latin-1") if self.engine.token_header else None
        forwarded = engine_config.client_ip_header
        self._forwarded = forwarded.lower().encode("latin-1") if forwarded else None
        self._csrf = engine_config.csrf_protect
        self._lazy = engine_config.lazy_load
        self._csrf_header = engine_config.csrf_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan(send))
            return
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if self._exclude and scope["path"].startswith(self._exclude):
            scope["session"] = self.engine.session_class()  # empty, never loaded, never saved
            await self.app(scope, receive, send)
            return
        cookie: str | None = None
        user_agent = ""
        token_header, forwarded_header = self._token_header, self._forwarded
        carried: str | None = None
        forwarded: str | None = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                text = value.decode("latin-1")
                cookie = text if cookie is None else f"{cookie}; {text}"
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == token_header:
                carried = value.decode("latin-1")
            elif name == forwarded_header:
                text = value.decode("latin-1")
                forwarded = text if forwarded is None else f"{forwarded}, {text}"
        path: str | None = None
        if cookie is not None and self.engine.cookies.scoped:  # the path the browser asked for
            path, root = scope["path"], scope.get("root_path", "")
            if root and not path.startswith(root):
                path = root + path
        if self.engine.insecure:  # Secure off: warn once if this is not localhost
            self.engine.insecure_host(next((v.decode("latin-1") for n, v in scope["headers"] if n == b"host"), None))
        peer = scope.get("client")
        exchange = self.engine.exchange(
            cookie,
            user_agent,
            path,
            client=peer[0] if peer else "",
            forwarded=forwarded,
            header_value=carried,
        )
        driver = self.driver
        checked: dict[bytes, str] | None = None
        if self._csrf and kind == "websocket" and _foreign_websocket(scope, exchange):
            await send({"type": "websocket.close", "code": 1008, "reason": "cross-site websocket refused"})
            return
        if self._csrf and kind == "http" and scope["method"] not in SAFE_METHODS:
            checked = _csrf_headers(scope, self._csrf_header)
            origin, fetch_site = checked.get(b"origin"), checked.get(b"sec-fetch-site")
            if exchange.csrf_refuses_origin(scope["method"], origin, fetch_site, checked.get(b"host"), scope["scheme"]):
                await _send_answer(scope, send, self.engine.csrf_refused)  # before any store read
                return
        if exchange.needs_load and self._lazy and checked is None:
            exchange.session.defer(_not_loaded)  # ``load_session`` loads it; the session alone refuses
        elif exchange.needs_load:
            try:
                answer = await driver.run(exchange.opening())
            except BaseException:  # cancelled (a client gone, a server timeout) with the lock held
                if exchange.holds_lock:
                    await driver.run(exchange.releasing())
                raise
            if answer is not None:
                await _send_answer(scope, send, answer)
                return
        if checked is not None:
            answer, receive = await _csrf_token_check(scope, receive, exchange, checked, self._csrf_header)
            if answer is not None:
                await driver.run(exchange.releasing())
                await _send_answer(scope, send, answer)
                return
        scope["session"] = exchange.session
        scope[STATE_KEY] = (driver, exchange)
        if kind == "websocket":  # read-only: a websocket has no response to carry a cookie
            await driver.run(exchange.releasing())
            await self.app(scope, receive, send)
            return

        started = False
        replaced = False

        async def send_with_session(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own response was replaced by ours
            if message["type"] == "http.response.start":
                started = True
                if not exchange.untouched:
                    headers = message.get("headers", [])
                    existing = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
                    result = await driver.run(exchange.closing(message["status"], existing))
                    if isinstance(result, Answer):
                        replaced = True
                        await _send_answer(scope, send, result)
                        return
                    if result is not existing:
                        message["headers"] = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in result]
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except SessionError as exc:  # raised inside the handler: a manager call, say
            answer = self.engine.answer_for(exc)
            if answer is None or started:
                raise
            await _send_answer(scope, send, answer)
        finally:
            if exchange.holds_lock:  # the app failed before its response started
                await driver.run(exchange.releasing())

    def _lifespan(self, send: Send) -> Send:
        """Check the store when the app reports its start-up, close it at shutdown."""

        failed = False

        async def send_checked(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the app reporting the failure we raised: already reported, in one line
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.driver.check()
                except ConfigError as exc:
                    failed = True
                    log.error("session store cannot be used: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise  # ends the app's lifespan, as the ASGI spec asks after a failed start-up
            elif message["type"] == "lifespan.shutdown.complete" and self._owns_store:
                await self.driver.close()
            await send(message)

        return send_checked


def _csrf_headers(scope: Scope, wanted: bytes) -> dict[bytes, str]:
    """The headers the CSRF check reads; a repeated one is joined with ``,`` (as WSGI servers do),
    so a second ``Origin`` can never hide behind a first."""
    headers: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in (b"origin", b"sec-fetch-site", b"host", b"content-type", wanted):
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return headers


def _foreign_websocket(scope: Scope, exchange: Exchange) -> bool:
    """A websocket handshake from another site (cross-site websocket hijacking rides on the
    cookie as a form post does): refused, with an event, before any store read."""
    headers = _csrf_headers(scope, b"")
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    if not exchange.engine.cross_site(headers.get(b"origin"), None, headers.get(b"host"), scheme):
        return False
    exchange.engine.events.emit("csrf_refused", client=exchange.client, detail="a cross-site websocket")
    return True


async def _csrf_token_check(
    scope: Scope, receive: Receive, exchange: Exchange, headers: dict[bytes, str], wanted: bytes
) -> tuple[Answer | None, Receive]:
    """After the load: the token check of an unsafe request; its answer (None: go on) and the
    ``receive`` to pass on (the body replayed, when a form had to be read for its token field)."""
    if not exchange.csrf_needs_token(scope["method"], headers.get(b"origin"), headers.get(b"sec-fetch-site")):
        return None, receive
    submitted = headers.get(wanted)
    content_type = headers.get(b"content-type")
    if submitted is None and is_form(content_type):
        assert content_type is not None
        body, receive = await _buffered(receive)
        if body is not None:
            submitted = form_field(body, content_type, exchange.engine.config.csrf_field)
    return exchange.csrf_answer(submitted), receive


async def _buffered(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the whole body (None past ``MAX_FORM_BODY``) and a ``receive`` that replays it."""
    messages: list[Any] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > MAX_FORM_BODY or not message.get("more_body", False):
            break
    complete = messages[-1]["type"] == "http.request" and not messages[-1].get("more_body", False)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    pending = list(messages)

    async def replay() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return (body if complete and size <= MAX_FORM_BODY else None), replay


async def _send_answer(scope: Scope, send: Send, answer: Answer) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013, "reason": "session unavailable"})
        return
    headers = [(n.lower().encode(), v.encode()) for n, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def _not_loaded(session: Session) -> None:
    session.defer(_not_loaded)  # stays refused until loaded
    raise SessionNotLoaded(
        "lazy_load is on: await session_mw.load_session(request) before using request.session "
        "(or take the session from the FastAPI dependency session_mw.contrib.fastapi.LoadedSession)"
    )


async def load_session(request: Any) -> Session:
    """The request's session, loaded (one store round trip the first time; nothing after).

    Needed with ``lazy_load``; harmless without it (the session is loaded already). A store that
    is down or a session lock held too long raise the ``SessionError`` the middleware answers
    (503), as an eager load's failure would.
    """
    scope = request.scope if hasattr(request, "scope") else request
    try:
        driver, exchange = scope[STATE_KEY]
    except KeyError:
        raise RuntimeError("session_mw.asgi.SessionMiddleware must be installed to load the session") from None
    session: Session = exchange.session
    if session.pending and session.undefer() is not None:
        answer = await driver.run(exchange.opening())
        if answer is not None:
            failure = exchange.failure
            assert failure is not None
            raise failure
    return session


def session_of(request: Any) -> Session:
    """``request.session`` typed as our ``Session`` (Starlette types it as a plain dict)."""
    scope = request.scope if hasattr(request, "scope") else request
    session = scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("session_mw.asgi.SessionMiddleware must be installed to use the session")
    return session


def session_manager(request: Any) -> AsyncSessionManager:
    """The current user's session operations for this request (list, revoke, revoke_all)."""
    scope = request.scope if hasattr(request, "scope") else request
    missing = "session_mw.asgi.SessionMiddleware must be installed to manage sessions"
    return request_manager(AsyncSessionManager, scope, missing)


def admin_session_manager(request: Any) -> AsyncSessionManager:
    """Any user's sessions, for an operator's page: ``list(user_id)``, ``revoke_all(user_id)``
    (an account disabled, a password reset). Only for requests your app has authorised as an admin's."""
    scope = request.scope if hasattr(request, "scope") else request
    missing = "session_mw.asgi.SessionMiddleware must be installed to manage sessions"
    return request_manager(AsyncSessionManager, scope, missing, admin=True)


__all__ = [
    "Session",
    "SessionMiddleware",
    "admin_session_manager",
    "load_session",
    "session_manager",
    "session_of",
]
