"""Store implementations, opened by URL. Backends import their drivers only when used."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import SessionConfig
from ..errors import ConfigError
from .base import AsyncStore, Lifetime, Meta, Record, Store
from .redis_target import SCHEMES as REDIS_SCHEMES

__all__ = ["AsyncStore", "Lifetime", "Meta", "Record", "Store", "open_async_store", "open_store"]


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _redis_options(config: SessionConfig) -> dict[str, Any]:
    return {
        "prefix": config.key_prefix,
        "connect_timeout": config.store_connect_timeout,
        "timeout": config.store_socket_timeout,
        "replica_acks": config.replica_acks,
        "replica_ack_timeout": config.replica_ack_timeout,
        "client_cache": config.client_cache,
        "client_cache_size": config.client_cache_size,
    }


def open_store(config: SessionConfig, *, clock: Callable[[], float] = time.time) -> Store:
    """The sync store named by ``config.store_url`` (the SQLite file is opened on first use).

    ``clock`` is the store's time (tests inject the engine's fake clock). With
    ``config.encryption_keys`` its values are sealed at rest (``sealed.SealedStore``).
    """
    return sealed_as_configured(_open_plain_store(config, clock), config)


def sealed_as_configured(store: Store, config: SessionConfig) -> Store:
    """``store`` with its values sealed at rest when ``config.encryption_keys`` asks for it (for a
    store built elsewhere too: Flask-Session's ``SESSION_REDIS`` client)."""
    if not config.encryption_keys:
        return store
    from .sealed import SealedStore

    return SealedStore(store, config.encryption_keys)


def _open_plain_store(config: SessionConfig, clock: Callable[[], float]) -> Store:
    """The store ``config.store_url`` names, as it is (no encryption at rest)."""
    scheme = _scheme(config.store_url)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(clock)
    if scheme in REDIS_SCHEMES:
        from .redis import RedisStore

        return RedisStore.from_url(config.store_url, **_redis_options(config), clock=clock)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(config.store_url, busy_timeout=config.store_socket_timeout, clock=clock)
    raise ConfigError(f"store_url scheme {scheme!r} is not supported by this version")


def open_async_store(config: SessionConfig, *, clock: Callable[[], float] = time.time) -> AsyncStore:
    """The asyncio store named by ``config.store_url``; sealed at rest as ``open_store``'s."""
    store = _open_plain_async_store(config, clock)
    if not config.encryption_keys:
        return store
    from .sealed import AsyncSealedStore

    return AsyncSealedStore(store, config.encryption_keys)


def _open_plain_async_store(config: SessionConfig, clock: Callable[[], float]) -> AsyncStore:
    scheme = _scheme(config.store_url)
    if scheme in REDIS_SCHEMES:
        from .redis import AsyncRedisStore

        return AsyncRedisStore.from_url(config.store_url, **_redis_options(config), clock=clock)
    from .threaded import AsyncFromSync

    # sealed (if at all) around the async face, so an inline load's opening never blocks
    return AsyncFromSync(_open_plain_store(config, clock), offload=scheme != "memory")
