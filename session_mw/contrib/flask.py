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

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

try:
    from flask import Flask, Request, Response, current_app
    from flask import request as flask_request
    from flask.sessions import SessionInterface, SessionMixin
except ImportError as exc:
    raise ImportError("session_mw.contrib.flask needs Flask: pip install 'session_mw[flask]'") from exc

from ..config import DEFAULTS, SessionConfig, warn_weaker
from ..drivers import SessionManager
from ..engine import Answer, Engine, Exchange, reauth_refusal
from ..errors import SessionBusy, SessionError, StoreUnavailable
from ..events import Listener
from ..session import Session
from ..stores import open_store, sealed_as_configured
from ..stores.base import Store
from ..wsgi import SESSION_KEY, STATE_KEY, WSGISessionMiddleware
from ..wsgi import admin_session_manager as _environ_admin_manager
from ..wsgi import session_manager as _environ_manager
from .flask_serializer import FlaskSerializer

P = ParamSpec("P")
T = TypeVar("T")

_FLASK_LIFETIME_DEFAULT = timedelta(days=31)
log = logging.getLogger("session_mw")
#: Flask-Session settings with no equivalent, and why.
_STORE_IS_OURS = "the store is SESSION_MW_STORE_URL"
_WITHOUT_MEANING: dict[str, str] = {
    "SESSION_TYPE": _STORE_IS_OURS,
    "SESSION_REDIS": f"{_STORE_IS_OURS} (redis://...)",
    "SESSION_USE_SIGNER": "the cookie is a random token: there is nothing to sign",
    "SESSION_REFRESH_EACH_REQUEST": "reads never rewrite a session; the idle expiry is refreshed by throttled touches",
    "SESSION_SERIALIZATION_FORMAT": "values are always JSON",
    "SESSION_CLEANUP_N_REQUESTS": "stores collect expired sessions themselves",
    **dict.fromkeys(
        (
            "SESSION_FILE_DIR",
            "SESSION_FILE_THRESHOLD",
            "SESSION_FILE_MODE",
            "SESSION_MEMCACHED",
            "SESSION_CACHELIB",
            "SESSION_SQLALCHEMY",
            "SESSION_SQLALCHEMY_TABLE",
            "SESSION_SQLALCHEMY_SEQUENCE",
            "SESSION_SQLALCHEMY_SCHEMA",
            "SESSION_SQLALCHEMY_BIND_KEY",
            "SESSION_MONGODB",
            "SESSION_MONGODB_DB",
            "SESSION_MONGODB_COLLECT",
            "SESSION_DYNAMODB",
            "SESSION_DYNAMODB_TABLE",
        ),
        _STORE_IS_OURS,
    ),
}
#: Flask-Session's defaults (an app that spells one out changed nothing) and Flask's own
#: (SESSION_REFRESH_EACH_REQUEST is in every app's config).
_UNCHANGED: dict[str, Any] = {
    "SESSION_TYPE": "null",
    "SESSION_USE_SIGNER": False,
    "SESSION_SERIALIZATION_FORMAT": "msgpack",
    "SESSION_REFRESH_EACH_REQUEST": True,
    "SESSION_FILE_THRESHOLD": 500,
    "SESSION_FILE_MODE": 0o600,
    "SESSION_MONGODB_DB": "flask_session",
    "SESSION_MONGODB_COLLECT": "sessions",
    "SESSION_SQLALCHEMY_TABLE": "sessions",
    "SESSION_DYNAMODB_TABLE": "Sessions",
}
_PREFIX = "SESSION_MW_"


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

    @property
    def sid(self) -> str | None:
        """Flask-Session's name, for code that logs or keys by it: our opaque ``public_id``.
        Flask-Session's ``sid`` was the cookie's value; ours never shows the token."""
        return self.public_id


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
    # Flask's cookie path: SESSION_COOKIE_PATH, else APPLICATION_ROOT (an app mounted under a prefix)
    path = app_config.get("SESSION_COOKIE_PATH") or app_config.get("APPLICATION_ROOT")
    if path and path != "/":
        out["cookie_path"] = path
    if app_config.get("SESSION_COOKIE_SAMESITE"):
        out["cookie_samesite"] = samesite = str(app_config["SESSION_COOKIE_SAMESITE"]).lower()
        if samesite == "none":
            warn_weaker(
                "Flask", "SESSION_COOKIE_SAMESITE='None'", "the session cookie is sent with cross-site requests"
            )
    if app_config.get("SESSION_COOKIE_HTTPONLY") is False:
        log.warning("SESSION_COOKIE_HTTPONLY=False is ignored: the session cookie is always HttpOnly")
    if app_config.get("SESSION_COOKIE_SECURE") is True:
        out["cookie_secure"] = True
    if app_config.get("SESSION_COOKIE_PARTITIONED") is True:
        out["cookie_partitioned"] = True
    # Flask-Session's keys: what has a meaning here is mapped, the rest is named once in a warning
    if app_config.get("SESSION_PERMANENT") is not None:
        out["remember_default"] = bool(app_config["SESSION_PERMANENT"])
    if app_config.get("SESSION_KEY_PREFIX"):
        out["key_prefix"] = app_config["SESSION_KEY_PREFIX"]
    if app_config.get("SESSION_ID_LENGTH") is not None:
        out["token_bytes"] = app_config["SESSION_ID_LENGTH"]  # both count random bytes; below 16 is refused
    ignored = {
        k
        for k in _WITHOUT_MEANING.keys() & {k for k in app_config if isinstance(k, str)}
        if app_config[k] is not None and not (k in _UNCHANGED and app_config[k] == _UNCHANGED[k])
    }
    if app_config.get("SESSION_TYPE") == "redis" and app_config.get("SESSION_REDIS") is not None:
        ignored -= {"SESSION_TYPE", "SESSION_REDIS"}  # FlaskSessions uses that Redis as its store
    for key in sorted(ignored):
        log.warning("%s has no meaning for session_mw and is ignored: %s", key, _WITHOUT_MEANING[key])
    lifetime = app_config.get("PERMANENT_SESSION_LIFETIME")
    if lifetime is not None and lifetime != _FLASK_LIFETIME_DEFAULT:
        seconds = int(lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime)
        out["absolute_timeout"] = seconds
        out["idle_timeout"] = min(seconds, DEFAULTS.idle_timeout)
        if seconds > DEFAULTS.absolute_timeout:
            warn_weaker(
                "Flask",
                f"PERMANENT_SESSION_LIFETIME={lifetime}",
                f"sessions last longer than session_mw's default absolute timeout ({DEFAULTS.absolute_timeout:g} s)",
            )
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

    def regenerate(self, session: SessionMixin) -> None:
        """Flask-Session's call for a new session id after a login: the data kept, the old id dead."""
        if not isinstance(session, Session):
            raise TypeError("not a session of FlaskSessions")
        session.regenerate()


class FlaskSessions:
    """The Flask extension. Settings come from ``app.config`` (see ``config_from_flask``)."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        config: SessionConfig | None = None,
        store: Store | None = None,
        listeners: Iterable[Listener] = (),
        account_active: Callable[[str], bool] | None = None,
    ):
        self._config = config
        self._store = store
        self._listeners = tuple(listeners)
        self._account_active = account_active
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = self._config or config_from_flask(app.config)
        engine = Engine(
            config,
            serializer=FlaskSerializer(),
            session_class=FlaskSession,
            listeners=self._listeners,
            account_active=self._account_active,
        )
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

        return sealed_as_configured(RedisStore(client, config.key_prefix), config)
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


def admin_session_manager() -> SessionManager:
    """Any user's sessions, for an operator's view of the current Flask request (see
    ``session_mw.asgi.admin_session_manager``): the app decides who may use it."""
    return _environ_admin_manager(flask_request.environ)


def recent_auth_required(max_age: float) -> Callable[[Callable[P, T]], Callable[P, T | Response]]:
    """A view decorator for sensitive actions: 401 when no user is logged in, 403 when the last
    proof of a credential is older than ``max_age`` seconds (``session.reauthenticated()`` after
    asking for the password again clears it). The same answers as the FastAPI dependency."""

    def decorate(view: Callable[P, T]) -> Callable[P, T | Response]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T | Response:
            refusal = reauth_refusal(current_session(), max_age)
            if refusal is not None:
                status, reason = refusal
                return Response(reason, status, {"Cache-Control": "no-store"}, content_type="text/plain")
            return view(*args, **kwargs)

        return guarded

    return decorate


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
    "admin_session_manager",
    "config_from_flask",
    "current_session",
    "recent_auth_required",
    "session_manager",
]
