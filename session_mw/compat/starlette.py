"""Starlette's ``SessionMiddleware`` arguments, server-side sessions underneath.

    # before: from starlette.middleware.sessions import SessionMiddleware
    from session_mw.compat.starlette import SessionMiddleware
    app.add_middleware(SessionMiddleware, secret_key=settings.SECRET_KEY, max_age=14 * 24 * 3600)

From the app's side it behaves as Starlette's: ``request.session`` is a dict, a session lasts
``max_age`` seconds (a persistent cookie), ``path``/``domain``/``same_site``/``partitioned`` mean
the same. The data lives in the store (``store_url``, default the SQLite file), the cookie holds
a random token, and ``secret_key`` keys the store digests. One difference by design: Secure
stays on unless the app passes ``https_only=False`` itself (Starlette's default is off).
"""

from __future__ import annotations

from typing import Any, Literal

from ..asgi import ASGIApp
from ..asgi import SessionMiddleware as _ServerSide
from ..config import SessionConfig
from ..stores.base import AsyncStore

STARLETTE_MAX_AGE = 14 * 24 * 60 * 60


class SessionMiddleware(_ServerSide):
    """``starlette.middleware.sessions.SessionMiddleware``'s constructor. The other settings come
    from ``config`` (default: ``SessionConfig.from_env()``); Starlette's arguments take precedence."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | None = None,
        session_cookie: str = "session",
        max_age: int | None = STARLETTE_MAX_AGE,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool | None = None,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: AsyncStore | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        mapped: dict[str, Any] = {
            "cookie_name": session_cookie,
            "cookie_path": path,
            "cookie_samesite": same_site,
            "cookie_domain": domain,
            "cookie_partitioned": partitioned,
        }
        if secret_key:
            mapped["digest_key"] = str(secret_key)
        if https_only is not None:
            mapped["cookie_secure"] = https_only
        if max_age:  # Starlette: the session lasts max_age whatever the activity, in a persistent cookie
            mapped.update(absolute_timeout=max_age, idle_timeout=max_age, remember_default=True)
        base = config if config is not None else SessionConfig.from_env()
        super().__init__(app, base.replace(**mapped), store=store)


__all__ = ["SessionMiddleware"]
