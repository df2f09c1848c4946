"""FastAPI dependencies: the typed session and the per-user session manager.

    from session_mw.contrib.fastapi import CurrentSession, SessionControl

    @app.post("/login")
    async def login(session: CurrentSession) -> dict[str, bool]:
        session.user_id = "alice"   # regenerates the session id
        return {"ok": True}

Settings: ``SessionConfig.from_env()``, or from a pydantic-settings object whose fields use
the same names (``session_mw_idle_timeout: int = 1800``) with
``SessionConfig.from_mapping(settings.model_dump())``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

try:
    from fastapi import Depends, HTTPException, Request
except ImportError as exc:
    raise ImportError("session_mw.contrib.fastapi needs FastAPI: pip install 'session_mw[fastapi]'") from exc

from ..asgi import load_session, session_manager, session_of
from ..drivers import AsyncSessionManager
from ..engine import reauth_refusal
from ..session import Session


def get_session(request: Request) -> Session:
    return session_of(request)


def get_session_manager(request: Request) -> AsyncSessionManager:
    return session_manager(request)


def recent_auth(max_age: float) -> Callable[[Request], Session]:
    """A dependency for sensitive actions: 401 when no user is logged in, 403 when the last proof
    of a credential is older than ``max_age`` seconds; otherwise the session.

        @app.post("/password", dependencies=[Depends(recent_auth(300))])
    """

    def dependency(request: Request) -> Session:
        session = session_of(request)
        refusal = reauth_refusal(session, max_age)
        if refusal is not None:
            status, reason = refusal
            raise HTTPException(status, reason.strip(), headers={"Cache-Control": "no-store"})
        return session

    return dependency


async def get_loaded_session(request: Request) -> Session:
    """The session, loaded first (with ``lazy_load``, the one way a handler gets it)."""
    return await load_session(request)


CurrentSession = Annotated[Session, Depends(get_session)]
LoadedSession = Annotated[Session, Depends(get_loaded_session)]
SessionControl = Annotated[AsyncSessionManager, Depends(get_session_manager)]

__all__ = [
    "CurrentSession",
    "LoadedSession",
    "SessionControl",
    "get_loaded_session",
    "get_session",
    "get_session_manager",
    "recent_auth",
]
