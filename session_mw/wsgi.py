"""WSGI middleware (Werkzeug, Flask, any WSGI app).

The session is in ``environ["session_mw.session"]`` and loads lazily: the store is read the
first time the app uses the session, never for requests that don't. The store is written,
and the headers added, when the app calls ``start_response``, the same decisions as the ASGI
door, made by the same engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from .config import SessionConfig
from .engine import BUSY_BODY, UNAVAILABLE_BODY, Engine, LockPlan, Outcome, unavailable_headers
from .errors import ConfigError, SessionConflict, StoreUnavailable
from .manage import SessionManager
from .session import Session
from .stores import open_store
from .stores.base import LockingStore, Record, Store, Touch

log = logging.getLogger("session_mw")

SESSION_KEY = "session_mw.session"
STATE_KEY = "session_mw"  # (middleware, incoming): what session_manager() needs, built only on demand

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
    ) -> None:
        self.app = app
        self.config = config = config or SessionConfig()
        self.engine = engine or Engine(config)
        self.store = store if store is not None else open_store(config)
        self._exclude = config.exclude_paths
        if config.locking and not isinstance(self.store, LockingStore):
            raise ConfigError(f"locking=True needs a store with locks; {type(self.store).__name__} has none")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._exclude and environ.get("PATH_INFO", "").startswith(self._exclude):
            return self.app(environ, start_response)
        engine = self.engine
        incoming = engine.begin(environ.get("HTTP_COOKIE"))
        lock = engine.lock_plan(incoming)
        held: list[LockPlan] = []
        load = self.store.load
        if lock is not None:

            def load(key: str, touch: Touch) -> Record | None:  # the lock first, then the load
                if not self._acquire(lock):
                    raise SessionConflict("the session stayed locked by another request")
                held.append(lock)
                return self.store.load(key, touch)

        session = engine.lazy(incoming, environ.get("HTTP_USER_AGENT", ""), load)
        environ[SESSION_KEY] = session
        environ[STATE_KEY] = (self, incoming)
        state: list[bool] = []  # [replaced] once start_response has run

        def start_with_session(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Any:
            outcome = engine.finish(incoming, session, int(status[:3]))
            try:
                applied = self._apply(outcome)
            except StoreUnavailable as exc:
                log.warning("session store unavailable: %s", exc)
                state.append(True)
                start_response("503 Service Unavailable", unavailable_headers(self.config), exc_info)
                return _discard
            finally:
                self._release(held)
            state.append(False)
            if outcome.rules is not None:
                headers = headers + outcome.headers(applied, headers)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_with_session)
        except (StoreUnavailable, SessionConflict) as exc:  # the lazy load failed inside the app
            self._release(held)
            unavailable = isinstance(exc, StoreUnavailable)
            if unavailable:
                log.warning("session store unavailable: %s", exc)
            reply = UNAVAILABLE_BODY if unavailable else BUSY_BODY
            start_response("503 Service Unavailable", unavailable_headers(self.config, reply), None)
            return [reply]
        except BaseException:
            self._release(held)
            raise
        if state == [False]:
            return body  # the usual case: headers decided, body passes through untouched
        return _Body(body, state, lambda: self._release(held))

    def _acquire(self, lock: LockPlan) -> bool:
        acquire = self.store.acquire_lock  # type: ignore[attr-defined]
        for wait in lock.waits:
            if acquire(lock.key, lock.owner, lock.lease):
                return True
            time.sleep(wait)
        return bool(acquire(lock.key, lock.owner, lock.lease))

    def _release(self, held: list[LockPlan]) -> None:
        while held:
            lock = held.pop()
            try:
                self.store.release_lock(lock.key, lock.owner)  # type: ignore[attr-defined]
            except StoreUnavailable:
                log.warning("could not release a session lock; its lease will end it")

    def _apply(self, outcome: Outcome) -> bool:
        if outcome.delete is not None:
            self.store.delete(outcome.delete)
        if outcome.write is not None:
            return self.store.write(outcome.write)
        return True


def _discard(data: bytes) -> None:
    return None


class _Body:
    """The body of an app that started its response late, or whose response became a 503."""

    def __init__(self, body: Iterable[bytes], state: list[bool], on_close: Callable[[], None]) -> None:
        self._body = body
        self._state = state
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            if self._state == [True]:
                break
            yield chunk
        if self._state == [True]:
            yield UNAVAILABLE_BODY

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
    """The per-user session operations of a WSGI request (list, revoke, revoke_all)."""
    try:
        middleware, incoming = environ[STATE_KEY]
    except KeyError:
        raise RuntimeError("session_mw.wsgi.WSGISessionMiddleware must wrap the app to manage sessions") from None
    return SessionManager(middleware.store, middleware.engine.touch, environ[SESSION_KEY], incoming)


__all__ = ["SESSION_KEY", "WSGISessionMiddleware", "session_manager", "session_of"]
