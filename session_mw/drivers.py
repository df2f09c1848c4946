"""The drivers: they carry the engine's plans to a store, one per I/O model.

``SyncDriver`` (WSGI, Flask, the CLI) and ``AsyncDriver`` (ASGI) are, with the per-request
session managers built on them and the two loops in ``stepping``, the only code written
once for blocking and once for asyncio I/O. Every decision lives in the plans they run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from .engine import Exchange, Pause
from .errors import ConfigError
from .manage import SessionInfo, Sessions
from .stepping import Plan, run, run_async
from .stores.base import LOCKS, AsyncStore, Check, Close, Store

T = TypeVar("T")
#: Where a door leaves ``(driver, exchange)`` in the request's scope or environ, for ``request_manager``.
STATE_KEY = "session_mw"


def _need_locks(store: Store | AsyncStore, locking: bool) -> None:
    if locking and LOCKS not in store.capabilities:
        raise ConfigError(f"locking=True needs a store with locks; {type(store).__name__} has none")


class SyncDriver:
    """Runs plans against a blocking ``Store``."""

    def __init__(self, store: Store, *, locking: bool = False) -> None:
        _need_locks(store, locking)
        self.store = store

    def run(self, plan: Plan[T]) -> T:
        return run(plan, self._perform)

    def _perform(self, step: Any) -> Any:
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            return None
        return self.store.execute(step)

    def check(self) -> None:
        self.store.execute(Check())

    def close(self) -> None:
        self.store.execute(Close())


class AsyncDriver:
    """Runs plans against an ``AsyncStore``."""

    def __init__(self, store: AsyncStore, *, locking: bool = False) -> None:
        _need_locks(store, locking)
        self.store = store

    async def run(self, plan: Plan[T]) -> T:
        return await run_async(plan, self._perform)

    async def _perform(self, step: Any) -> Any:
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        return await self.store.execute(step)

    async def check(self) -> None:
        await self.store.execute(Check())

    async def close(self) -> None:
        await self.store.execute(Close())


class SessionManager:
    """The current user's sessions, for a blocking app: list them, revoke one, revoke all."""

    def __init__(self, driver: SyncDriver, sessions: Sessions) -> None:
        self._driver = driver
        self._sessions = sessions

    def list(self, user_id: str | None = None) -> list[SessionInfo]:
        return self._driver.run(self._sessions.listing(user_id))

    def revoke(self, session_id: str) -> bool:
        """End one of the current user's sessions by its ``SessionInfo.id``; False if it is not one."""
        return self._driver.run(self._sessions.revoking(session_id))

    def revoke_all(self, user_id: str | None = None, *, except_current: bool = False) -> int:
        return self._driver.run(self._sessions.revoking_all(user_id, except_current))


class AsyncSessionManager:
    """The asyncio face of ``SessionManager``."""

    def __init__(self, driver: AsyncDriver, sessions: Sessions) -> None:
        self._driver = driver
        self._sessions = sessions

    async def list(self, user_id: str | None = None) -> list[SessionInfo]:
        return await self._driver.run(self._sessions.listing(user_id))

    async def revoke(self, session_id: str) -> bool:
        return await self._driver.run(self._sessions.revoking(session_id))

    async def revoke_all(self, user_id: str | None = None, *, except_current: bool = False) -> int:
        return await self._driver.run(self._sessions.revoking_all(user_id, except_current))


_Manager = TypeVar("_Manager", SessionManager, AsyncSessionManager)


def request_manager(kind: type[_Manager], state: Mapping[str, Any], missing: str, *, admin: bool = False) -> _Manager:
    """The session manager of one request, from the ``(driver, exchange)`` its door left at ``STATE_KEY``.

    ``missing`` is the ``RuntimeError`` message when no door did (the middleware is not installed).
    ``admin``: bound to no user, for an operator's page (``list(user_id)``, ``revoke_all(user_id)``
    of any user; its revocations are ``revoked_by_admin`` events). The app decides who may use it.
    """
    try:
        driver, exchange = state[STATE_KEY]
    except KeyError:
        raise RuntimeError(missing) from None
    assert isinstance(exchange, Exchange)
    if admin:
        return kind(driver, Sessions(exchange.engine.lifetime, None, exchange.engine.events))
    return kind(driver, Sessions(exchange.engine.lifetime, exchange))


__all__ = ["STATE_KEY", "AsyncDriver", "AsyncSessionManager", "SessionManager", "SyncDriver", "request_manager"]
