"""Encryption at rest end to end: every door (ASGI through Starlette, bare WSGI, Flask) on
memory, a SQLite file and a private Redis, with ``encryption_keys`` set.

The app sees its plain session; the backing store, read without the key, holds only sealed
values; a value tampered with in the store ends the session as if it had expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import UNBOUNDED, Close, Load, Record, Update
from session_mw.stores.sealed import MAGIC, AsyncSealedStore, SealedStore
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import FakeClock
from session_mw.tokens import Digester
from tests.doors.apps import DOORS
from tests.doors.harness import Clients, Counting, cookie, expired, live_keys, token_of

SECRET = "the door suite's encryption secret"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sessions.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def config(config: SessionConfig) -> SessionConfig:
    """The door suite's settings, sealed at rest."""
    return config.replace(encryption_keys=(SECRET,))


@pytest.fixture
def raw(store: Counting, config: SessionConfig, clock: FakeClock) -> Iterator[Store]:
    """The backing store without the key: what someone reading the store sees."""
    sealed = store.inner
    assert isinstance(sealed, (SealedStore, AsyncSealedStore))
    if config.store_url == "memory://":
        inner = sealed.inner
        if isinstance(inner, AsyncFromSync):
            yield inner.sync
        else:
            assert isinstance(sealed, SealedStore)
            yield sealed.inner
        return
    plain = open_store(config.replace(encryption_keys=()), clock=clock)
    assert not isinstance(plain, SealedStore)
    yield plain
    plain.execute(Close())


def _key(token: str | None) -> str:
    assert token is not None
    return Digester(None)(token)


def _stored(raw: Store, token: str | None) -> Record:
    record = raw.execute(Load(_key(token), UNBOUNDED))
    assert record is not None
    return record


def test_a_round_trip_is_plain_to_the_app_and_sealed_in_the_store(client: httpx.Client, raw: Store) -> None:
    r = client.post("/cart", json={"item": "apple"})
    token = token_of(r)
    client.post("/cart", json={"item": "pear"})
    assert client.get("/cart").json() == {"cart": ["apple", "pear"], "user": None}
    record = _stored(raw, token)
    assert set(record.data) == {"cart"}
    assert record.data["cart"].startswith(MAGIC) and b"apple" not in record.data["cart"]


def test_login_rotates_to_a_new_key_whose_values_open_and_are_listed(client: httpx.Client, raw: Store) -> None:
    client.post("/cart", json={"item": "apple"})
    r = client.post("/login", json={"user": "alice"})
    token = token_of(r)
    client.post("/note", json={"note": "meet at noon"})
    assert client.get("/whoami").json() == {"user": "alice", "note": "meet at noon", "cart": ["apple"]}
    record = _stored(raw, token)
    assert record.meta.user_id == "alice"  # metadata stays plain: the store lists the user's sessions
    assert live_keys(raw, "alice") == [_key(token)]
    assert all(value.startswith(MAGIC) for value in record.data.values())
    assert all(b"noon" not in value and b"apple" not in value for value in record.data.values())
    sessions = client.get("/sessions").json()
    assert len(sessions) == 1 and sessions[0]["current"]


def test_a_value_tampered_with_in_the_store_ends_the_session(
    client: httpx.Client, raw: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="session_mw.security")
    client.post("/login", json={"user": "alice"})
    r = client.post("/note", json={"note": "mine"})
    token = token_of(client.post("/elevate"))  # a new token, with "admin" sealed under it
    assert token is not None and r.status_code == 200
    # someone with write access to the store makes the "note" value say "admin" was never false
    record = _stored(raw, token)
    assert raw.execute(Update(_key(token), UNBOUNDED, {"note": record.data["admin"]}))
    r = client.get("/whoami")
    assert r.json() == {"user": None, "note": None, "cart": []} and expired(r)  # as if it had expired
    assert raw.execute(Load(_key(token), UNBOUNDED)) is None
    assert live_keys(raw, "alice") == []
    warnings = [rec.getMessage() for rec in caplog.records if rec.name == "session_mw.security"]
    assert any("failed authentication" in message for message in warnings)
    assert all(token not in message and _key(token) not in message for message in warnings)


def test_a_session_moving_to_a_new_digest_key_is_sealed_anew(
    door: str, config: SessionConfig, store: Counting, raw: Store, clock: FakeClock
) -> None:
    """``previous_digest_keys``: the engine moves the session to its new store key with a rotate,
    and the values are sealed for that key (the old key's associated data would not open there)."""
    old, new = "the digest key of last year", "the digest key of this year"
    before = config.replace(digest_key=old)
    after = config.replace(digest_key=new, previous_digest_keys=(old,))
    # an asyncio Redis client belongs to one event loop, and each app's test client runs its own
    # (left open, as the door fixtures leave theirs: its loop is gone when the test ends)
    own_store = door == "asgi" and config.store_url.startswith("redis")
    later = Counting(open_async_store(after, clock=clock)) if own_store else store
    first = Clients(door, DOORS[door](before, store, Engine(before, clock=clock)))
    second = Clients(door, DOORS[door](after, later, Engine(after, clock=clock)))
    try:
        token = token_of(first.new().post("/note", json={"note": "kept"}))
        assert token is not None
        browser = second.new()
        r = browser.post("/cart", json={"item": "apple"}, headers=cookie(token))
        assert r.status_code == 200
        assert browser.get("/whoami", headers=cookie(token)).json()["note"] == "kept"
        moved = raw.execute(Load(Digester(new)(token), UNBOUNDED))
        assert moved is not None and set(moved.data) == {"note", "cart"}
        assert all(value.startswith(MAGIC) for value in moved.data.values())
        assert raw.execute(Load(Digester(old)(token), UNBOUNDED)) is None
    finally:
        first.close()
        second.close()
