"""Flask: ``flask.session`` becomes the server-side session.

    app = Flask(__name__)
    app.config.from_prefixed_env()      # SESSION_MW_* from the environment, or set keys directly
    FlaskSessions(app)                  # or ext = FlaskSessions(); ext.init_app(app)

The extension wraps ``app.wsgi_app`` in the WSGI middleware, so Flask goes through exactly the
same door as any WSGI app; its ``SessionInterface`` only hands Flask the middleware's session.
``SECRET_KEY`` is not needed: nothing is signed, the cookie holds a random token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, current_app
from flask import request as flask_request
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin

from ..config import SessionConfig
from ..engine import BUSY_BODY, UNAVAILABLE_BODY, Engine, unavailable_headers
from ..errors import SessionConflict, StoreUnavailable
from ..manage import SessionManager
from ..session import Session
from ..stores import open_store
from ..stores.base import Store
from ..wsgi import SESSION_KEY, WSGISessionMiddleware
from ..wsgi import session_manager as _environ_manager

_FLASK_LIFETIME_DEFAULT = timedelta(days=31)
_DEFAULT_IDLE: int = next(f.default for f in fields(SessionConfig) if f.name == "idle_timeout")  # type: ignore[assignment]


class FlaskSession(Session, SessionMixin):
    """Our ``Session`` with Flask's vocabulary: ``permanent`` is ``remember``."""

    @property
    def permanent(self) -> bool:
        return self.remember

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.remember = value


class FlaskSerializer:
    """Flask's tagged JSON, so ``Markup`` flashes, tuples, bytes and datetimes come back as they went in.

    Plain values (str, numbers, lists, dicts) encode exactly as in the ASGI door, so a FastAPI and
    a Flask app can share sessions on one store.
    """

    def __init__(self) -> None:
        self._tagged = TaggedJSONSerializer()

    def dumps(self, value: Any) -> bytes:
        return self._tagged.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        return self._tagged.loads(data.decode())


def config_from_flask(app_config: Mapping[str, Any]) -> SessionConfig:
    """``SESSION_MW_*`` keys first; then Flask's own cookie keys where they were changed from Flask's defaults.

    Flask's ``SESSION_COOKIE_SECURE=False`` default cannot switch Secure off (set
    ``SESSION_MW_COOKIE_SECURE`` for that), and ``SESSION_COOKIE_HTTPONLY`` is ignored: the
    cookie is always HttpOnly.
    """
    flask_keys: dict[str, Any] = {}
    name = app_config.get("SESSION_COOKIE_NAME")
    if name and name != "session":
        flask_keys["cookie_name"] = name
    if app_config.get("SESSION_COOKIE_DOMAIN"):
        flask_keys["cookie_domain"] = app_config["SESSION_COOKIE_DOMAIN"]
    if app_config.get("SESSION_COOKIE_PATH"):
        flask_keys["cookie_path"] = app_config["SESSION_COOKIE_PATH"]
    if app_config.get("SESSION_COOKIE_SAMESITE"):
        flask_keys["cookie_samesite"] = str(app_config["SESSION_COOKIE_SAMESITE"]).lower()
    if app_config.get("SESSION_COOKIE_SECURE") is True:
        flask_keys["cookie_secure"] = True
    lifetime = app_config.get("PERMANENT_SESSION_LIFETIME")
    if lifetime is not None and lifetime != _FLASK_LIFETIME_DEFAULT:
        seconds = int(lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime)
        flask_keys["absolute_timeout"] = seconds
        flask_keys["idle_timeout"] = min(seconds, _DEFAULT_IDLE)
    ours = {k: v for k, v in app_config.items() if isinstance(k, str) and k.startswith("SESSION_MW_")}
    explicit = {k[len("SESSION_MW_") :].lower() for k in ours}
    flask_keys = {k: v for k, v in flask_keys.items() if k not in explicit}
    if "idle_timeout" in flask_keys and "idle_timeout" not in explicit and "absolute_timeout" in explicit:
        del flask_keys["idle_timeout"]
    return SessionConfig.from_mapping(ours, **flask_keys)


class ServerSideSessionInterface(SessionInterface):
    """Hands Flask the session the WSGI middleware opened; the middleware saves it."""

    def __init__(self, middleware: WSGISessionMiddleware) -> None:
        self.middleware = middleware

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        session = request.environ.get(SESSION_KEY)
        if isinstance(session, FlaskSession):
            return session
        # Not through the middleware (app.test_request_context()): a lazy, read-only session.
        engine = self.middleware.engine
        incoming = engine.begin(request.headers.get("Cookie"))
        lazy = engine.lazy(incoming, request.headers.get("User-Agent", ""), self.middleware.store.load)
        assert isinstance(lazy, FlaskSession)
        return lazy

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None  # the middleware writes the store and the cookie when the response starts

    def is_null_session(self, obj: object) -> bool:
        return False


class FlaskSessions:
    """The Flask extension. Settings come from ``app.config`` (see ``config_from_flask``)."""

    def __init__(self, app: Flask | None = None, *, config: SessionConfig | None = None, store: Store | None = None):
        self._config = config
        self._store = store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = self._config or config_from_flask(app.config)
        engine = Engine(config, serializer=FlaskSerializer(), session_class=FlaskSession)
        store = self._store if self._store is not None else open_store(config)
        middleware = WSGISessionMiddleware(app.wsgi_app, config, store=store, engine=engine)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = ServerSideSessionInterface(middleware)
        app.register_error_handler(StoreUnavailable, _store_unavailable)
        app.register_error_handler(SessionConflict, _store_unavailable)
        app.extensions["session_mw"] = middleware


def _store_unavailable(exc: Exception) -> Response:
    config: SessionConfig = current_app.extensions["session_mw"].config
    body = UNAVAILABLE_BODY if isinstance(exc, StoreUnavailable) else BUSY_BODY
    return Response(body, 503, headers=unavailable_headers(config, body))


def session_manager() -> SessionManager:
    """The per-user session operations of the current Flask request (list, revoke, revoke_all)."""
    return _environ_manager(flask_request.environ)


def current_session() -> FlaskSession:
    """``flask.session`` typed as our session (for ``user_id``, ``regenerate()``, ``invalidate()``)."""
    from flask import session

    obj = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(obj, FlaskSession):
        raise RuntimeError("FlaskSessions must be initialised on this app to use the server-side session")
    return obj


__all__ = [
    "FlaskSession",
    "FlaskSessions",
    "ServerSideSessionInterface",
    "config_from_flask",
    "current_session",
    "session_manager",
]
