"""Starlette's ``SessionMiddleware`` arguments, server-side sessions underneath.

    # before: from starlette.middleware.sessions import SessionMiddleware
    from session_mw.compat.starlette import SessionMiddleware
    app.add_middleware(SessionMiddleware, secret_key=settings.SECRET_KEY, max_age=14 * 24 * 3600)

From the app's side it behaves as Starlette's: ``request.session`` is a dict, the cookie is
persistent and a session ends ``max_age`` seconds after it began; ``path``, ``domain``,
``same_site`` and ``partitioned`` mean the same. The data lives in the store (``store_url``,
default the SQLite file), the cookie holds a random token, ``secret_key`` keys the store digests.

What the app did not pass keeps session_mw's defaults, not Starlette's: Secure (Starlette's
``https_only`` is off by default), SameSite=Lax, the idle timeout (Starlette has none) and the
absolute timeout in place of Starlette's 14-day ``max_age``. An argument weaker than our
defaults (``https_only=False``, ``same_site="none"``, a ``max_age`` beyond the absolute timeout)
is honoured, with one warning each.
"""

from __future__ import annotations

from typing import Any, Literal

from ..asgi import ASGIApp
from ..asgi import SessionMiddleware as _ServerSide
from ..config import DEFAULTS, SessionConfig, warn_weaker
from ..stores.base import AsyncStore

#: Starlette's own default ``max_age``, for reference: not ours (see the module docstring).
STARLETTE_MAX_AGE = 14 * 24 * 60 * 60


class _Unset:
    def __repr__(self) -> str:
        return "<the absolute timeout>"


_UNSET: Any = _Unset()
_AT_ONCE = 0.001  # seconds: our timeouts are positive


class SessionMiddleware(_ServerSide):
    """``starlette.middleware.sessions.SessionMiddleware``'s constructor. The other settings come
    from ``config`` (default: ``SessionConfig.from_env()``); Starlette's arguments take precedence."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | None = None,
        session_cookie: str | None = None,
        max_age: int | None = _UNSET,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool | None = None,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: AsyncStore | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        base = config if config is not None else SessionConfig.from_env()
        lifetime: int | None = None if max_age is _UNSET else max_age  # what the app passed
        mapped: dict[str, Any] = {
            "cookie_path": path,
            "cookie_samesite": same_site,
            "cookie_domain": domain,
            "cookie_partitioned": partitioned,
            "remember_default": max_age is not None,  # Starlette's cookie is persistent unless max_age=None
        }
        if session_cookie is not None and session_cookie != "session":  # Starlette's default: ours instead
            mapped["cookie_name"] = session_cookie
        if secret_key:
            mapped["digest_key"] = str(secret_key)
        if https_only is not None:
            mapped["cookie_secure"] = https_only
        if lifetime is not None:  # the session ends max_age after it began
            # max_age <= 0 (Starlette's tests use -1): a session that has ended by the next request
            seconds = lifetime if lifetime > 0 else _AT_ONCE
            mapped.update(absolute_timeout=seconds, idle_timeout=min(base.idle_timeout, seconds))
        resolved = base.replace(**mapped)
        source = "compat.starlette.SessionMiddleware"
        if https_only is False:
            warn_weaker(source, "https_only=False", "the session cookie is sent over plain http too (no Secure)")
        if same_site == "none":
            warn_weaker(source, "same_site='none'", "the session cookie is sent with cross-site requests")
        if lifetime is not None and lifetime > DEFAULTS.absolute_timeout:
            warn_weaker(
                source,
                f"max_age={max_age}",
                f"sessions last longer than session_mw's default absolute timeout ({DEFAULTS.absolute_timeout:g} s)",
            )
        super().__init__(app, resolved, store=store)


__all__ = ["SessionMiddleware"]
