"""Fixtures of the door suites: every door (ASGI, WSGI, Flask) on every store, on one fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import Close
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import FakeClock
from tests.conftest import tracking
from tests.doors.apps import DOORS
from tests.doors.harness import ABSOLUTE, IDLE, Clients, Counting


@pytest.fixture(params=sorted(DOORS))
def door(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cached", "sentinel", "cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """ "redis-cached" is one node with client-side caching on (``client_cache``)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.db"
    if request.param in ("sentinel", "cluster"):
        return str(request.getfixturevalue(f"{request.param}_url"))
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def config(store_url: str, key_prefix: str, request: pytest.FixtureRequest) -> SessionConfig:
    return SessionConfig(
        store_url=store_url,
        client_cache=request.node.callspec.params.get("store_url") == "redis-cached",
        key_prefix=key_prefix,
        idle_timeout=IDLE,
        absolute_timeout=ABSOLUTE,
        touch_interval=100,
        exclude_paths=("/assets",),
    )


@pytest.fixture
def store(door: str, config: SessionConfig, clock: FakeClock) -> Counting:
    inner: Any = open_async_store(config, clock=clock) if door == "asgi" else open_store(config, clock=clock)
    return Counting(tracking(inner))


@pytest.fixture
def view(store: Counting, config: SessionConfig, clock: FakeClock) -> Iterator[Store]:
    """A sync view of the same store, for assertions on what was stored."""
    inner = store.inner
    if isinstance(inner, AsyncFromSync):
        yield inner.sync
    elif _is_async(inner):  # an async Redis store: look through a sync client of the same Redis
        s = open_store(config, clock=clock)
        yield s
        s.execute(Close())
    else:
        yield inner


def _is_async(store: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(store.execute)


@pytest.fixture
def app(door: str, config: SessionConfig, store: Counting, clock: FakeClock) -> Any:
    return DOORS[door](config, store, Engine(config, clock=clock))


@pytest.fixture
def clients(door: str, app: Any) -> Iterator[Clients]:
    made = Clients(door, app)
    yield made
    made.close()


@pytest.fixture
def client(clients: Clients) -> httpx.Client:
    return clients.new()
