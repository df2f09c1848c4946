"""Every store, sync and async faces, through the one conformance suite, on the suite's clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from session_mw.config import SessionConfig
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import Close
from session_mw.stores.memory import MemoryStore
from session_mw.stores.sqlite import SQLiteStore
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import FakeClock, LockContract, StoreContract, SyncFromAsync
from tests.conftest import tracking


def _closed(store: Store) -> Iterator[Store]:
    yield store
    store.execute(Close())
    if isinstance(store, SyncFromAsync):
        store.close_loop()


class TestMemoryStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(MemoryStore(clock))


class TestMemoryStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(SyncFromAsync(AsyncFromSync(MemoryStore(clock), offload=True)))


class TestSQLiteStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(SQLiteStore(tmp_path / "sessions.db", clock=clock))


class TestSQLiteStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(
            SyncFromAsync(AsyncFromSync(SQLiteStore(tmp_path / "sessions.db", clock=clock), offload=True))
        )


class TestRedisStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self, deployment_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(open_store(SessionConfig(store_url=deployment_url, key_prefix=key_prefix), clock=clock))


class TestRedisStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, deployment_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=deployment_url, key_prefix=key_prefix)
        yield from _closed(SyncFromAsync(open_async_store(config, clock=clock)))


class TestRedisStoreCached(StoreContract, LockContract):
    """Client-side caching on: the same contract, with copies served wherever they may be."""

    @pytest.fixture
    def store(self, deployment_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=deployment_url, key_prefix=key_prefix, client_cache=True)
        yield from _closed(tracking(open_store(config, clock=clock)))


class TestRedisStoreCachedAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, deployment_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=deployment_url, key_prefix=key_prefix, client_cache=True)
        yield from _closed(SyncFromAsync(tracking(open_async_store(config, clock=clock))))
