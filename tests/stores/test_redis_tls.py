"""TLS (``rediss://``, ``rediss+cluster://``) against real TLS-only servers with a private CA."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_mw import SessionConfig, StoreUnavailable
from session_mw.stores import open_store
from session_mw.stores.base import UNBOUNDED, Close, Load, Store
from session_mw.testing import FakeClock, LockContract, StoreContract
from tests.conftest import _redis_missing
from tests.deployments import Cluster, Node, Sentinels, Tls, free_ports, missing_binaries


@pytest.fixture(autouse=True, scope="module")
def _binaries() -> None:
    """Missing binaries skip these tests, except where Redis is required (CI): there they fail."""
    missing = missing_binaries("redis-server", "redis-cli", "openssl")
    if missing:
        _redis_missing(f"{', '.join(missing)} not on PATH")


@pytest.fixture(scope="module")
def tls_node() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="session_mw-tls-"))
    tls = Tls.make(root)
    [port] = free_ports(1)
    node = Node(port, root, [*tls.server_args(port), "--bind", "127.0.0.1", "--save", ""], tls=tls)
    node.start()
    try:
        yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tls.cert}"
    finally:
        node.kill()


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[str]:
    with Cluster.start(tls=True) as cluster:
        yield cluster.url


@pytest.fixture(params=["node", "cluster"])
def tls_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"tls_{request.param}"))


class TestRedisOverTls(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tls_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        store = open_store(SessionConfig(store_url=tls_url, key_prefix=key_prefix), clock=clock)
        yield store
        store.execute(Close())


def test_a_client_without_tls_gets_store_unavailable_not_a_hang(tls_url: str) -> None:
    plain = tls_url.replace("rediss", "redis", 1).split("?", 1)[0]
    store = open_store(SessionConfig(store_url=plain, store_connect_timeout=0.5, store_socket_timeout=0.5))
    with pytest.raises(StoreUnavailable):
        store.execute(Load("ab" * 32, UNBOUNDED))
    store.execute(Close())


def test_a_certificate_no_trusted_ca_signed_is_refused(tls_url: str) -> None:
    untrusted = tls_url.split("?", 1)[0]  # the system's CAs do not know our private one
    store = open_store(SessionConfig(store_url=untrusted, store_connect_timeout=0.5, store_socket_timeout=0.5))
    with pytest.raises(StoreUnavailable, match=r"(?i)certificate|ssl"):
        store.execute(Load("ab" * 32, UNBOUNDED))
    store.execute(Close())


@pytest.fixture(scope="module")
def tls_sentinel() -> Iterator[str]:
    with Sentinels.start(tls=True) as deployment:
        yield deployment.url


class TestRedisSentinelOverTls(StoreContract, LockContract):
    """TLS to the sentinels and to the primary they elect."""

    @pytest.fixture
    def store(self, tls_sentinel: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        store = open_store(SessionConfig(store_url=tls_sentinel, key_prefix=key_prefix), clock=clock)
        yield store
        store.execute(Close())
