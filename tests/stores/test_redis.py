"""Redis-only promises: one round trip per operation, declared keys, one record format for both faces,
bad keys dropped, and every server error a ``StoreUnavailable`` that says what the server said."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from session_mw.errors import ConfigError, StoreUnavailable
from session_mw.stores.base import Check, Close, Create, Delete, Lifetime, Load, RevokeAll, Rotate, SessionsOf, Update
from session_mw.stores.redis import AsyncRedisStore, RedisStore
from session_mw.testing import FakeClock, digest, meta
from tests.conftest import RedisServer, free_port

LIFE = Lifetime(600.0, 3600.0, 60.0)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(redis_url: str, key_prefix: str, clock: FakeClock) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_url, key_prefix, clock=clock)
    yield s
    s.execute(Close())


def test_load_and_update_are_one_round_trip_each(store: RedisStore, raw: redis.Redis, clock: FakeClock) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"cart": b"[]"}, LIFE))  # loads the scripts once
    store.execute(Load(digest(1), LIFE))
    store.execute(Update(digest(1), LIFE, {"cart": b"[0]"}))
    raw.config_resetstat()
    store.execute(Load(digest(1), LIFE))
    store.execute(Update(digest(1), LIFE, {"cart": b"[1]"}))
    stats = raw.info("commandstats")
    # a session this process saw touched moments ago cannot be due: its load is a plain HGETALL
    assert stats["cmdstat_hgetall"]["calls"] == 1 and stats["cmdstat_evalsha"]["calls"] == 1
    assert "cmdstat_get" not in stats


def test_a_load_that_may_be_due_a_touch_is_one_script_call(
    store: RedisStore, raw: redis.Redis, clock: FakeClock, redis_url: str, key_prefix: str
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"cart": b"[]"}, LIFE))
    other = RedisStore.from_url(redis_url, key_prefix, clock=clock)  # another worker: it saw nothing
    other.execute(Load(digest(1), LIFE))  # loads the script
    clock.advance(LIFE.touch_interval + 1)
    raw.config_resetstat()
    for reader in (store, other):
        record = reader.execute(Load(digest(1), LIFE))
        assert record is not None
    stats = raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 2 and "cmdstat_hgetall" in stats  # inside the scripts only
    assert stats["cmdstat_hset"]["calls"] == 1  # the first touched it; the second found it fresh
    raw.config_resetstat()
    assert other.execute(Load(digest(1), LIFE)) is not None  # now it knows: a plain read
    stats = raw.info("commandstats")
    assert "cmdstat_evalsha" not in stats and stats["cmdstat_hgetall"]["calls"] == 1
    other.execute(Close())


def test_a_read_inside_the_touch_interval_writes_nothing(store: RedisStore, raw: redis.Redis, clock: FakeClock) -> None:
    store.execute(Create(digest(1), meta(clock()), {"x": b"1"}, LIFE))
    clock.advance(1)
    raw.config_resetstat()
    store.execute(Load(digest(1), LIFE))
    stats = raw.info("commandstats")
    assert "cmdstat_hset" not in stats and "cmdstat_pexpire" not in stats


def test_sync_and_async_faces_share_one_record_format(redis_url: str, key_prefix: str, clock: FakeClock) -> None:
    sync = RedisStore.from_url(redis_url, key_prefix, clock=clock)
    m = meta(clock(), user="alice")
    sync.execute(Create(digest(3), m, {"cart": b'["apple"]'}, LIFE))

    async def through_async() -> None:
        store = AsyncRedisStore.from_url(redis_url, key_prefix, clock=clock)
        record = await store.execute(Load(digest(3), LIFE))
        assert record is not None and dict(record.data) == {"cart": b'["apple"]'} and record.meta == m
        assert await store.execute(Update(digest(3), LIFE, {"cart": b'["apple","pear"]'}))
        await store.execute(Close())

    asyncio.run(through_async())
    record = sync.execute(Load(digest(3), LIFE))
    assert record is not None and dict(record.data) == {"cart": b'["apple","pear"]'}
    assert [k for k, _ in sync.execute(SessionsOf("alice", LIFE))] == [digest(3)]
    sync.execute(Close())


def test_keys_are_digests_under_the_prefix_and_records_are_versioned(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(4), meta(clock(), user="bob"), {"x": b"1"}, LIFE))
    keys = sorted(k.decode() for k in raw.scan_iter(match=f"{key_prefix}*"))
    assert keys == [f"{key_prefix}s:{digest(4)}", f"{key_prefix}u:bob"]
    assert raw.pttl(f"{key_prefix}s:{digest(4)}") > 0 and raw.ttl(f"{key_prefix}u:bob") > 0
    assert raw.hget(f"{key_prefix}s:{digest(4)}", "_v") == b"2"


def test_the_meta_fields_of_the_hash(store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock) -> None:
    now = clock()
    m = meta(now, "bob", authenticated_at=now - 1.5, issued_at=now, binding="b1:ab")
    store.execute(Create(digest(4), m, {"x": b"1"}, LIFE))
    fields = cast("dict[bytes, bytes]", raw.hgetall(f"{key_prefix}s:{digest(4)}"))
    assert {k: v for k, v in fields.items() if not k.startswith(b"k:")} == {
        b"_c": repr(now).encode(),
        b"_s": repr(now).encode(),
        b"_d": repr(now + 3600).encode(),
        b"_u": b"bob",
        b"_a": b"pytest/1.0",
        b"_r": b"0",
        b"_i": m.public_id.encode(),
        b"_t": repr(now - 1.5).encode(),
        b"_n": repr(now).encode(),
        b"_b": b"b1:ab",
        b"_v": b"2",
    }


def test_a_redis_ttl_never_beats_the_servers_decision(store: RedisStore, raw: redis.Redis, key_prefix: str) -> None:
    clock = store.clock
    store.execute(Create(digest(5), meta(clock()), {"x": b"1"}, Lifetime(2.0, 3600.0, 0.2)))
    assert raw.pttl(f"{key_prefix}s:{digest(5)}") > 2000  # the idle timeout plus a margin


@pytest.mark.parametrize(
    "damage",
    [
        lambda r, k: (r.delete(k), r.set(k, "a string, not a hash")),
        lambda r, k: (r.delete(k), r.rpush(k, "a list")),
        lambda r, k: r.hset(k, "_d", "inf"),
        lambda r, k: r.hset(k, "_s", "nan"),
        lambda r, k: r.hset(k, "_c", "yesterday"),
        lambda r, k: r.hset(k, "_r", "maybe"),
        lambda r, k: r.hset(k, b"k:\xff", b"1"),
        lambda r, k: r.hset(k, "_u", b"\xff\xfe"),
        lambda r, k: r.hset(k, "_v", "x"),
        lambda r, k: r.hdel(k, "_c"),
        lambda r, k: r.hset(k, "_g", "soon"),
        lambda r, k: r.hset(k, "_g", ""),
    ],
)
def test_an_undecodable_record_is_absent_everywhere_and_dropped(
    store: RedisStore,
    raw: redis.Redis,
    key_prefix: str,
    clock: FakeClock,
    damage: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    store.execute(Create(digest(2), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    key = f"{key_prefix}s:{digest(1)}"
    damage(raw, key)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="session_mw.security"):
        assert store.execute(Load(digest(1), LIFE)) is None
        assert [k for k, _ in store.execute(SessionsOf("alice", LIFE))] == [digest(2)]
    assert "undecodable session record dropped" in caplog.text and digest(1) not in caplog.text
    assert not raw.exists(key)  # dropped
    assert not store.execute(Update(digest(1), LIFE, {"a": b"2"}))
    assert not store.execute(Rotate(digest(1), digest(3), meta(clock(), "alice"), {}, LIFE, "alice"))
    assert not raw.exists(f"{key_prefix}s:{digest(3)}")


@pytest.mark.parametrize("field", ["_c", "_d", "_r", "_u"])
def test_the_listing_drops_a_record_whose_meta_does_not_decode(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock, field: str
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    raw.hset(f"{key_prefix}s:{digest(1)}", field, b"\xff")
    assert store.execute(SessionsOf("alice", LIFE)) == []
    assert not raw.exists(f"{key_prefix}s:{digest(1)}") and raw.zcard(f"{key_prefix}u:alice") == 0


def test_a_user_index_of_the_wrong_type_lists_nothing_and_is_dropped(
    store: RedisStore, raw: redis.Redis, key_prefix: str
) -> None:
    raw.set(f"{key_prefix}u:alice", "oops")
    assert store.execute(SessionsOf("alice", LIFE)) == []
    assert not raw.exists(f"{key_prefix}u:alice")


def test_a_record_of_a_newer_format_is_left_alone(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock()), {"a": b"1"}, LIFE))
    raw.hset(f"{key_prefix}s:{digest(1)}", "_v", "9")
    assert store.execute(Load(digest(1), LIFE)) is None
    assert raw.exists(f"{key_prefix}s:{digest(1)}")


def test_scripts_flushed_or_lost_by_a_restart_are_reloaded(
    store: RedisStore, raw: redis.Redis, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock()), {"a": b"1"}, LIFE))
    raw.script_flush()
    assert store.execute(Load(digest(1), LIFE)) is not None
    assert store.execute(Update(digest(1), LIFE, {"a": b"2"}))


def _server_says(server: RedisServer, *command: str) -> None:
    client = redis.Redis(port=server.port)
    client.execute_command(*command)  # type: ignore[no-untyped-call]
    client.close()


def test_out_of_memory_is_unavailable_and_quotes_the_server(redis_server: RedisServer, key_prefix: str) -> None:
    clock = FakeClock()
    store = RedisStore.from_url(redis_server.url, key_prefix, clock=clock)
    store.execute(Create(digest(1), meta(clock()), {"a": b"1"}, LIFE))
    _server_says(redis_server, "CONFIG", "SET", "maxmemory", "1")
    _server_says(redis_server, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    with pytest.raises(
        StoreUnavailable, match=rf"127\.0\.0\.1:{redis_server.port}.*OutOfMemoryError.*maxmemory"
    ) as info:
        store.execute(Update(digest(1), LIFE, {"a": b"2"}))
    assert digest(1) not in str(info.value)
    clock.advance(100)  # a due touch that Redis refuses does not fail the read
    record = store.execute(Load(digest(1), LIFE))
    assert record is not None and record.meta.last_seen == clock() - 100


def test_a_login_whose_index_step_fails_gives_birth_to_nothing(redis_server: RedisServer, key_prefix: str) -> None:
    """The index step and the old session's end share one round trip: Redis out of memory refuses
    the index (ZADD) but not the end (DEL). The user is logged out; no session escapes the index."""
    clock = FakeClock()
    store = RedisStore.from_url(redis_server.url, key_prefix, clock=clock)
    store.execute(Create(digest(1), meta(clock()), {"a": b"1"}, LIFE))
    _server_says(redis_server, "CONFIG", "SET", "maxmemory", "1")
    _server_says(redis_server, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    with pytest.raises(StoreUnavailable, match="OutOfMemoryError"):
        store.execute(Rotate(digest(1), digest(2), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    _server_says(redis_server, "CONFIG", "SET", "maxmemory", "0")
    assert store.execute(Load(digest(2), LIFE)) is None
    assert store.execute(Load(digest(1), LIFE)) is None
    assert store.execute(SessionsOf("alice", LIFE)) == []


def test_a_read_only_replica_is_unavailable(redis_server: RedisServer, key_prefix: str) -> None:
    store = RedisStore.from_url(redis_server.url, key_prefix)
    _server_says(redis_server, "REPLICAOF", "127.0.0.1", str(free_port()))  # nobody there: stays read-only
    with pytest.raises(StoreUnavailable, match="read only replica"):
        store.execute(Create(digest(1), meta(1.0), {"a": b"1"}, LIFE))


def test_a_bad_db_index_fails_the_start_up_check(redis_server: RedisServer, key_prefix: str) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{redis_server.port}/99", key_prefix)
    with pytest.raises(ConfigError, match="DB index is out of range"):
        store.execute(Check())
    with pytest.raises(StoreUnavailable, match="DB index is out of range"):
        store.execute(Load(digest(1), LIFE))


def test_a_port_that_does_not_speak_redis_is_unavailable(key_prefix: str) -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def babble() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=babble, daemon=True).start()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", key_prefix, connect_timeout=0.5, timeout=0.5)
    with pytest.raises(StoreUnavailable, match=rf"127\.0\.0\.1:{port}"):
        store.execute(Load(digest(1), LIFE))
    store.execute(Check())  # not fatal at start-up: only logged
    listener.close()


def test_an_outage_at_start_up_is_only_a_warning(key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", key_prefix, connect_timeout=0.2, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="session_mw"):
        store.execute(Check())
    assert "not reachable at start-up" in caplog.text


def test_delete_with_the_user_cleans_the_index_at_once(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    store.execute(Delete(digest(1), "alice"))
    assert raw.zcard(f"{key_prefix}u:alice") == 0


def test_a_user_index_member_that_is_no_digest_is_dropped(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    raw.zadd(f"{key_prefix}u:alice", {b"\xff\xfe": 0})
    assert [k for k, _ in store.execute(SessionsOf("alice", LIFE))] == [digest(1)]
    assert raw.zrange(f"{key_prefix}u:alice", 0, -1) == [digest(1).encode()]


def test_a_first_release_index_is_migrated_to_a_sorted_set_in_place(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    """The first release kept a plain set of digests; it is read, and becomes a sorted set."""
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    index = f"{key_prefix}u:alice"
    raw.delete(index)
    raw.sadd(index, digest(1), digest(2))  # digest(2): a session long gone
    raw.expire(index, 3600)
    assert [k for k, _ in store.execute(SessionsOf("alice", LIFE))] == [digest(1)]
    assert raw.type(index) == b"zset" and raw.zrange(index, 0, -1) == [digest(1).encode()]
    assert 0 < raw.ttl(index) <= 3600


def test_an_index_entry_of_a_session_being_born_is_kept_a_stale_one_dropped(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    """A rotate names its new session in the index before the session exists: a listing in
    between must not drop that entry (the session would escape "log out everywhere")."""
    index = f"{key_prefix}u:alice"
    raw.zadd(index, {digest(7): clock(), digest(8): clock() - 301})
    assert store.execute(SessionsOf("alice", LIFE)) == []
    assert raw.zrange(index, 0, -1) == [digest(7).encode()]


def test_a_revoke_all_refuses_the_birth_of_a_session_it_listed(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    """Between a rotate's steps (the new session named in the index, the old one taken) a
    revoke finds the new digest without its session: it leaves a tombstone, and the birth fails."""
    now = clock()
    store.execute(Create(digest(1), meta(now, "alice"), {"a": b"1"}, LIFE))
    raw.zadd(f"{key_prefix}u:alice", {digest(2): now})  # the first step of a rotate to digest(2)
    assert store.execute(RevokeAll("alice", LIFE)) == [digest(1)]
    assert store.execute(Create(digest(2), meta(now, "alice"), {"a": b"1"}, LIFE)) is None
    assert store.execute(Load(digest(2), LIFE)) is None and store.execute(SessionsOf("alice", LIFE)) == []
    assert raw.hgetall(f"{key_prefix}s:{digest(2)}") == {b"_x": b"1"} and raw.pttl(f"{key_prefix}s:{digest(2)}") > 0


def test_a_user_with_many_sessions_is_listed_and_revoked_in_bounded_pages(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    """More sessions than a page (256): the listing reads the index with ZSCAN and the sessions
    with HMGET pages, no single command over every entry; revoking ends them all."""
    many = 600
    for n in range(many):
        store.execute(Create(digest(n), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    assert raw.zcard(f"{key_prefix}u:alice") == many
    assert len(store.execute(SessionsOf("alice", LIFE))) == many
    assert len(store.execute(RevokeAll("alice", LIFE))) == many
    assert store.execute(SessionsOf("alice", LIFE)) == [] and raw.zcard(f"{key_prefix}u:alice") == 0


def test_a_retired_hash_is_marked_kept_for_the_grace_only_and_still_indexed(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    """The take step of a grace rotate keeps the old hash as it was, plus ``_g`` (the end of the
    grace), ``_f`` (the successor) and ``_v`` 3 (a format format-2 readers refuse: to them it is empty), with
    a TTL of the grace plus the margin; its user's index still names it, for "log out everywhere"."""
    now = clock()
    store.execute(Create(digest(1), meta(now, "alice"), {"a": b"1"}, LIFE))
    old = cast("dict[bytes, bytes]", raw.hgetall(f"{key_prefix}s:{digest(1)}"))
    assert store.execute(Rotate(digest(1), digest(2), meta(now, "alice"), {"a": b"1"}, LIFE, "alice", grace=5.0))
    retired = cast("dict[bytes, bytes]", raw.hgetall(f"{key_prefix}s:{digest(1)}"))
    assert retired == old | {b"_g": repr(now + 5.0).encode(), b"_v": b"3", b"_f": digest(2).encode()}
    assert 5000 < raw.pttl(f"{key_prefix}s:{digest(1)}") <= 6000
    assert raw.zscore(f"{key_prefix}u:alice", digest(1)) is not None
    assert raw.hget(f"{key_prefix}s:{digest(2)}", "_v") == b"2" and not raw.hexists(f"{key_prefix}s:{digest(2)}", "_g")


def test_a_load_of_a_retired_hash_writes_nothing_and_one_past_its_grace_is_deleted(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock(), "alice"), {"a": b"1"}, LIFE))
    clock.advance(100)  # a touch is due
    assert store.execute(Rotate(digest(1), digest(2), meta(clock(), "alice"), {}, LIFE, "alice", grace=5.0))
    raw.config_resetstat()
    record = store.execute(Load(digest(1), LIFE))
    assert record is not None and record.meta.last_seen == clock() - 100
    stats = raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert "cmdstat_hset" not in stats and "cmdstat_pexpire" not in stats and "cmdstat_del" not in stats
    clock.advance(5.0)  # the grace is over by the store's clock, long before Redis's TTL
    assert store.execute(Load(digest(1), LIFE)) is None
    assert not raw.exists(f"{key_prefix}s:{digest(1)}")


def test_a_hash_of_the_retired_format_that_is_not_retired_is_a_newer_format(
    store: RedisStore, raw: redis.Redis, key_prefix: str, clock: FakeClock
) -> None:
    store.execute(Create(digest(1), meta(clock()), {"a": b"1"}, LIFE))
    raw.hset(f"{key_prefix}s:{digest(1)}", "_v", "3")
    assert store.execute(Load(digest(1), LIFE)) is None
    assert raw.exists(f"{key_prefix}s:{digest(1)}")  # not ours to drop
