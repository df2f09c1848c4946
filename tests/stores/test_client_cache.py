"""Client-side caching (``client_cache``) on real deployments: a hot read costs no round trip,
and every change, by any worker or any other client, is seen by the next read everywhere; a
lost, silent or misdirected tracking connection empties the cache rather than serve a copy."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from session_mw.config import SessionConfig
from session_mw.errors import ConfigError, StoreUnavailable
from session_mw.stores import open_async_store, open_store, redis_cache
from session_mw.stores.base import Close, Create, Delete, Lifetime, Load, Record, RevokeAll, Rotate, Update
from session_mw.stores.redis import AsyncRedisStore, RedisStore
from session_mw.stores.redis_cache import RecordCache, TrackingLink
from session_mw.testing import FakeClock, digest, meta
from tests.conftest import RedisServer, tracking

LIFE = Lifetime(600.0, 3600.0, 60.0)


def cached_store(url: str, prefix: str, clock: FakeClock) -> RedisStore:
    store = open_store(SessionConfig(store_url=url, key_prefix=prefix, client_cache=True), clock=clock)
    assert isinstance(store, RedisStore) and store.cache is not None
    tracking(store)
    return store


class Sends:
    """Counts the round trips a real store makes (it still makes every one)."""

    def __init__(self, store: Any) -> None:
        self.count = 0
        inner = store._send

        def send(call: Any) -> Any:
            self.count += 1
            return inner(call)

        store._send = send


@pytest.fixture
def workers(deployment_url: str, key_prefix: str, clock: FakeClock) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two workers' stores on one deployment, each with its own cache and tracking."""
    a, b = cached_store(deployment_url, key_prefix, clock), cached_store(deployment_url, key_prefix, clock)
    yield a, b
    for store in (a, b):
        store.execute(Close())


def raw_client(url: str) -> Any:
    from session_mw.stores.redis_target import connect, parse

    return connect(parse(url), asyncio=False, connect_timeout=2, timeout=2)


def born(store: RedisStore, clock: FakeClock, n: int = 1, user: str | None = "alice") -> str:
    store.execute(Create(digest(n), meta(clock(), user), {"cart": b"[]"}, LIFE))
    return digest(n)


def warm(store: RedisStore, key: str) -> Record | None:
    """Read twice: the first read keeps a copy, the second is served from it."""
    store.execute(Load(key, LIFE))
    return store.execute(Load(key, LIFE))


def test_a_hot_read_costs_no_round_trip(workers: tuple[RedisStore, RedisStore], clock: FakeClock) -> None:
    a, _ = workers
    key = born(a, clock)
    a.execute(Load(key, LIFE))
    sends = Sends(a)
    for _ in range(50):
        record = a.execute(Load(key, LIFE))
        assert record is not None and record.data == {"cart": b"[]"}
    assert sends.count == 0
    assert a.cache is not None and a.cache.stats["hits"] >= 50


def test_the_touch_still_reaches_redis_on_its_schedule(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock, deployment_url: str, key_prefix: str
) -> None:
    a, b = workers
    key = born(a, clock)
    warm(a, key)
    clock.advance(LIFE.touch_interval + 1)
    sends = Sends(a)
    record = a.execute(Load(key, LIFE))
    assert sends.count == 1 and record is not None and record.meta.last_seen == clock()
    raw = raw_client(deployment_url)
    assert float(raw.hget(a.session_key(key), "_s")) == clock()
    seen = b.execute(Load(key, LIFE))
    assert seen is not None and seen.meta.last_seen == clock()


def _update(a: RedisStore, key: str, clock: FakeClock) -> None:
    assert a.execute(Update(key, LIFE, {"cart": b"[1]"}))


def _logout(a: RedisStore, key: str, clock: FakeClock) -> None:
    a.execute(Delete(key, "alice"))


def _rotate(a: RedisStore, key: str, clock: FakeClock) -> None:
    assert a.execute(Rotate(key, digest(99), meta(clock(), "alice"), {"cart": b"[]"}, LIFE, old_user_id="alice"))


def _revoke_all(a: RedisStore, key: str, clock: FakeClock) -> None:
    assert key in a.execute(RevokeAll("alice", LIFE))


CHANGES: dict[str, Callable[[RedisStore, str, FakeClock], None]] = {
    "update": _update,
    "logout": _logout,
    "rotate": _rotate,
    "revoke_all": _revoke_all,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_by_one_worker_is_seen_by_the_next_read_of_the_other(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock, change: str
) -> None:
    a, b = workers
    key = born(a, clock)
    assert warm(a, key) is not None and warm(b, key) is not None
    CHANGES[change](a, key, clock)
    seen = b.execute(Load(key, LIFE))
    if change == "update":
        assert seen is not None and seen.data == {"cart": b"[1]"}
    else:
        assert seen is None
    mine = a.execute(Load(key, LIFE))
    assert (mine is not None and mine.data == {"cart": b"[1]"}) if change == "update" else mine is None


@pytest.mark.parametrize("change", ["hset", "del", "expire"])
def test_a_change_by_any_other_client_is_seen(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock, deployment_url: str, change: str
) -> None:
    """An operator's redis-cli, the admin CLI on another host, Redis's own expiry."""
    a, _ = workers
    key = born(a, clock)
    warm(a, key)
    raw, name = raw_client(deployment_url), a.session_key(key)
    if change == "hset":
        raw.hset(name, "k:cart", b"[7]")
    elif change == "del":
        raw.delete(name)
    else:
        raw.pexpire(name, 1)
        time.sleep(0.05)
        raw.exists(name)  # the expiry is made (and announced) at the latest when the key is next asked for
    seen = a.execute(Load(key, LIFE))
    assert (seen is not None and seen.data == {"cart": b"[7]"}) if change == "hset" else seen is None


def test_a_flush_of_the_database_empties_every_cache(
    redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    a = cached_store(redis_server.url, key_prefix, clock)
    key = born(a, clock)
    warm(a, key)
    redis.Redis.from_url(redis_server.url).flushall()
    assert a.execute(Load(key, LIFE)) is None
    a.execute(Close())


def _kill_tracking(url: str) -> int:
    """Closes every tracking connection, as a proxy or a server-side timeout would."""
    raw = redis.Redis.from_url(url)
    killed = 0
    for client in raw.client_list():
        if "t" in client.get("flags", ""):
            killed += raw.client_kill_filter(_id=client["id"])
    return killed


def test_a_lost_tracking_connection_bypasses_the_cache_until_tracking_is_back(
    redis_url: str, key_prefix: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = cached_store(redis_url, key_prefix, clock)
    key = born(a, clock)
    warm(a, key)
    assert _kill_tracking(redis_url) >= 1
    redis.Redis.from_url(redis_url).hset(a.session_key(key), "k:cart", b"[5]")  # no one is told of this
    sends = Sends(a)
    seen = a.execute(Load(key, LIFE))
    assert seen is not None and seen.data == {"cart": b"[5]"}
    assert sends.count == 1
    assert "session cache bypassed" in caplog.text
    assert a.cache is not None
    a.execute(Load(key, LIFE))
    assert sends.count == 2  # still bypassed: no copy is served while tracking is down
    tracking(a)
    warm(a, key)
    before = sends.count
    assert a.execute(Load(key, LIFE)) is not None and sends.count == before  # copies again
    a.execute(Close())


def test_a_restarted_redis_is_tracked_again_and_nothing_from_before_is_served(
    redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    a = cached_store(redis_server.url, key_prefix, clock)
    key = born(a, clock)
    warm(a, key)
    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        a.execute(Load(key, LIFE))  # no copy stands in for a store that is down
    redis_server.start()
    assert a.execute(Load(key, LIFE)) is None  # the restarted server kept nothing on disk
    key = born(a, clock, 2)
    tracking(a)
    warm(a, key)
    redis.Redis.from_url(redis_server.url).delete(a.session_key(key))
    assert a.execute(Load(key, LIFE)) is None
    a.execute(Close())


def test_the_asyncio_store_serves_copies_and_sees_changes(redis_url: str, key_prefix: str, clock: FakeClock) -> None:
    async def main() -> None:
        config = SessionConfig(store_url=redis_url, key_prefix=key_prefix, client_cache=True)
        store = open_async_store(config, clock=clock)
        assert isinstance(store, AsyncRedisStore) and store.cache is not None
        tracking(store)
        await store.execute(Create(digest(1), meta(clock(), "alice"), {"cart": b"[]"}, LIFE))
        await store.execute(Load(digest(1), LIFE))
        sends = Sends(store)
        assert (await store.execute(Load(digest(1), LIFE))) is not None and sends.count == 0
        redis.Redis.from_url(redis_url).hset(store.session_key(digest(1)), "k:cart", b"[2]")
        seen = await store.execute(Load(digest(1), LIFE))
        assert seen is not None and seen.data == {"cart": b"[2]"}
        await store.execute(Close())

    asyncio.run(main())


def test_a_read_in_flight_when_its_key_changes_is_not_kept(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock
) -> None:
    """The reply of a read may predate a change whose message came first: keeping it would
    serve the old session until the next change."""
    a, b = workers
    key = born(a, clock)
    cache = a.cache
    assert cache is not None
    assert cache.lookup(key) is None
    ticket = cache.begin(key)
    assert ticket is not None
    stale = b.execute(Load(key, LIFE))
    assert b.execute(Update(key, LIFE, {"cart": b"[3]"}))
    deadline = time.monotonic() + 2
    while cache.stats["invalidated"] == 0 and time.monotonic() < deadline:
        cache.tracking  # reads the tracking connection
    cache.keep(ticket, stale)
    seen = a.execute(Load(key, LIFE))
    assert seen is not None and seen.data == {"cart": b"[3]"}


def _until_invalidated(cache: RecordCache) -> None:
    before, deadline = cache.stats["invalidated"], time.monotonic() + 2
    while cache.stats["invalidated"] == before:
        assert time.monotonic() < deadline, "no invalidation came"
        assert cache.tracking  # reads the tracking connection


def test_a_read_begun_before_a_logout_is_not_kept_though_another_read_began_after_it(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock
) -> None:
    """One read falls through a copy whose touch is due, the other worker logs out, a second read
    of the same key begins; the first read's reply (from before the logout) must not be kept."""
    a, b = workers
    key = born(a, clock)
    warm(a, key)
    cache = a.cache
    assert cache is not None
    assert cache.lookup(key) is not None
    first = cache.begin(key)
    stale = b.execute(Load(key, LIFE))  # the reply the first read will bring
    b.execute(Delete(key, "alice"))
    _until_invalidated(cache)
    assert cache.lookup(key) is None
    second = cache.begin(key)
    cache.keep(first, stale)
    cache.keep(second, None)
    assert a.execute(Load(key, LIFE)) is None


def test_a_read_begun_before_a_flush_is_not_kept_though_another_began_after_it(
    redis_server: RedisServer, key_prefix: str, clock: FakeClock
) -> None:
    a = cached_store(redis_server.url, key_prefix, clock)
    cache = a.cache
    assert cache is not None
    key = born(a, clock)
    cache.lookup(key)
    first = cache.begin(key)
    stale = a.execute(Load(key, LIFE))
    redis.Redis.from_url(redis_server.url).flushall()
    deadline = time.monotonic() + 2
    while cache.stats["flushes"] < 2:
        assert time.monotonic() < deadline
        cache.lookup(key)
    second = cache.begin(key)
    cache.keep(first, stale)
    cache.keep(second, None)
    assert a.execute(Load(key, LIFE)) is None
    a.execute(Close())


def test_client_cache_needs_a_redis_store() -> None:
    with pytest.raises(ConfigError, match="client_cache"):
        SessionConfig(store_url="memory://", client_cache=True)
    with pytest.raises(ConfigError, match="client_cache_size"):
        SessionConfig(store_url="redis://127.0.0.1:1/0", client_cache=True, client_cache_size=0)


# -- the tracking rules, on a link that is made to fall silent or to lead elsewhere ----------


class QuietConnection:
    """A connection that has answered nothing yet: what a partition looks like from here."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.sent: list[tuple[Any, ...]] = []
        self.closed = False
        self._sock = object()

    def can_read(self, timeout: float = 0) -> bool:
        return bool(self.replies)

    def poll(self, timeout: float = 0) -> bool:  # stands in for the link's poll(2) as well
        return bool(self.replies)

    def read_response(self, push_request: bool = False) -> Any:
        return self.replies.pop(0)

    def send_command(self, *args: Any) -> None:
        self.sent.append(args)

    def disconnect(self) -> None:
        self.closed = True


def _cache_on(conn: QuietConnection, now: list[float]) -> RecordCache:
    def connector(prefix: bytes, on_invalidation: Callable[[Any], Any]) -> list[TrackingLink]:
        link = TrackingLink(conn, ("ROLE",), lambda reply: reply == ["master"], where="the node")
        link.sock, link.poller = conn._sock, conn
        return [link]

    cache = RecordCache(connector, "p:s:", clock=lambda: now[0])
    assert cache.lookup("x") is None and cache.begin("x") is None  # tracking is not up yet
    deadline = time.monotonic() + 5
    while cache._fresh is None:  # the connecting thread
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return cache


def test_a_tracking_connection_that_falls_silent_stops_the_copies() -> None:
    conn, now = QuietConnection(), [100.0]
    cache = _cache_on(conn, now)
    record = Record({}, meta(100.0))
    assert cache.lookup("x") is None
    ticket = cache.begin("x")
    assert ticket is not None
    cache.keep(ticket, record)
    assert cache.lookup("x") is record
    now[0] += redis_cache.HEARTBEAT + 0.001
    cache.lookup("x")  # sends a heartbeat
    assert conn.sent == [("ROLE",)]
    conn.replies.append(["master"])
    now[0] += 0.01
    assert cache.lookup("x") is record  # answered: proven up to when it was sent
    now[0] += redis_cache.HEARTBEAT + 0.001
    cache.lookup("x")  # the next heartbeat, never answered
    now[0] += redis_cache.MAX_SILENCE + 0.01
    assert cache.lookup("x") is None and cache.begin("x") is None
    assert conn.closed and cache._entries == {}


def test_a_tracking_connection_that_now_leads_to_a_replica_stops_the_copies() -> None:
    conn, now = QuietConnection(), [100.0]
    cache = _cache_on(conn, now)
    cache.lookup("x")
    cache.keep(cache.begin("x"), Record({}, meta(100.0)))
    now[0] += redis_cache.HEARTBEAT + 0.001
    cache.lookup("x")
    conn.replies.append(["slave"])
    assert cache.lookup("x") is None and cache.begin("x") is None
    assert conn.closed and cache._entries == {}


# -- two processes ----------------------------------------------------------------------


def _other_worker(url: str, prefix: str, key: str, orders: Any, answers: Any) -> None:
    store = RedisStore.from_url(url, prefix, client_cache=True)
    tracking(store)
    while orders.poll(30):
        order = orders.recv()
        if order == "stop":
            break
        record = store.execute(Load(key, LIFE))
        answers.send(None if record is None else record.data.get("cart"))
    assert store.cache is not None
    answers.send(store.cache.stats["hits"])
    store.execute(Close())


def test_a_write_or_revoke_in_one_process_is_seen_by_the_next_read_in_another(redis_url: str, key_prefix: str) -> None:
    """Each change is made, then the other process reads at once: 200 writes, then a revoke."""
    context = multiprocessing.get_context("spawn")
    orders, their_orders = context.Pipe()
    their_answers, answers = context.Pipe()
    key = digest(1)
    clock = FakeClock(time.time())
    store = RedisStore.from_url(redis_url, key_prefix, client_cache=True, clock=clock)
    store.execute(Create(key, meta(clock(), "alice"), {"cart": b"0"}, LIFE))
    worker = context.Process(target=_other_worker, args=(redis_url, key_prefix, key, their_orders, their_answers))
    worker.start()
    try:
        for n in range(1, 201):
            orders.send("read")
            assert answers.recv() == str(n - 1).encode()  # warm: the copy of the previous version
            orders.send("read")
            assert answers.recv() == str(n - 1).encode()
            assert store.execute(Update(key, LIFE, {"cart": str(n).encode()}))
            orders.send("read")
            assert answers.recv() == str(n).encode()
        store.execute(RevokeAll("alice", LIFE))
        orders.send("read")
        assert answers.recv() is None
        orders.send("stop")
        assert answers.recv() > 200  # most reads were served from the copy
    finally:
        worker.join(10)
        if worker.is_alive():  # a failed assertion left it waiting for an order
            worker.kill()
            worker.join(10)
        store.execute(Close())


def test_url_options_cannot_turn_tracking_off(redis_url: str, key_prefix: str, clock: FakeClock) -> None:
    """RESP2 would get no pushes, and a health check would reconnect without tracking."""
    a = cached_store(f"{redis_url}?protocol=2&health_check_interval=1&retry_on_timeout=true", key_prefix, clock)
    key = born(a, clock)
    warm(a, key)
    redis.Redis.from_url(redis_url).hset(a.session_key(key), "k:cart", b"[8]")
    seen = a.execute(Load(key, LIFE))
    assert seen is not None and seen.data == {"cart": b"[8]"}
    a.execute(Close())


def test_a_tracking_connection_reopened_behind_our_back_is_not_trusted(
    redis_url: str, key_prefix: str, clock: FakeClock
) -> None:
    a = cached_store(redis_url, key_prefix, clock)
    key = born(a, clock)
    warm(a, key)
    assert a.cache is not None
    [link] = a.cache._links
    link.conn.disconnect()
    link.conn.connect()  # as a retry inside redis-py would: a new socket, no tracking on it
    redis.Redis.from_url(redis_url).hset(a.session_key(key), "k:cart", b"[9]")
    seen = a.execute(Load(key, LIFE))
    assert seen is not None and seen.data == {"cart": b"[9]"}
    a.execute(Close())


def test_an_idle_worker_lets_tracking_go_and_serves_nothing_from_before() -> None:
    conn, now = QuietConnection(), [100.0]
    cache = _cache_on(conn, now)
    cache.lookup("x")
    cache.keep(cache.begin("x"), Record({}, meta(100.0)))
    now[0] += redis_cache.IDLE_DROP + 1
    assert cache.lookup("x") is None
    assert conn.closed and cache._entries == {}


def test_cluster_primaries_are_read_from_cluster_nodes_with_or_without_slots() -> None:
    from session_mw.stores.redis_target import _node_primaries

    nodes = (
        b"a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-8191\n"
        b"b2 127.0.0.1:7002@17002,host-b master - 0 0 2 connected 8192-16383\n"
        b"c3 127.0.0.1:7003@17003 master - 0 0 3 connected\n"
        b"d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected\n"
        b"e5 127.0.0.1:7005@17005 master,fail - 0 0 5 disconnected\n"
    )
    assert _node_primaries(nodes) == {("127.0.0.1", 7001), ("127.0.0.1", 7002), ("127.0.0.1", 7003)}


def test_several_messages_read_at_once_are_all_applied(
    workers: tuple[RedisStore, RedisStore], clock: FakeClock, deployment_url: str
) -> None:
    """Changes made one after the other reach the socket as separate messages, which one read may
    bring in together: every one is applied before the next copy is served."""
    a, _ = workers
    keys = [born(a, clock, n) for n in (1, 2, 3)]
    for key in keys:
        warm(a, key)
    raw = raw_client(deployment_url)
    for key in keys:
        raw.hset(a.session_key(key), "k:cart", b"[4]")  # three commands: three messages
    time.sleep(0.05)
    for key in reversed(keys):
        seen = a.execute(Load(key, LIFE))
        assert seen is not None and seen.data == {"cart": b"[4]"}


def test_a_tracking_that_can_never_work_turns_the_cache_off_once(caplog: pytest.LogCaptureFixture) -> None:
    attempts = []

    def connector(prefix: bytes, on_invalidation: Callable[[Any], Any]) -> list[TrackingLink]:
        attempts.append(1)
        raise ConfigError("client_cache needs hiredis 3.2 or later")

    now = [100.0]
    cache = RecordCache(connector, "p:s:", clock=lambda: now[0])
    cache.lookup("x")
    deadline = time.monotonic() + 5
    while cache._connecting and time.monotonic() < deadline:
        time.sleep(0.001)
    for _ in range(3):
        now[0] += redis_cache.RECONNECT_DELAY + 1
        assert cache.lookup("x") is None and cache.begin("x") is None
    assert attempts == [1]
    assert caplog.text.count("session cache off") == 1
