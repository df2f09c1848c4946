"""Redis-only promises: one round trip per operation, and one record format for both faces."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from session_mw.config import SessionConfig
from session_mw.stores.base import Write
from session_mw.stores.redis import AsyncRedisStore, RedisStore
from session_mw.testing import meta, touch


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_load_and_write_are_one_round_trip_each(redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, key_prefix)
    m = meta(user="alice")
    store.write(Write("create", "a" * 64, m, 60, set={"cart": b"[]"}))  # loads the scripts once
    store.load("a" * 64, touch())
    raw.config_resetstat()
    store.load("a" * 64, touch())
    store.write(Write("update", "a" * 64, m, 60, set={"cart": b"[1]"}))
    stats = raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 2  # one script call per operation...
    assert "cmdstat_get" not in stats and "cmdstat_hgetall" in stats  # ...whose commands run inside Redis
    store.close()


def test_a_read_inside_the_touch_interval_writes_nothing(redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, key_prefix)
    m = meta()
    store.write(Write("create", "b" * 64, m, 60, set={"x": b"1"}))
    raw.config_resetstat()
    store.load("b" * 64, touch(m.last_seen + 1, interval=60))
    stats = raw.info("commandstats")
    assert "cmdstat_hset" not in stats and "cmdstat_pexpire" not in stats
    store.close()


def test_sync_and_async_faces_share_one_record_format(redis_url: str, key_prefix: str) -> None:
    config = SessionConfig(store_url=redis_url, key_prefix=key_prefix)
    sync = RedisStore.from_url(config.store_url, key_prefix)
    m = meta(user="alice")
    sync.write(Write("create", "c" * 64, m, 60, set={"cart": b'["apple"]'}))

    async def through_async() -> None:
        store = AsyncRedisStore.from_url(config.store_url, key_prefix)
        record = await store.load("c" * 64, touch())
        assert record is not None and record.data == {"cart": b'["apple"]'} and record.meta == m
        await store.write(Write("update", "c" * 64, m, 60, set={"cart": b'["apple","pear"]'}))
        await store.close()

    asyncio.run(through_async())
    record = sync.load("c" * 64, touch())
    assert record is not None and record.data == {"cart": b'["apple","pear"]'}
    assert [k for k, _ in sync.user_sessions("alice")] == ["c" * 64]
    sync.close()


def test_keys_are_digests_under_the_prefix(redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, key_prefix)
    store.write(Write("create", "d" * 64, meta(user="bob"), 60, set={"x": b"1"}))
    keys = sorted(k.decode() for k in raw.scan_iter(match=f"{key_prefix}*"))
    assert keys == [f"{key_prefix}s:{'d' * 64}", f"{key_prefix}u:bob"]
    assert raw.pttl(f"{key_prefix}s:{'d' * 64}") > 0 and raw.ttl(f"{key_prefix}u:bob") > 0
    store.close()
