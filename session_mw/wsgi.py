"""WSGI middleware (Werkzeug, Flask, any WSGI app).

The session is in ``environ["session_mw.session"]`` and loads lazily: the store is read the
first time the app uses the session, never for requests that don't. The store is written,
and the headers added, when the app calls ``start_response``: the same plans as the ASGI
door, run by ``SyncDriver``. The store is checked when the middleware is built.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .config import SessionConfig
from .csrf import MAX_FORM_BODY, form_field, is_form
from .drivers import STATE_KEY, SessionManager, SyncDriver, request_manager
from .engine import SAFE_METHODS, Answer, Engine, Exchange
from .errors import SessionError
from .events import Listener
from .session import Session
from .stores import open_store
from .stores.base import Store

log = logging.getLogger("session_mw")

SESSION_KEY = "session_mw.session"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class WSGISessionMiddleware:
    """Server-side sessions for a WSGI app: ``app.wsgi_app = WSGISessionMiddleware(app.wsgi_app, config)``."""

    def __init__(
        self,
        app: WSGIApp,
        config: SessionConfig | None = None,
        *,
        store: Store | None = None,
        engine: Engine | None = None,
        check: bool = True,
        listeners: Iterable[Listener] = (),
        account_active: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.config = config = config or SessionConfig()
        self.engine = engine or Engine(config, listeners=listeners, account_active=account_active)
        self.store = store if store is not None else open_store(config)
        self.driver = SyncDriver(self.store, locking=config.locking)
        self._exclude = config.exclude_paths
        engine_config = self.engine.config
        token_header, forwarded = self.engine.token_header, engine_config.client_ip_header
        self._token_key = _environ_key(token_header) if token_header else None
        self._forwarded_key = _environ_key(forwarded) if forwarded else None
        self._csrf = engine_config.csrf_protect
        self._csrf_key = _environ_key(engine_config.csrf_header)
        if check:
            self.driver.check()  # a store that cannot work at all fails here, not on the first request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._exclude and environ.get("PATH_INFO", "").startswith(self._exclude):
            environ[SESSION_KEY] = self.engine.session_class()  # empty, never loaded, never saved
            return self.app(environ, start_response)
        exchange = self.open(environ)
        driver = self.driver
        if self._csrf and environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS:
            try:
                refusal = self._csrf_check(environ, exchange)
            except SessionError as exc:  # the load the check needed failed
                refusal = self.engine.answer_for(exc, report=exc is not exchange.failure)
                if refusal is None:
                    raise
            if refusal is not None:
                driver.run(exchange.releasing())
                start_response(refusal.status_line, refusal.headers)
                return [refusal.body]
        replaced: list[Answer] = []
        started: list[bool] = []

        def start_with_session(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Any:
            started.append(True)
            if exchange.untouched:
                return start_response(status, headers, exc_info)
            result = driver.run(exchange.closing(int(status[:3]), headers))
            if isinstance(result, Answer):
                replaced.append(result)
                start_response(result.status_line, result.headers, exc_info)
                return _discard
            return start_response(status, result, exc_info)

        try:
            body = self.app(environ, start_with_session)
        except SessionError as exc:  # raised inside the app: the lazy load, a manager call
            driver.run(exchange.releasing())
            answer = self.engine.answer_for(exc, report=exc is not exchange.failure)
            if answer is None:
                raise
            start_response(answer.status_line, answer.headers, sys.exc_info() if started else None)
            return [answer.body]
        except BaseException:
            driver.run(exchange.releasing())
            raise
        if started and not replaced and not exchange.holds_lock:
            return body  # the usual case: headers decided, the body passes through untouched

        def failed(exc: SessionError) -> bytes | None:
            """The session failed while the body was being produced (a generator app)."""
            answer = self.engine.answer_for(exc, report=exc is not exchange.failure)
            if answer is None:
                return None
            start_response(answer.status_line, answer.headers, sys.exc_info() if started else None)
            return answer.body

        return _Body(body, replaced, lambda: driver.run(exchange.releasing()), failed)

    def open(self, environ: dict[str, Any], *, lock: bool = True) -> Exchange:
        """The request's exchange, its session in ``environ``, loaded on first use.

        ``lock=False``: a read-only look (Flask outside the middleware) never takes the session lock.
        """
        cookie = environ.get("HTTP_COOKIE")
        path = None
        if cookie and self.engine.cookies.scoped:  # the path the browser asked for
            path = _decoded(environ.get("SCRIPT_NAME", "")) + _decoded(environ.get("PATH_INFO", ""))
        if self.engine.insecure:  # Secure off: warn once if this is not localhost
            self.engine.insecure_host(environ.get("HTTP_HOST") or environ.get("SERVER_NAME"))
        exchange = self.engine.exchange(
            cookie,
            environ.get("HTTP_USER_AGENT", ""),
            path,
            client=environ.get("REMOTE_ADDR", ""),
            forwarded=environ.get(self._forwarded_key) if self._forwarded_key else None,
            header_value=environ.get(self._token_key) if self._token_key else None,
        )
        exchange.defer(lambda ex: self._load(ex, lock=lock))
        environ[SESSION_KEY] = exchange.session
        environ[STATE_KEY] = (self.driver, exchange)
        return exchange

    def _csrf_check(self, environ: dict[str, Any], exchange: Exchange) -> Answer | None:
        """The CSRF check of an unsafe request (loading the session if it must), before the app runs.

        A form read for its token field is put back as ``wsgi.input``, for the app to read again.
        """
        config = self.engine.config
        method = environ["REQUEST_METHOD"]
        origin, fetch_site = environ.get("HTTP_ORIGIN"), environ.get("HTTP_SEC_FETCH_SITE")
        scheme = environ.get("wsgi.url_scheme", "http")
        if exchange.csrf_refuses_origin(method, origin, fetch_site, environ.get("HTTP_HOST"), scheme):
            return self.engine.csrf_refused  # before any store read
        if exchange.needs_load and exchange.session.pending:
            exchange.session.mark_accessed()  # the check needs to know whether a live session came
        if not exchange.csrf_needs_token(method, origin, fetch_site):
            return None
        submitted = environ.get(self._csrf_key)
        content_type = environ.get("CONTENT_TYPE")
        if submitted is None and is_form(content_type):
            assert content_type is not None
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if 0 <= length <= MAX_FORM_BODY:
                body = environ["wsgi.input"].read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(body)
                submitted = form_field(body, content_type, config.csrf_field)
        return exchange.csrf_answer(submitted)

    def _load(self, exchange: Exchange, *, lock: bool = True) -> None:
        if self.driver.run(exchange.opening(lock=lock)) is not None:
            assert exchange.failure is not None
            raise exchange.failure  # the door (or Flask's error handler) answers it


def _environ_key(header: str) -> str:
    """Where PEP 3333 puts a request header: ``X-CSRF-Token`` is ``HTTP_X_CSRF_TOKEN``."""
    return "HTTP_" + header.upper().replace("-", "_")


def _decoded(wsgi_text: str) -> str:
    """PEP 3333 carries the path as latin-1 text of its bytes; the cookie path is compared as UTF-8 text."""
    return wsgi_text.encode("latin-1", "replace").decode("utf-8", "replace")


def _discard(data: bytes) -> None:
    return None


class _Body:
    """The app's body, passed through; replaced by our answer's when the response became one."""

    __slots__ = ("_body", "_failed", "_on_close", "_replaced")

    def __init__(
        self,
        body: Iterable[bytes],
        replaced: list[Answer],
        on_close: Callable[[], None],
        failed: Callable[[SessionError], bytes | None],
    ) -> None:
        self._body = body
        self._replaced = replaced
        self._on_close = on_close
        self._failed = failed

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                if self._replaced:
                    break
                yield chunk
        except SessionError as exc:
            answer = self._failed(exc)
            if answer is None:
                raise
            yield answer
            return
        if self._replaced:
            yield self._replaced[0].body

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def session_of(environ: dict[str, Any]) -> Session:
    """The session of a WSGI request."""
    try:
        session: Session = environ[SESSION_KEY]
    except KeyError:
        raise RuntimeError("session_mw.wsgi.WSGISessionMiddleware must wrap the app to use the session") from None
    return session


def session_manager(environ: dict[str, Any]) -> SessionManager:
    """The current user's session operations of a WSGI request (list, revoke, revoke_all)."""
    missing = "session_mw.wsgi.WSGISessionMiddleware must wrap the app to manage sessions"
    return request_manager(SessionManager, environ, missing)


def admin_session_manager(environ: dict[str, Any]) -> SessionManager:
    """Any user's sessions, for an operator's page (see ``asgi.admin_session_manager``)."""
    missing = "session_mw.wsgi.WSGISessionMiddleware must wrap the app to manage sessions"
    return request_manager(SessionManager, environ, missing, admin=True)


__all__ = [
    "SESSION_KEY",
    "STATE_KEY",
    "WSGISessionMiddleware",
    "admin_session_manager",
    "session_manager",
    "session_of",
]
