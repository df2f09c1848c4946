"""session_mw: server-side sessions for ASGI and WSGI apps, secure by default."""

from .asgi import SessionMiddleware, session_manager, session_of
from .config import SessionConfig
from .engine import Engine
from .errors import ConfigError, SessionConflict, SessionError, StoreError, StoreUnavailable
from .manage import AsyncSessionManager, SessionInfo, SessionManager
from .session import Session

__all__ = [
    "AsyncSessionManager",
    "ConfigError",
    "Engine",
    "Session",
    "SessionConfig",
    "SessionConflict",
    "SessionError",
    "SessionInfo",
    "SessionManager",
    "SessionMiddleware",
    "StoreError",
    "StoreUnavailable",
    "session_manager",
    "session_of",
]
__version__ = "0.1.0"
