"""Pure ASGI middleware (Starlette, FastAPI, any ASGI app).

The session lives in ``scope["session"]``, so Starlette's ``request.session`` works as is.
The store is read once, before the app runs, and only when the request carries a cookie
shaped like one of our tokens; it is written once, when the response starts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import SessionConfig
from .engine import UNAVAILABLE_BODY, Engine, Outcome, unavailable_headers
from .errors import StoreUnavailable
from .manage import AsyncSessionManager
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
MANAGER_KEY = "session_mw.manager"


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or (self._exclude and scope["path"].startswith(self._exclude)):
            await self.app(scope, receive, send)
            return
        engine = self.engine
        cookie: str | None = None
        user_agent = ""
        for name, value in scope["headers"]:
            if name == b"cookie":
                text = value.decode("latin-1")
                cookie = text if cookie is None else f"{cookie}; {text}"
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        incoming = engine.begin(cookie)
        record = None
        if incoming.key is not None:
            try:
                record = await self.store.load(incoming.key, engine.touch())
            except StoreUnavailable as exc:
                await self._unavailable(scope, send, exc)
                return
        session = engine.open(incoming, record, user_agent)
        scope["session"] = session
        scope[MANAGER_KEY] = AsyncSessionManager(self.store, engine.touch, session, incoming)
        if kind == "websocket":  # read-only: a websocket has no response to carry a cookie
            await self.app(scope, receive, send)
            return

        replaced = False

        async def send_with_session(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the app's own response was replaced by a 503
            if message["type"] == "http.response.start":
                outcome = engine.finish(incoming, session, message["status"])
                try:
                    applied = await self._apply(outcome)
                except StoreUnavailable as exc:
                    replaced = True
                    await self._unavailable(scope, send, exc)
                    return
                if outcome.rules is not None:
                    headers = message.get("headers", [])
                    existing = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
                    extra = outcome.headers(applied, existing)
                    if extra:
                        message["headers"] = [*headers, *((n.lower().encode(), v.encode("latin-1")) for n, v in extra)]
            await send(message)

        await self.app(scope, receive, send_with_session)

    async def _apply(self, outcome: Outcome) -> bool:
        if outcome.delete is not None:
            await self.store.delete(outcome.delete)
        if outcome.write is not None:
            return await self.store.write(outcome.write)
        return True

    async def _unavailable(self, scope: Scope, send: Send, exc: Exception) -> None:
        log.warning("session store unavailable: %s", exc)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "session store unavailable"})
            return
        headers = [(n.lower().encode(), v.encode()) for n, v in unavailable_headers(self.config)]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})


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
        manager: AsyncSessionManager = scope[MANAGER_KEY]
    except KeyError:
        raise RuntimeError("session_mw.asgi.SessionMiddleware must be installed to manage sessions") from None
    return manager


__all__ = ["Session", "SessionMiddleware", "session_manager"]
