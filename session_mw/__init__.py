"""session_mw: server-side sessions for ASGI and WSGI apps, secure by default."""

from .asgi import SessionMiddleware, admin_session_manager, load_session, session_manager, session_of
from .config import SessionConfig
from .drivers import AsyncSessionManager, SessionManager
from .engine import Engine
from .errors import (
    ConfigError,
    SessionBusy,
    SessionConflict,
    SessionError,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
    ValueNotDecodable,
    ValueNotStorable,
)
from .manage import SessionInfo
from .session import Session

__all__ = [
    "AsyncSessionManager",
    "ConfigError",
    "Engine",
    "Session",
    "SessionBusy",
    "SessionConfig",
    "SessionConflict",
    "SessionError",
    "SessionInfo",
    "SessionManager",
    "SessionMiddleware",
    "SessionTooLarge",
    "StoreError",
    "StoreUnavailable",
    "ValueNotDecodable",
    "ValueNotStorable",
    "admin_session_manager",
    "load_session",
    "session_manager",
    "session_of",
]
__version__ = "0.1.0"
