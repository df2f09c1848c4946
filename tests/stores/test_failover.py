"""Failover on real deployments: a Sentinel primary killed or paused, a Cluster primary killed.

Through the real doors (WSGI on Sentinel, ASGI on Cluster), while requests keep coming: each
gets its answer or a 503 with Retry-After, within the configured timeouts; never a 500, never
a hang. The app recovers by itself once a new primary is elected, and with ``replica_acks=1``
every session committed before the failover is intact after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import open_async_store, open_store
from session_mw.stores.base import Close
from tests.conftest import _redis_missing, tracking
from tests.deployments import Cluster, Node, Sentinels, missing_binaries
from tests.doors.apps import DOORS


@pytest.fixture(autouse=True, scope="module")
def _binaries() -> None:
    """Missing binaries skip these tests, except where Redis is required (CI): there they fail."""
    missing = missing_binaries("redis-server", "redis-cli")
    if missing:
        _redis_missing(f"{', '.join(missing)} not on PATH")


#: The configured timeouts, and the longest a request may take during a failover: a connect and
#: a read to the failed node, then (Sentinel) asking each sentinel for the new primary.
TIMEOUT = 0.5
WORST = 4.0
RECOVERY = 30.0


def _config(url: str, **settings: Any) -> SessionConfig:
    defaults: dict[str, Any] = {
        "store_connect_timeout": TIMEOUT,
        "store_socket_timeout": TIMEOUT,
        "retry_after": 2,
        "replica_acks": 1,
        "replica_ack_timeout": 2.0,
    }
    return SessionConfig(store_url=url, **{**defaults, **settings})


def _through_failover(
    request: Callable[[], httpx.Response], fail: Callable[[], None], elected: Callable[[], bool]
) -> tuple[int, float]:
    """Requests before ``fail()``, during the failover until ``elected()`` says a new primary
    serves, and after: (how many were 503s, the slowest answer)."""
    assert request().status_code == 200
    fail()
    started, unavailable, slowest, good_in_a_row, over = time.monotonic(), 0, 0.0, 0, False
    while not (over and good_in_a_row >= 5):
        over = over or elected()
        assert time.monotonic() - started < RECOVERY, "the app did not recover by itself"
        before = time.monotonic()
        response = request()
        slowest = max(slowest, time.monotonic() - before)
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            unavailable += 1
            good_in_a_row = 0
            assert response.headers["retry-after"] == "2" and response.text.count("\n") == 1
            assert "Traceback" not in response.text and "set-cookie" not in response.headers
            time.sleep(0.1)
        else:
            good_in_a_row += 1
    return unavailable, slowest


# -- Sentinel, through the WSGI door --------------------------------------------------------


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    with Sentinels.start() as deployment:
        yield deployment


def _wsgi_browsers(config: SessionConfig, n: int) -> tuple[list[httpx.Client], Any]:
    store = open_store(config)
    app = DOORS["wsgi"](config, store, Engine(config))
    transport = httpx.WSGITransport(app=app)
    return [httpx.Client(transport=transport, base_url="https://shop.test") for _ in range(n)], store


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_sentinel_failover_costs_at_most_503s_and_loses_no_committed_session(
    sentinels: Sentinels, key_prefix: str, how: str
) -> None:
    config = _config(sentinels.url, key_prefix=key_prefix)
    browsers, store = _wsgi_browsers(config, 4)
    try:
        for i, browser in enumerate(browsers):
            assert browser.post("/cart", json={"item": f"item{i}"}).status_code == 200
            assert browser.post("/login", json={"user": f"user{i}"}).status_code == 200  # WAITed for
        old: Node = sentinels.current_primary()
        unavailable, slowest = _through_failover(
            lambda: browsers[0].get("/whoami"),
            old.kill if how == "kill" else old.pause,
            lambda: sentinels.primary_port() != old.port,
        )
        print(f"sentinel {how}: {unavailable} answers were 503s; the slowest answer took {slowest:.2f} s")
        assert sentinels.primary_port() != old.port  # a new primary was elected
        assert unavailable >= 1 and slowest < WORST, (unavailable, slowest)
        for i, browser in enumerate(browsers):
            assert browser.get("/whoami").json() == {"user": f"user{i}", "note": None, "cart": [f"item{i}"]}
        fresh = browsers[0].post("/cart", json={"item": "after"})
        assert fresh.status_code == 200 and fresh.json()["cart"] == ["item0", "after"]
        if how == "pause":
            old.resume()
    finally:
        for browser in browsers:
            browser.close()
        store.execute(Close())


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_after_a_sentinel_failover_no_worker_serves_a_copy_from_before_it(
    sentinels: Sentinels, key_prefix: str, how: str
) -> None:
    """Client-side caching on two workers: one writes after the failover, the other's next read
    sees the write, though it held a copy of the session from before."""
    config = _config(sentinels.url, key_prefix=key_prefix, client_cache=True)
    [writer], writer_store = _wsgi_browsers(config, 1)
    [reader], reader_store = _wsgi_browsers(config, 1)
    try:
        assert writer.post("/cart", json={"item": "before"}).status_code == 200
        assert writer.post("/login", json={"user": "ann"}).status_code == 200
        reader.cookies = writer.cookies
        tracking(reader_store)
        for _ in range(3):
            assert reader.get("/whoami").json()["cart"] == ["before"]
        old: Node = sentinels.current_primary()
        _through_failover(
            lambda: writer.get("/whoami"),
            old.kill if how == "kill" else old.pause,
            lambda: sentinels.primary_port() != old.port,
        )
        assert writer.post("/cart", json={"item": "after"}).json()["cart"] == ["before", "after"]
        deadline = time.monotonic() + RECOVERY
        while (seen := reader.get("/whoami")).status_code == 503:  # its connections led to the old primary
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert seen.json()["cart"] == ["before", "after"]  # never the copy from before
        tracking(reader_store)  # tracking the new primary now
        assert writer.post("/cart", json={"item": "later"}).status_code == 200
        assert reader.get("/whoami").json()["cart"] == ["before", "after", "later"]
        if how == "pause":
            old.resume()
    finally:
        for client, store in ((writer, writer_store), (reader, reader_store)):
            client.close()
            store.execute(Close())


def test_with_replica_acks_a_login_no_replica_holds_is_a_503(sentinels: Sentinels, key_prefix: str) -> None:
    """The replica paused: WAIT times out, so the new session is not acknowledged; the login is a
    503 within the configured wait, and without replica_acks the same login goes through."""
    waiting = _config(sentinels.url, key_prefix=key_prefix, replica_ack_timeout=0.3)
    [browser], store = _wsgi_browsers(waiting, 1)
    [plain], plain_store = _wsgi_browsers(waiting.replace(replica_acks=0), 1)
    sentinels.replica.pause()
    try:
        started = time.monotonic()
        refused = browser.post("/login", json={"user": "alice"})
        assert refused.status_code == 503 and "set-cookie" not in refused.headers
        assert time.monotonic() - started < 0.3 + WORST
        assert plain.post("/login", json={"user": "alice"}).status_code == 200
    finally:
        sentinels.replica.resume()
        for client, s in ((browser, store), (plain, plain_store)):
            client.close()
            s.execute(Close())


# -- Cluster, through the ASGI door -----------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster.start(replicas=1) as deployment:
        yield deployment


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_cluster_failover_costs_at_most_503s_and_loses_no_committed_session(
    cluster: Cluster, key_prefix: str, how: str
) -> None:
    config = _config(cluster.url, key_prefix=key_prefix)
    store = open_async_store(config)
    app = DOORS["asgi"](config, store, Engine(config))
    with TestClient(app, base_url="https://shop.test") as first:
        browsers = [first] + [httpx.Client(transport=first._transport, base_url="https://shop.test") for _ in range(5)]
        for i, browser in enumerate(browsers):
            assert browser.post("/cart", json={"item": f"item{i}"}).status_code == 200
            assert browser.post("/login", json={"user": f"user{i}"}).status_code == 200
        victim = _primary_of(cluster, browsers[0], key_prefix)  # it holds at least the first browser's session
        # requests of every browser, so some hit the failed primary's slots and some do not
        turn = iter(range(10**6))
        fail = victim.kill if how == "kill" else victim.pause
        unavailable, slowest = _through_failover(
            lambda: browsers[next(turn) % len(browsers)].get("/whoami"), fail, lambda: cluster.failed_over(victim)
        )
        print(f"cluster {how}: {unavailable} answers were 503s; the slowest answer took {slowest:.2f} s")
        if how == "kill":
            assert victim.port not in cluster.primary_ports()
        assert unavailable >= 1 and slowest < WORST, (unavailable, slowest)
        for i, browser in enumerate(browsers):
            assert browser.get("/whoami").json() == {"user": f"user{i}", "note": None, "cart": [f"item{i}"]}
        assert browsers[1].post("/everywhere").json() == {"revoked": 1}
        for browser in browsers[1:]:
            browser.close()


def _primary_of(cluster: Cluster, browser: httpx.Client, key_prefix: str) -> Node:
    """The primary that holds ``browser``'s session (found by its key's slot)."""
    from redis import cluster as redis_cluster

    from session_mw.tokens import Digester

    token = next(c.value for c in browser.cookies.jar if c.name == "__Host-id")
    assert token is not None
    key = f"{key_prefix}s:{Digester()(token)}"
    client: Any = redis_cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        port = int(client.get_node_from_key(key).port)
    finally:
        client.close()
    return next(n for n in cluster.nodes if n.port == port)


@pytest.fixture
def bare_cluster() -> Iterator[Cluster]:
    with Cluster.start() as deployment:
        yield deployment


def test_slots_moved_to_another_node_are_followed_by_both_clients(bare_cluster: Cluster, key_prefix: str) -> None:
    """A third of the slots resharded under running stores (their topology now stale): MOVED is
    followed by redis-py, so every session still loads, lists and revokes, sync and asyncio."""
    import subprocess

    from session_mw.stores.base import UNBOUNDED, Create, Load, RevokeAll, SessionsOf
    from session_mw.testing import SyncFromAsync, meta

    config = SessionConfig(store_url=bare_cluster.url, key_prefix=key_prefix)
    sync, asynchronous = open_store(config), SyncFromAsync(open_async_store(config))
    keys = [f"{n:064x}" for n in range(60)]
    for key in keys:
        sync.execute(Create(key, meta(time.time(), "alice"), {"a": b"1"}, UNBOUNDED))
    for store in (sync, asynchronous):
        assert all(store.execute(Load(key, UNBOUNDED)) for key in keys)  # both learn the topology
    source, target = (n.cli("CLUSTER", "MYID") for n in bare_cluster.nodes[:2])
    move = ["--cluster-from", source, "--cluster-to", target, "--cluster-slots", "5461", "--cluster-yes"]
    subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{bare_cluster.nodes[0].port}", *move],
        capture_output=True,
        check=True,
        timeout=120,
    )
    try:
        for store in (sync, asynchronous):
            assert all(store.execute(Load(key, UNBOUNDED)) for key in keys)
            assert len(store.execute(SessionsOf("alice", UNBOUNDED))) == len(keys)
        assert len(asynchronous.execute(RevokeAll("alice", UNBOUNDED))) == len(keys)
    finally:
        for store in (sync, asynchronous):
            store.execute(Close())
        asynchronous.close_loop()
