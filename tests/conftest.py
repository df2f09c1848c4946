"""Shared fixtures: a private real redis-server, the stores under test, a fake clock."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from session_mw.testing import FakeClock

REQUIRE_REDIS = os.environ.get("SESSION_MW_REQUIRE_REDIS") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port} within {timeout}s")


@dataclass
class RedisServer:
    """A private redis-server process that tests may stop and start again."""

    port: int
    workdir: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _redis_missing(reason: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(f"Redis is required (SESSION_MW_REQUIRE_REDIS=1) but {reason}")
    pytest.skip(reason)


def start_private_redis() -> RedisServer | None:
    if shutil.which("redis-server") is None:
        return None
    server = RedisServer(free_port(), tempfile.mkdtemp(prefix="session_mw-redis-"))
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: ``REDIS_URL`` if set, else a private redis-server on a free port."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = start_private_redis()
    if server is None:
        _redis_missing("redis-server is not on PATH and REDIS_URL is not set")
        return
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server owned by one test, which it may stop and restart (outage tests)."""
    server = start_private_redis()
    if server is None:
        _redis_missing("redis-server is not on PATH (outage tests need a private one)")
        return
    try:
        yield server
    finally:
        server.stop()


def _deployment(kind: str) -> Iterator[str]:
    """A real deployment of ``kind`` ("sentinel": a primary, a replica and three sentinels;
    "cluster": three primaries made by ``redis-cli --cluster create``), stopped at the end."""
    from tests.deployments import Cluster, Sentinels, missing_binaries

    missing = missing_binaries("redis-server", "redis-cli")
    if missing:
        _redis_missing(f"{', '.join(missing)} not on PATH (the {kind} tests start their own deployment)")
        return
    with Sentinels.start() if kind == "sentinel" else Cluster.start() as deployment:
        yield deployment.url


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    yield from _deployment("sentinel")


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    yield from _deployment("cluster")


@pytest.fixture(params=["node", "sentinel", "cluster"])
def deployment_url(request: pytest.FixtureRequest) -> str:
    """Each Redis deployment the fixtures start: one node, a Sentinel service, a Cluster."""
    return str(request.getfixturevalue({"node": "redis_url"}.get(request.param, f"{request.param}_url")))


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of its own per test, so tests sharing one Redis never see each other."""
    return f"t{abs(hash(request.node.nodeid)) % 10**12}:{time.time_ns()}:"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _private_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default store is a SQLite file under the working directory: keep each test's apart."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tracking(store: Any, timeout: float = 10.0) -> Any:
    """``store``, once its client-side cache (if any) is tracking: copies are served only then."""
    inner = store
    while getattr(inner, "cache", None) is None and hasattr(inner, "inner"):
        inner = inner.inner  # a sealed or counting wrapper
    cache = getattr(inner, "cache", None)
    deadline = time.monotonic() + timeout
    while cache is not None and not cache.tracking:
        assert time.monotonic() < deadline, "Redis tracking did not come up"
        time.sleep(0.01)
    return store
