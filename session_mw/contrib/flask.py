"""Flask: ``flask.session`` becomes the server-side session.

    app = Flask(__name__)
    app.config["SESSION_MW_IDLE_TIMEOUT"] = 600   # settings in app.config, any way Flask loads them
    FlaskSessions(app)                            # or ext = FlaskSessions(); ext.init_app(app)

Settings, highest first: ``SESSION_MW_*`` keys of ``app.config`` (``app.config.from_prefixed_env()``
puts ``FLASK_SESSION_MW_*`` variables there), then ``SESSION_MW_*`` environment variables, then
Flask's own cookie keys where the app changed them, then session_mw's defaults.

The extension wraps ``app.wsgi_app`` in the WSGI middleware, so Flask goes through exactly the
same door as any WSGI app; its ``SessionInterface`` only hands Flask the middleware's session.
``SECRET_KEY`` is not needed: nothing is signed, the cookie holds a random token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from datetime import timedelta
from typing import Any, cast

try:
    from flask import Flask, Request, Response, current_app
    from flask import request as flask_request
    from flask.sessions import SessionInterface, SessionMixin
except ImportError as exc:
    raise ImportError("session_mw.contrib.flask needs Flask: pip install 'session_mw[flask]'") from exc

from ..config import SessionConfig
from ..drivers import SessionManager
from ..engine import Answer, Engine, Exchange
from ..errors import SessionBusy, SessionError, StoreUnavailable
from ..session import Session
from ..stores import open_store
from ..stores.base import Store
from ..wsgi import SESSION_KEY, STATE_KEY, WSGISessionMiddleware
from ..wsgi import session_manager as _environ_manager
from .flask_serializer import FlaskSerializer

_FLASK_LIFETIME_DEFAULT = timedelta(days=31)
log = logging.getLogger("session_mw")
#: Flask-Session settings with no equivalent, and why.
_WITHOUT_MEANING: dict[str, str] = {
    "SESSION_TYPE": "the store is SESSION_MW_STORE_URL",
    "SESSION_REDIS": "the store is SESSION_MW_STORE_URL (redis://...)",
    "SESSION_USE_SIGNER": "the cookie is a random token: there is nothing to sign",
    "SESSION_REFRESH_EACH_REQUEST": "reads never rewrite a session; the idle expiry is refreshed by throttled touches",
    "SESSION_ID_LENGTH": "tokens are SESSION_MW_TOKEN_BYTES random bytes",
    "SESSION_SERIALIZATION_FORMAT": "values are always JSON",
    "SESSION_CLEANUP_N_REQUESTS": "stores collect expired sessions themselves",
    "SESSION_FILE_DIR": "the store is SESSION_MW_STORE_URL",
    "SESSION_MEMCACHED": "the store is SESSION_MW_STORE_URL",
    "SESSION_SQLALCHEMY": "the store is SESSION_MW_STORE_URL",
    "SESSION_MONGODB": "the store is SESSION_MW_STORE_URL",
}
_PREFIX = "SESSION_MW_"
_DEFAULT_IDLE: float = SessionConfig().idle_timeout


class FlaskSession(Session, SessionMixin):
    """Our ``Session`` with Flask's vocabulary: ``permanent`` is ``remember``."""

    #: Set when Flask opened the session outside the middleware (the test client's
    #: ``session_transaction()``): ``save_session`` then writes it itself.
    standalone_exchange: Exchange | None = None

    @property
    def permanent(self) -> bool:
        return self.remember

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.remember = value


def config_from_flask(app_config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> SessionConfig:
    """Settings, highest first: ``SESSION_MW_*`` keys of ``app_config``; ``SESSION_MW_*`` variables
    of ``environ`` (default: ``os.environ``); Flask's own cookie keys where the app changed them.

    Flask's ``SESSION_COOKIE_SECURE=False`` default cannot switch Secure off (set
    ``SESSION_MW_COOKIE_SECURE`` for that), and ``SESSION_COOKIE_HTTPONLY`` is ignored: the
    cookie is always HttpOnly.
    """
    env = os.environ if environ is None else environ
    layered = _flask_cookie_settings(app_config)
    derived_idle = "idle_timeout" in layered
    known = {f.name for f in fields(SessionConfig)}
    env_names = {k[len(_PREFIX) :].lower() for k in env if k.startswith(_PREFIX)} & known
    if env_names:
        from_env = SessionConfig.from_env(environ=env)
        layered.update({name: getattr(from_env, name) for name in env_names})
    ours = {k: v for k, v in app_config.items() if isinstance(k, str) and k.upper().startswith(_PREFIX)}
    app_names = {k[len(_PREFIX) :].lower() for k in ours}
    layered = {k: v for k, v in layered.items() if k not in app_names}
    explicit = env_names | app_names
    if derived_idle and "idle_timeout" not in explicit and "absolute_timeout" in explicit:
        del layered["idle_timeout"]  # the lifetime was overridden: so is the idle timeout it implied
    return SessionConfig.from_mapping(ours, **layered)


def _flask_cookie_settings(app_config: Mapping[str, Any]) -> dict[str, Any]:
    """Flask's own session keys that mean the same as ours, where they differ from Flask's defaults."""
    out: dict[str, Any] = {}
    name = app_config.get("SESSION_COOKIE_NAME")
    if name and name != "session":
        out["cookie_name"] = name
    if app_config.get("SESSION_COOKIE_DOMAIN"):
        out["cookie_domain"] = app_config["SESSION_COOKIE_DOMAIN"]
    if app_config.get("SESSION_COOKIE_PATH"):
        out["cookie_path"] = app_config["SESSION_COOKIE_PATH"]
    if app_config.get("SESSION_COOKIE_SAMESITE"):
        out["cookie_samesite"] = str(app_config["SESSION_COOKIE_SAMESITE"]).lower()
    if app_config.get("SESSION_COOKIE_SECURE") is True:
        out["cookie_secure"] = True
    if app_config.get("SESSION_COOKIE_PARTITIONED") is True:
        out["cookie_partitioned"] = True
    # Flask-Session's keys: what has a meaning here is mapped, the rest is named once in a warning
    if app_config.get("SESSION_PERMANENT") is not None:
        out["remember_default"] = bool(app_config["SESSION_PERMANENT"])
    if app_config.get("SESSION_KEY_PREFIX"):
        out["key_prefix"] = app_config["SESSION_KEY_PREFIX"]
    ignored = _WITHOUT_MEANING.keys() & {k for k in app_config if isinstance(k, str)}
    if app_config.get("SESSION_TYPE") == "redis" and app_config.get("SESSION_REDIS") is not None:
        ignored -= {"SESSION_TYPE", "SESSION_REDIS"}  # FlaskSessions uses that Redis as its store
    for key in sorted(ignored):
        log.warning("%s has no meaning for session_mw and is ignored: %s", key, _WITHOUT_MEANING[key])
    lifetime = app_config.get("PERMANENT_SESSION_LIFETIME")
    if lifetime is not None and lifetime != _FLASK_LIFETIME_DEFAULT:
        seconds = int(lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime)
        out["absolute_timeout"] = seconds
        out["idle_timeout"] = min(seconds, _DEFAULT_IDLE)
    return out


class ServerSideSessionInterface(SessionInterface):
    """Hands Flask the session the WSGI middleware opened; the middleware saves it."""

    def __init__(self, middleware: WSGISessionMiddleware) -> None:
        self.middleware = middleware

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        session = request.environ.get(SESSION_KEY)
        if isinstance(session, FlaskSession):
            return session
        # Not through the middleware (app.test_request_context(), the test client's
        # session_transaction()): a lazy session that never takes the session lock (nothing would
        # release it); save_session writes it, as Flask's own interface would
        exchange = self.middleware.open(request.environ, lock=False)
        standalone = exchange.session
        assert isinstance(standalone, FlaskSession)
        standalone.standalone_exchange = exchange
        return standalone

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        exchange = getattr(session, "standalone_exchange", None)
        if not isinstance(exchange, Exchange):
            return None  # the middleware writes the store and the cookie when the response starts
        result = self.middleware.driver.run(exchange.closing(response.status_code, list(response.headers.items())))
        if isinstance(result, Answer):
            raise exchange.failure or SessionError("the session could not be saved")
        for name, value in result:
            if name == "Set-Cookie":
                response.headers.add(name, value)
            elif name in ("Vary", "Cache-Control"):
                response.headers[name] = value

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
        store = self._store if self._store is not None else _flask_session_store(app.config, config)
        middleware = WSGISessionMiddleware(app.wsgi_app, config, store=store, engine=engine)
        cast(Any, app).wsgi_app = middleware  # Flask's documented way to add WSGI middleware
        app.session_interface = ServerSideSessionInterface(middleware)
        app.register_error_handler(StoreUnavailable, _session_failure)
        app.register_error_handler(SessionBusy, _session_failure)
        app.extensions["session_mw"] = middleware


def _flask_session_store(app_config: Mapping[str, Any], config: SessionConfig) -> Store:
    """Flask-Session's ``SESSION_TYPE="redis"`` with its ``SESSION_REDIS`` client: the same Redis,
    used by our store (unless ``SESSION_MW_STORE_URL`` names one); otherwise the configured store."""
    client = app_config.get("SESSION_REDIS")
    explicit = any(str(k).upper() == f"{_PREFIX}STORE_URL" for k in app_config) or f"{_PREFIX}STORE_URL" in os.environ
    if app_config.get("SESSION_TYPE") == "redis" and client is not None and not explicit:
        from ..stores.redis import RedisStore

        return RedisStore(client, config.key_prefix)
    return open_store(config)


def _session_failure(exc: SessionError) -> Response:
    """The middleware's answer, as a Flask response: the same status, headers and body as every door's."""
    middleware: WSGISessionMiddleware = current_app.extensions["session_mw"]
    state = flask_request.environ.get(STATE_KEY)
    reported = state is not None and exc is state[1].failure
    answer = middleware.engine.answer_for(exc, report=not reported)
    if answer is None:  # pragma: no cover - only the two registered types reach here
        raise exc
    return Response(answer.body, answer.status, headers=answer.headers)


def session_manager() -> SessionManager:
    """The per-user session operations of the current Flask request (list, revoke, revoke_all)."""
    return _environ_manager(flask_request.environ)


def current_session() -> FlaskSession:
    """``flask.session`` typed as our session (for ``user_id``, ``regenerate()``, ``invalidate()``)."""
    from flask.globals import request_ctx

    obj = request_ctx.session  # the object behind the flask.session proxy
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
