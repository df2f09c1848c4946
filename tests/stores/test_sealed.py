"""Encryption at rest (``SealedStore``) over real stores: memory, a SQLite file, a private Redis.

What the backing store holds is read directly (SQLite rows, the Redis hash) to show values are
sealed and metadata is not; tampering is done with the store's own writes, as someone with
write access to the store would.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from session_mw.config import SessionConfig
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import (
    INLINE_LOADS,
    LOCKS,
    Close,
    Create,
    Delete,
    Load,
    Op,
    Record,
    Rotate,
    SessionsOf,
    Update,
    WouldBlock,
)
from session_mw.stores.memory import MemoryStore
from session_mw.stores.redis import RedisStore
from session_mw.stores.sealed import MAGIC, AsyncSealedStore, SealedStore
from session_mw.stores.sqlite import SQLiteStore
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import LIFE, FakeClock, LockContract, StoreContract, SyncFromAsync, create, digest, load, meta
from tests.test_extras import without

A = "first secret: sixteen+ chars"
B = "second secret: also long enough"
C = "a secret nobody configured here"
CART = b'["apple","pear"]'
NOTE = b'"top secret note"'


def _closed(store: Store) -> Iterator[Store]:
    yield store
    store.execute(Close())
    if isinstance(store, SyncFromAsync):
        store.close_loop()


# -- the whole store contract, through the wrapper ------------------------------------------------


class TestSealedMemory(StoreContract, LockContract):
    @pytest.fixture
    def store(self, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(SealedStore(MemoryStore(clock), [A]))


class TestSealedSQLite(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
        yield from _closed(SealedStore(SQLiteStore(tmp_path / "s.db", clock=clock), [A, B]))


class TestSealedSQLiteAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=f"sqlite:///{tmp_path}/s.db", encryption_keys=(A,))
        yield from _closed(SyncFromAsync(open_async_store(config, clock=clock)))


class TestSealedRedis(StoreContract, LockContract):
    @pytest.fixture
    def store(self, redis_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=redis_url, key_prefix=key_prefix, encryption_keys=(A,))
        yield from _closed(open_store(config, clock=clock))


class TestSealedRedisAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, redis_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Store]:
        config = SessionConfig(store_url=redis_url, key_prefix=key_prefix, encryption_keys=(A,))
        yield from _closed(SyncFromAsync(open_async_store(config, clock=clock)))


# -- one backend at a time: the inner store, sealed views of it, and its raw bytes ----------------


@dataclass
class Backend:
    kind: str
    inner: Store
    raw: Any  # a sqlite3 connection to the file, a redis.Redis client, or the MemoryStore itself
    prefix: str = ""

    def sealed(self, *secrets: str) -> SealedStore:
        return SealedStore(self.inner, secrets)

    def raw_values(self, n: int) -> dict[str, bytes]:
        """The app keys' values exactly as the backend holds them."""
        if self.kind == "sqlite":
            rows = self.raw.execute("SELECT name, value FROM session_values WHERE digest = ?", (digest(n),))
            return {name: bytes(value) for name, value in rows}
        if self.kind == "redis":
            fields = self.raw.hgetall(f"{self.prefix}s:{digest(n)}")
            return {k[2:].decode(): v for k, v in fields.items() if k.startswith(b"k:")}
        entry = self.raw._records.get(digest(n))
        return {} if entry is None else dict(entry[0])

    def raw_user(self, n: int) -> str | None:
        if self.kind == "sqlite":
            row = self.raw.execute("SELECT user_id FROM sessions WHERE digest = ?", (digest(n),)).fetchone()
            return None if row is None else str(row[0])
        if self.kind == "redis":
            value = self.raw.hget(f"{self.prefix}s:{digest(n)}", "_u")
            return None if value is None else str(value.decode())
        entry = self.raw._records.get(digest(n))
        return None if entry is None else str(entry[1].user_id)

    def poke(self, n: int, name: str, value: bytes) -> None:
        """Overwrite one stored value behind the wrapper's back, in the backend's own terms."""
        if self.kind == "sqlite":
            with self.raw:
                self.raw.execute(
                    "UPDATE session_values SET value = ? WHERE digest = ? AND name = ?", (value, digest(n), name)
                )
        elif self.kind == "redis":
            self.raw.hset(f"{self.prefix}s:{digest(n)}", "k:" + name, value)
        else:
            assert self.inner.execute(Update(digest(n), LIFE, {name: value}))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, key_prefix: str) -> Iterator[Backend]:
    if request.param == "memory":
        memory = MemoryStore(clock)
        yield Backend("memory", memory, memory)
    elif request.param == "sqlite":
        path = tmp_path / "s.db"
        inner = SQLiteStore(path, clock=clock)
        inner.execute(Load(digest(0), LIFE))  # creates the schema
        conn = sqlite3.connect(path)
        yield Backend("sqlite", inner, conn)
        conn.close()
        inner.execute(Close())
    else:
        import redis

        url = str(request.getfixturevalue("redis_url"))
        store = open_store(SessionConfig(store_url=url, key_prefix=key_prefix), clock=clock)
        client = redis.Redis.from_url(url)
        yield Backend("redis", store, client, key_prefix)
        client.close()
        store.execute(Close())


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="session_mw.security")
    return caplog


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "session_mw.security" and r.levelno >= logging.WARNING]


def _assert_dropped(backend: Backend, store: SealedStore, n: int, caplog: pytest.LogCaptureFixture, why: str) -> None:
    """Load finds nothing, the record is gone from the backend, one warning says why and nothing else."""
    caplog.clear()
    assert load(store, n) is None
    assert load(backend.inner, n) is None and backend.raw_values(n) == {}
    (message,) = _warnings(caplog)
    assert why in message
    for secret in (A, B, C, digest(n), "apple", "secret note", "cart"):
        assert secret not in message


def test_values_in_the_backing_store_are_sealed_and_round_trip(backend: Backend, clock: FakeClock) -> None:
    store = backend.sealed(A)
    m = create(store, clock, 1, {"cart": CART, "note": NOTE}, user="alice")
    raw = backend.raw_values(1)
    assert set(raw) == {"cart", "note"}  # the names stay plain
    for name, plain in (("cart", CART), ("note", NOTE)):
        assert raw[name].startswith(MAGIC) and plain not in raw[name] and b"apple" not in raw[name]
        assert len(raw[name]) == len(plain) + 2 + 4 + 12 + 16
    assert raw["cart"][:6] == raw["note"][:6] and raw["cart"][6:18] != raw["note"][6:18]  # one key id, fresh nonces
    record = load(store, 1)
    assert record is not None and dict(record.data) == {"cart": CART, "note": NOTE} and record.meta == m


def test_the_same_value_twice_is_sealed_differently(backend: Backend, clock: FakeClock) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"x": b"1"})
    first = backend.raw_values(1)["x"]
    assert store.execute(Update(digest(1), LIFE, {"x": b"1"}))
    assert backend.raw_values(1)["x"] != first


def test_metadata_stays_readable_listing_and_expiry_work(backend: Backend, clock: FakeClock) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART}, user="alice")
    clock.advance(1)
    create(store, clock, 2, {"cart": CART}, user="alice")
    assert backend.raw_user(1) == "alice"
    # the inner store alone (no key) lists the user's sessions with their metadata
    listed = backend.inner.execute(SessionsOf("alice", LIFE))
    assert [key for key, _ in listed] == [digest(1), digest(2)]
    assert [m.user_id for _, m in listed] == ["alice", "alice"]
    assert [key for key, _ in store.execute(SessionsOf("alice", LIFE))] == [digest(1), digest(2)]
    # expiry is the store's, on plain metadata: idle past the timeout, both are gone
    clock.advance(LIFE.idle_timeout + 1)
    assert load(store, 1) is None and load(backend.inner, 2) is None
    assert store.execute(SessionsOf("alice", LIFE)) == []


def test_a_flipped_byte_drops_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART, "note": NOTE}, user="alice")
    sealed = bytearray(backend.raw_values(1)["note"])
    sealed[-20] ^= 0x01  # inside the ciphertext
    backend.poke(1, "note", bytes(sealed))
    _assert_dropped(backend, store, 1, security_log, "failed authentication")
    assert store.execute(SessionsOf("alice", LIFE)) == []  # gone from the user's index too


@pytest.mark.parametrize("where", ["tag", "nonce", "key id"])
def test_a_flip_anywhere_in_the_value_drops_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture, where: str
) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART})
    sealed = bytearray(backend.raw_values(1)["cart"])
    sealed[{"tag": -1, "nonce": 8, "key id": 3}[where]] ^= 0x80
    backend.poke(1, "cart", bytes(sealed))
    why = "not configured" if where == "key id" else "failed authentication"
    _assert_dropped(backend, store, 1, security_log, why)


def test_a_value_swapped_between_two_sessions_drops_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"role": b'"admin"'}, user="root")
    create(store, clock, 2, {"role": b'"guest"'}, user="mallory")
    backend.poke(2, "role", backend.raw_values(1)["role"])  # mallory copies root's sealed value
    _assert_dropped(backend, store, 2, security_log, "failed authentication")
    record = load(store, 1)  # the victim's record is untouched
    assert record is not None and record.data["role"] == b'"admin"'


def test_values_swapped_between_two_fields_drop_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"is_admin": b"false", "wants_newsletter": b"true"})
    raw = backend.raw_values(1)
    backend.poke(1, "is_admin", raw["wants_newsletter"])
    _assert_dropped(backend, store, 1, security_log, "failed authentication")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"true", "not sealed"),  # a plain value, as a record written before encryption holds
        (MAGIC + b"\x00" * 10, "truncated"),
        (b"", "not sealed"),
    ],
)
def test_a_value_that_is_not_sealed_drops_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture, value: bytes, why: str
) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART, "is_admin": b"false"})
    backend.poke(1, "is_admin", value)
    _assert_dropped(backend, store, 1, security_log, why)


def test_a_record_written_before_encryption_was_enabled_is_dropped(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    create(backend.inner, clock, 1, {"cart": CART}, user="alice")  # the app before encryption_keys
    create(backend.inner, clock, 2, {}, user="alice")  # a session with no values holds nothing to open
    _assert_dropped(backend, backend.sealed(A), 1, security_log, "not sealed")
    record = load(backend.sealed(A), 2)
    assert record is not None and record.meta.user_id == "alice"


def test_a_wrong_key_drops_the_record(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    create(backend.sealed(A), clock, 1, {"cart": CART})
    _assert_dropped(backend, backend.sealed(C), 1, security_log, "not configured")


def test_key_rotation_old_secrets_open_new_writes_use_the_first(
    backend: Backend, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    create(backend.sealed(A), clock, 1, {"cart": CART, "note": NOTE})
    create(backend.sealed(A), clock, 2, {"cart": CART})
    create(backend.sealed(A), clock, 3, {"cart": CART})
    old_id = backend.raw_values(1)["cart"][2:6]
    rotated = backend.sealed(B, A)  # the new secret first, the old one still listed
    record = load(rotated, 1)
    assert record is not None and dict(record.data) == {"cart": CART, "note": NOTE}
    # an update re-seals the values it writes, with the first secret; the others stay as they are
    assert rotated.execute(Update(digest(1), LIFE, {"cart": b"[]"}))
    raw = backend.raw_values(1)
    assert raw["cart"][2:6] != old_id and raw["note"][2:6] == old_id
    # a session whose values were all rewritten, or that rotated (a login), needs only B
    assert rotated.execute(Update(digest(2), LIFE, {"cart": b"[]"}))
    assert rotated.execute(Rotate(digest(3), digest(4), meta(clock()), {"cart": CART}, LIFE))
    only_b = backend.sealed(B)
    for n, data in ((2, {"cart": b"[]"}), (4, {"cart": CART})):
        record = load(only_b, n)
        assert record is not None and dict(record.data) == data
    # one value still sealed with the retired secret: that record cannot be opened any more
    _assert_dropped(backend, only_b, 1, security_log, "not configured")


def test_a_rotate_seals_for_the_new_key(backend: Backend, clock: FakeClock) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART})
    record = load(store, 1)
    assert record is not None
    assert store.execute(Rotate(digest(1), digest(2), record.meta, record.data, LIFE))
    moved = load(store, 2)
    assert moved is not None and dict(moved.data) == {"cart": CART}
    assert backend.raw_values(2)["cart"].startswith(MAGIC)


def test_a_rotate_with_grace_keeps_the_old_key_readable(backend: Backend, clock: FakeClock) -> None:
    create(backend.inner, clock, 8, {})
    assert backend.inner.execute(Rotate(digest(8), digest(9), meta(clock()), {}, LIFE, grace=10))
    if load(backend.inner, 8) is None:
        pytest.skip(f"the {backend.kind} store does not keep a retired key yet (Rotate.grace)")
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART})
    assert store.execute(Rotate(digest(1), digest(2), meta(clock()), {"cart": CART}, LIFE, grace=10))
    old = load(store, 1)
    assert old is not None and old.meta.retired_until > 0 and dict(old.data) == {"cart": CART}


def test_an_update_without_values_and_deletes_pass_through(backend: Backend, clock: FakeClock) -> None:
    store = backend.sealed(A)
    create(store, clock, 1, {"cart": CART, "note": NOTE}, user="alice")
    assert store.execute(Update(digest(1), LIFE, delete=("note",), remember=True))
    record = load(store, 1)
    assert record is not None and dict(record.data) == {"cart": CART} and record.meta.remember
    store.execute(Delete(digest(1), "alice"))
    assert load(backend.inner, 1) is None


# -- the async face, inline loads, and what the wrapper refuses --------------------------------------


def test_an_inline_load_of_a_corrupt_record_defers_the_delete(tmp_path: Path, clock: FakeClock) -> None:
    """A ``Load(wait=False)`` must not wait, and deleting may: it says ``WouldBlock`` instead,
    and the waiting load (run in a worker thread by ``AsyncFromSync``) drops the record."""
    inner = SQLiteStore(tmp_path / "s.db", clock=clock)
    store = SealedStore(inner, [A])
    create(SealedStore(inner, [C]), clock, 1, {"cart": CART})
    with pytest.raises(WouldBlock):
        store.execute(Load(digest(1), LIFE, wait=False))
    assert load(inner, 1) is not None
    front = SyncFromAsync(AsyncFromSync(store, offload=True))
    assert front.execute(Load(digest(1), LIFE)) is None
    assert load(inner, 1) is None
    front.close_loop()
    inner.execute(Close())


def test_the_async_face_drops_a_corrupt_record(
    redis_url: str, key_prefix: str, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    config = SessionConfig(store_url=redis_url, key_prefix=key_prefix, encryption_keys=(A,))
    store = SyncFromAsync(open_async_store(config, clock=clock))
    plain = open_store(config.replace(encryption_keys=()), clock=clock)
    create(store, clock, 1, {"cart": CART})
    record = load(plain, 1)
    assert record is not None and record.data["cart"].startswith(MAGIC)
    assert plain.execute(Update(digest(1), LIFE, {"cart": CART}))  # plain over sealed
    assert load(store, 1) is None and load(plain, 1) is None
    assert any("not sealed" in m for m in _warnings(security_log))
    store.execute(Close())
    store.close_loop()
    plain.execute(Close())


@dataclass(frozen=True, slots=True)
class Stash(Op[None]):
    """An operation of a newer store that carries values the wrapper does not know how to seal."""

    handler = "on_stash"
    key: str
    data: dict[str, bytes]


def test_an_unknown_operation_carrying_values_is_refused(clock: FakeClock) -> None:
    store = SealedStore(MemoryStore(clock), [A])
    with pytest.raises(NotImplementedError):
        store.execute(Stash(digest(1), {"x": b"1"}))


def test_capabilities_are_kept_and_reprs_show_no_secret(tmp_path: Path, clock: FakeClock) -> None:
    sqlite = SQLiteStore(tmp_path / "s.db", clock=clock)
    sealed = SealedStore(sqlite, [A, B])
    assert sealed.capabilities == sqlite.capabilities and INLINE_LOADS in sealed.capabilities
    assert LOCKS in SealedStore(MemoryStore(clock), [A]).capabilities
    for shown in (repr(sealed), repr(sealed.sealer), str(sealed)):
        assert A not in shown and B not in shown and "secrets=2" in shown
    assert "secrets=1" in repr(SealedStore(MemoryStore(clock), [A, A]))  # a repeated secret is one key


def test_open_store_seals_only_when_keys_are_configured(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    for url, kind in (
        ("memory://", MemoryStore),
        (f"sqlite:///{tmp_path}/s.db", SQLiteStore),
        (redis_url, RedisStore),
    ):
        config = SessionConfig(store_url=url, key_prefix=key_prefix)
        plain = open_store(config)
        assert isinstance(plain, kind)
        plain.execute(Close())
        sealed = open_store(config.replace(encryption_keys=(A,)))
        assert isinstance(sealed, SealedStore) and isinstance(sealed.inner, kind)
        sealed.execute(Close())
        async_sealed = open_async_store(config.replace(encryption_keys=(A,)))
        assert isinstance(async_sealed, AsyncSealedStore)
        assert not isinstance(async_sealed.inner, AsyncSealedStore)  # sealed once, not twice
        if isinstance(async_sealed.inner, AsyncFromSync):
            assert isinstance(async_sealed.inner.sync, kind)


def test_the_environment_switches_it_on(clock: FakeClock) -> None:
    config = SessionConfig.from_env(
        environ={"SESSION_MW_STORE_URL": "memory://", "SESSION_MW_ENCRYPTION_KEYS": f"{B}, {A}"}
    )
    store = open_store(config, clock=clock)
    assert isinstance(store, SealedStore) and store.sealer.secrets == 2
    store.execute(Create(digest(1), meta(clock()), {"x": b"1"}, LIFE))
    record: Record | None = SealedStore(store.inner, [B]).execute(Load(digest(1), LIFE))  # B seals: first listed
    assert record is not None and record.data == {"x": b"1"}


def test_without_cryptography_enabling_it_names_the_extra(tmp_path: Path) -> None:
    code = (
        "from session_mw import SessionConfig\n"
        "from session_mw.stores import open_store\n"
        f"open_store(SessionConfig(store_url='memory://', encryption_keys=({A!r},)))\n"
    )
    result = without(("cryptography",), code, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: encryption at rest (encryption_keys) needs the encryption extra: "
        "pip install 'session_mw[encryption]'"
    )
    # and without it, nothing else needs it
    assert without(("cryptography",), "from session_mw.stores import open_store\nprint('ok')").returncode == 0
