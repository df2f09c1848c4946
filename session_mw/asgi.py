"""Pure ASGI middleware (Starlette, FastAPI, any ASGI app).

The session lives in ``scope["session"]``, so Starlette's ``request.session`` works as is.
The store is read once, before the app runs, and only when the request carries a cookie
shaped like one of our tokens; it is written once, when the response starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import SessionConfig
from .engine import BUSY_BODY, NO_COOKIE, UNAVAILABLE_BODY, Engine, LockPlan, Outcome, unavailable_headers
from .errors import ConfigError, StoreUnavailable
from .manage import AsyncSessionManager
from .session import Session
from .stores import open_async_store
from .stores.base import AsyncLockingStore, AsyncStore

# As permissive as Starlette's own middleware types, so add_middleware() type-checks.
Scope = Any
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("session_mw")
STATE_KEY = "session_mw"  # (middleware, incoming): what session_manager() needs, built only on demand


class SessionMiddleware:
    """Server-side sessions for an ASGI app.

    ``app.add_middleware(SessionMiddleware, config=SessionConfig.from_env())``; ``store``
    and ``engine`` replace the ones built from ``config`` (tests, custom stores).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: SessionConfig | None = None,
        *,
        store: AsyncStore | None = None,
        engine: Engine | None = None,
    ) -> None:
        config = config or SessionConfig()
        self.app = app
        self.config = config
        self.engine = engine or Engine(config)
        self.store = store if store is not None else open_async_store(config)
        self._exclude = config.exclude_paths
        if config.locking and not isinstance(self.store, AsyncLockingStore):
            raise ConfigError(f"locking=True needs a store with locks; {type(self.store).__name__} has none")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or (self._exclude and scope["path"].startswith(self._exclude)):
            await self.app(scope, receive, send)
            return
        engine = self.engine
        cookie: str | None = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                text = value.decode("latin-1")
                cookie = text if cookie is None else f"{cookie}; {text}"
        if cookie is None:  # the common case: no session yet, so nothing to load or lock
            incoming, lock, record = NO_COOKIE, None, None
        else:
            incoming = engine.begin(cookie)
            lock = engine.lock_plan(incoming)
            record = None
            if incoming.key is not None:
                try:
                    if lock is not None and not await self._acquire(lock):
                        await self._unavailable(scope, send, None)
                        return
                    record = await self.store.load(incoming.key, engine.touch())
                except StoreUnavailable as exc:
                    await self._release(lock)
                    await self._unavailable(scope, send, exc)
                    return
        session = engine.open(incoming, record)
        scope["session"] = session
        scope[STATE_KEY] = (self, incoming)
        if kind == "websocket":  # read-only: a websocket has no response to carry a cookie
            await self._release(lock)
            await self.app(scope, receive, send)
            return

        replaced = False

        async def send_with_session(message: Message) -> None:
            nonlocal replaced, lock
            if replaced:
                return  # the app's own response was replaced by a 503
            if message["type"] == "http.response.start" and (session.accessed or incoming.presented):
                if session._new:
                    session.user_agent = _user_agent(scope)
                outcome = engine.finish(incoming, session, message["status"])
                try:
                    applied = await self._apply(outcome)
                except StoreUnavailable as exc:
                    replaced = True
                    await self._unavailable(scope, send, exc)
                    return
                finally:
                    await self._release(lock)
                    lock = None
                if outcome.rules is not None:
                    headers = message.get("headers", [])
                    existing = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
                    extra = outcome.headers(applied, existing)
                    if extra:
                        message["headers"] = [*headers, *((n.lower().encode(), v.encode("latin-1")) for n, v in extra)]
            await send(message)

        if lock is None:
            await self.app(scope, receive, send_with_session)
            return
        try:
            await self.app(scope, receive, send_with_session)
        finally:
            await self._release(lock)  # the app failed before its response started

    async def _acquire(self, lock: LockPlan) -> bool:
        for wait in lock.waits:
            if await self.store.acquire_lock(lock.key, lock.owner, lock.lease):  # type: ignore[attr-defined]
                return True
            await asyncio.sleep(wait)
        return bool(await self.store.acquire_lock(lock.key, lock.owner, lock.lease))  # type: ignore[attr-defined]

    async def _release(self, lock: LockPlan | None) -> None:
        if lock is None:
            return
        try:
            await self.store.release_lock(lock.key, lock.owner)  # type: ignore[attr-defined]
        except StoreUnavailable:
            log.warning("could not release a session lock; its lease will end it")

    async def _apply(self, outcome: Outcome) -> bool:
        if outcome.delete is not None:
            await self.store.delete(outcome.delete)
        if outcome.write is not None:
            return await self.store.write(outcome.write)
        return True

    async def _unavailable(self, scope: Scope, send: Send, exc: Exception | None) -> None:
        """503: the store is down (``exc``) or, with ``exc=None``, the session stayed locked."""
        if exc is not None:
            log.warning("session store unavailable: %s", exc)
        body = UNAVAILABLE_BODY if exc is not None else BUSY_BODY
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "session unavailable"})
            return
        headers = [(n.lower().encode(), v.encode()) for n, v in unavailable_headers(self.config, body)]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def session_of(request: Any) -> Session:
    """``request.session`` typed as our ``Session`` (Starlette types it as a plain dict)."""
    scope = request.scope if hasattr(request, "scope") else request
    session = scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError("session_mw.asgi.SessionMiddleware must be installed to use the session")
    return session


def session_manager(request: Any) -> AsyncSessionManager:
    """The per-user session operations for this request (list, revoke, revoke_all)."""
    scope = request.scope if hasattr(request, "scope") else request
    try:
        middleware, incoming = scope[STATE_KEY]
    except KeyError:
        raise RuntimeError("session_mw.asgi.SessionMiddleware must be installed to manage sessions") from None
    return AsyncSessionManager(middleware.store, middleware.engine.touch, scope["session"], incoming)


def _user_agent(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"user-agent":
            return str(value.decode("latin-1"))
    return ""


__all__ = ["Session", "SessionMiddleware", "session_manager"]
