"""Every store, sync and async faces, through the one conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from session_mw.config import SessionConfig
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.memory import MemoryStore
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import LockContract, StoreContract, SyncFromAsync


class TestMemoryStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        yield MemoryStore()


class TestMemoryStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        s = SyncFromAsync(AsyncFromSync(MemoryStore(), offload=True))
        yield s
        s.close()


class TestRedisStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self, redis_url: str, key_prefix: str) -> Iterator[Store]:
        s = open_store(SessionConfig(store_url=redis_url, key_prefix=key_prefix))
        yield s
        s.close()


class TestRedisStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, redis_url: str, key_prefix: str) -> Iterator[Store]:
        s = SyncFromAsync(open_async_store(SessionConfig(store_url=redis_url, key_prefix=key_prefix)))
        yield s
        s.close()
