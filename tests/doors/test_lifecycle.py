"""Regression tests of the lifecycle defects, through every door (ASGI, WSGI, Flask) on every store.

Each test names the defect of the lifecycle issue it covers; each failed on the first release.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import UNBOUNDED, Delete, RevokeAll, SessionsOf
from session_mw.stores.memory import MemoryStore
from session_mw.stores.redis import RedisStore
from session_mw.testing import FakeClock
from session_mw.tokens import new_token
from tests.doors.apps import DOORS, HOOKS
from tests.doors.harness import COOKIE, Clients, Counting, cookie, expired, live_keys, stored, token_of


def login(client: httpx.Client, user: str, **headers: str) -> str:
    token = token_of(client.post("/login", json={"user": user}, headers=headers))
    assert token
    return token


def made(door: str, config: SessionConfig, clock: FakeClock) -> Clients:
    return made_with_view(door, config, clock)[0]


def made_with_view(door: str, config: SessionConfig, clock: FakeClock) -> tuple[Clients, Store]:
    """An app of its own (other settings than the fixture's), and a sync view of its store."""
    from session_mw.stores.threaded import AsyncFromSync

    store: Any = open_async_store(config, clock=clock) if door == "asgi" else open_store(config, clock=clock)
    view: Store = store.sync if isinstance(store, AsyncFromSync) else store
    if door == "asgi" and not isinstance(store, AsyncFromSync):
        view = open_store(config, clock=clock)
    return Clients(door, DOORS[door](config, Counting(store), Engine(config, clock=clock))), view


# -- 1. a rotate never resurrects a killed session ------------------------------------------


@pytest.mark.parametrize("kill", ["delete", "revoke_all"])
def test_1_a_login_that_finishes_after_the_session_was_killed_resurrects_nothing(
    clients: Clients, view: Store, kill: str
) -> None:
    tab, other = clients.new(), clients.new()
    token = login(tab, "alice")
    [key] = live_keys(view, "alice")
    other_token = login(other, "alice")
    if kill == "delete":  # the CLI, or a logout in another tab
        HOOKS["race"] = lambda: view.execute(Delete(key))
    else:  # "log out everywhere" from another device, while this request runs

        def everywhere() -> None:
            for k, _ in view.execute(SessionsOf("alice", UNBOUNDED)):
                view.execute(Delete(k, "alice"))

        HOOKS["race"] = everywhere
    r = tab.post("/race-login", json={"user": "alice"}, headers=cookie(token))
    assert r.status_code == 200 and expired(r)
    assert stored(view, key) is None
    assert tab.get("/whoami", headers=cookie(token)).json()["user"] is None
    left = live_keys(view, "alice")
    assert left == ([] if kill == "revoke_all" else [k for k in left if k != key])
    if kill == "delete":
        assert other.get("/whoami", headers=cookie(other_token)).json()["user"] == "alice"


def test_1_a_privilege_change_after_a_kill_writes_nothing(clients: Clients, view: Store) -> None:
    tab = clients.new()
    token = login(tab, "alice")
    [key] = live_keys(view, "alice")
    HOOKS["race"] = lambda: view.execute(Delete(key))
    r = tab.post("/race-regenerate", headers=cookie(token))
    assert expired(r) and live_keys(view, "alice") == []


def test_1_two_concurrent_regenerates_of_one_token_leave_one_live_session(clients: Clients, view: Store) -> None:
    first, second = clients.new(), clients.new()
    token = login(first, "alice")
    answers: list[httpx.Response] = []
    HOOKS["race"] = lambda: answers.append(second.post("/elevate", headers=cookie(token)))
    r = first.post("/race-regenerate", headers=cookie(token))
    assert len(live_keys(view, "alice")) == 1
    assert expired(r) and not expired(answers[0])  # the second rotate won; the first was refused
    winner = token_of(answers[0])
    assert winner and first.get("/whoami", headers=cookie(winner)).json()["user"] == "alice"


def test_1_with_locking_a_kill_during_a_login_resurrects_nothing(
    door: str, config: SessionConfig, clock: FakeClock
) -> None:
    made_, view = made_with_view(door, config.replace(locking=True), clock)
    try:
        tab = made_.new()
        token = login(tab, "alice")
        [key] = live_keys(view, "alice")
        HOOKS["race"] = lambda: view.execute(Delete(key))
        r = tab.post("/race-login", json={"user": "alice"}, headers=cookie(token))
        assert expired(r) and live_keys(view, "alice") == []
    finally:
        made_.close()


# -- 2. active users are never logged out ---------------------------------------------------


@pytest.mark.parametrize("idle", [2.0, 3.7, 60.0])
def test_2_a_user_active_more_often_than_90_percent_of_idle_stays_logged_in(
    door: str, config: SessionConfig, clock: FakeClock, idle: float
) -> None:
    made_ = made(door, config.replace(idle_timeout=idle, absolute_timeout=10_000, touch_interval=None), clock)
    try:
        client = made_.new()
        login(client, "alice")
        edge = idle * 0.9 * (1 - 1e-9)  # just inside the promise
        for gap in (idle * 0.5, idle * 0.45, idle * 0.6, edge, idle * 0.05, edge, edge, idle * 0.11, edge):
            clock.advance(gap)
            assert client.get("/whoami").json()["user"] == "alice", gap
        clock.advance(idle)  # a whole idle timeout without a request ends it
        assert client.get("/whoami").json()["user"] is None
    finally:
        made_.close()


# -- 3. lowered timeouts bind live sessions ----------------------------------------------------


@pytest.mark.parametrize("lowered", ["absolute_timeout", "idle_timeout"])
def test_3_a_restart_with_a_lowered_timeout_binds_existing_sessions(
    door: str, config: SessionConfig, store: Counting, clock: FakeClock, lowered: str
) -> None:
    before = Clients(door, DOORS[door](config, store, Engine(config, clock=clock)))
    try:
        token = login(before.new(), "alice")
    finally:
        before.close()
    changes: dict[str, Any] = {"idle_timeout": 100, "touch_interval": None}
    if lowered == "absolute_timeout":
        changes.update(absolute_timeout=100, idle_timeout=90)
    lowered_config = config.replace(**changes)
    if not config.store_url.startswith("memory"):  # a restart: a new process, new connections
        fresh = (
            open_async_store(lowered_config, clock=clock) if door == "asgi" else open_store(lowered_config, clock=clock)
        )
        store = Counting(fresh)
    after = Clients(door, DOORS[door](lowered_config, store, Engine(lowered_config, clock=clock)))
    try:
        client = after.new()
        clock.advance(50)
        assert client.get("/whoami", headers=cookie(token)).json()["user"] == "alice"
        clock.advance(60 if lowered == "absolute_timeout" else 100)
        r = client.get("/whoami", headers=cookie(token))
        assert r.json()["user"] is None and expired(r)
    finally:
        after.close()


def test_3_a_persistent_cookie_is_capped_by_the_lowered_absolute_timeout(
    door: str, config: SessionConfig, clock: FakeClock
) -> None:
    made_ = made(door, config.replace(absolute_timeout=1000, idle_timeout=500, touch_interval=None), clock)
    try:
        client = made_.new()
        login(client, "alice")
        clock.advance(100)
        assert "Max-Age=900" in client.post("/remember").headers["set-cookie"]
    finally:
        made_.close()


# -- 4. a user switch carries nothing over; a re-login rotates -----------------------------------


def test_4_bob_never_sees_alices_data_and_a_cart_survives_login(client: httpx.Client) -> None:
    client.post("/cart", json={"item": "apple"})
    login(client, "alice")
    assert client.get("/whoami").json() == {"user": "alice", "note": None, "cart": ["apple"]}  # kept at login
    client.post("/note", json={"note": "alice's private note"})
    login(client, "bob")
    assert client.get("/whoami").json() == {"user": "bob", "note": None, "cart": []}


def test_4_the_same_user_logging_in_again_gets_a_new_token(client: httpx.Client) -> None:
    first = login(client, "alice")
    second = login(client, "alice")
    assert first != second
    assert client.get("/whoami", headers=cookie(first)).json()["user"] is None
    assert client.get("/whoami", headers=cookie(second)).json()["user"] == "alice"


# -- 5. clear() is a logout ----------------------------------------------------------------------


def test_5_clear_logs_out_deletes_the_record_and_expires_the_cookie(client: httpx.Client, view: Store) -> None:
    token = login(client, "alice")
    [key] = live_keys(view, "alice")
    r = client.post("/clear")
    assert expired(r) and stored(view, key) is None and live_keys(view, "alice") == []
    assert client.get("/whoami", headers=cookie(token)).json()["user"] is None


# -- 6. one bad record never takes a user down ---------------------------------------------------


def _corrupt(view: Store, store_url: str, key_prefix: str, key: str) -> None:
    """Make the stored session undecodable the way each backend can be damaged."""
    if isinstance(view, MemoryStore):
        data, meta, expires = view._records[key]
        view._records[key] = ({**data, "cart": b"{not json"}, meta, expires)
    elif store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE sessions SET absolute_deadline = 'never' WHERE digest = ?", (key,))
        conn.close()
    else:
        assert isinstance(view, RedisStore)  # its own client: one node or a Sentinel's primary
        view.client.hset(f"{key_prefix}s:{key}", "_d", "inf")


def test_6_an_undecodable_record_is_absent_everywhere_never_a_500(
    clients: Clients, view: Store, store_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    phone, laptop = clients.new(), clients.new()
    phone.post("/cart", json={"item": "apple"})
    bad = login(phone, "alice")
    good = login(laptop, "alice")
    bad_key = next(k for k in live_keys(view, "alice") if stored(view, k) is not None and k != _key_of(view, good))
    _corrupt(view, store_url, key_prefix, bad_key)
    with caplog.at_level(logging.INFO, logger="session_mw.security"):
        if not isinstance(view, MemoryStore):  # a damaged record's metadata: the listing drops it unread
            assert len(laptop.get("/sessions", headers=cookie(good)).json()) == 1
        r = phone.get("/whoami", headers=cookie(bad))
        assert r.status_code == 200 and r.json()["user"] is None and expired(r)
        assert phone.post("/logout", headers=cookie(bad)).status_code == 200
        assert len(laptop.get("/sessions", headers=cookie(good)).json()) == 1
        assert laptop.post("/everywhere", headers=cookie(good)).json() == {"revoked": 1}
    assert "undecodable" in caplog.text and bad not in caplog.text


def _key_of(view: Store, token: str) -> str:
    from session_mw.tokens import Digester

    return Digester()(token)


# -- 7 and 8. store failures: one answer, from every door ----------------------------------------


def test_8_a_store_failure_inside_a_handler_is_the_same_503_in_every_door(
    door: str, config: SessionConfig, clock: FakeClock
) -> None:
    from session_mw.errors import StoreUnavailable
    from session_mw.stores.base import Op, R

    class Failing(Counting):
        down = False

        def execute(self, op: Op[R]) -> R:
            if self.down and isinstance(op, (SessionsOf, RevokeAll)):
                raise StoreUnavailable("the index is unreachable")
            return super().execute(op)  # type: ignore[no-any-return]

    class AsyncFailing(Failing):
        async def execute(self, op: Op[R]) -> R:  # type: ignore[override]
            if self.down and isinstance(op, (SessionsOf, RevokeAll)):
                raise StoreUnavailable("the index is unreachable")
            return await self.inner.execute(op)  # type: ignore[no-any-return]

    inner = open_async_store(config, clock=clock) if door == "asgi" else open_store(config, clock=clock)
    store = AsyncFailing(inner) if door == "asgi" else Failing(inner)
    clients_ = Clients(door, DOORS[door](config, store, Engine(config, clock=clock)))
    try:
        client = clients_.new()
        login(client, "alice")
        store.down = True
        r = client.get("/sessions")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.text == "Session store unavailable; please retry shortly.\n"
        assert r.headers["cache-control"] == "no-store" and "set-cookie" not in r.headers
    finally:
        clients_.close()


def test_8_every_door_records_the_same_user_agent_on_login(client: httpx.Client, view: Store) -> None:
    client.post("/cart", json={"item": "apple"}, headers={"user-agent": "Anonymous/1"})
    login(client, "alice", **{"user-agent": "Phone/2"})
    [(_, meta)] = view.execute(SessionsOf("alice", UNBOUNDED))
    assert meta.user_agent == "Phone/2"


# -- 12. what the app stores fails the same way on every store -------------------------------------


@pytest.mark.parametrize("kind", ["huge", "nan", "deep", "user", "key"])
def test_12_an_unstorable_session_is_a_named_500_and_writes_nothing(
    client: httpx.Client, store: Counting, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="session_mw"):
        r = client.post("/store", json={"kind": kind})
    assert r.status_code == 500 and r.text == "The session could not be saved.\n"
    assert "set-cookie" not in r.headers and store.calls["write"] == 0
    assert "session not saved" in caplog.text


def test_12_a_session_with_thousands_of_keys_works_on_every_store(client: httpx.Client) -> None:
    assert client.post("/many", json={"n": 5000}).status_code == 200
    assert client.post("/note", json={"note": "still here"}).json() == {"note": "still here"}


def test_5_a_logout_stays_a_logout_when_the_app_then_fails(client: httpx.Client, view: Store) -> None:
    token = login(client, "alice")
    r = client.post("/logout-then-fail")
    assert r.status_code == 503 and expired(r)
    assert live_keys(view, "alice") == [] and client.get("/whoami", headers=cookie(token)).json()["user"] is None


def test_a_dead_cookie_is_cleared_only_by_a_response_that_used_the_session(client: httpx.Client) -> None:
    """A request still in flight with the pre-login token (an asset, say) must not clear the new cookie."""
    dead = new_token(32)
    r = client.get("/plain", headers=cookie(dead))
    assert "set-cookie" not in r.headers and r.headers["cache-control"] == "max-age=60"
    assert expired(client.get("/whoami", headers=cookie(dead)))


def test_14_a_malformed_id_revokes_nothing(client: httpx.Client) -> None:
    login(client, "alice")
    body = b'{"args": ["\\ud800"]}'  # a lone surrogate, as JSON can carry it
    r = client.post("/revoke", content=body, headers={"content-type": "application/json"})
    assert r.json() == {"revoked": 0}
    assert client.get("/whoami").json()["user"] == "alice"


# -- 13. a Set-Cookie never goes out with a cacheable response -------------------------------------


def test_13_a_response_that_sets_the_cookie_is_no_store(client: httpx.Client) -> None:
    r = client.post("/cached-login", json={"user": "alice"})
    assert r.headers["cache-control"] == "no-store" and token_of(r)
    assert r.headers.get_list("vary") == ["Accept-Encoding, Cookie"]


# -- 14. a manager acts on the current user's sessions only; ids say nothing of keys ------------


def test_14_revoke_takes_only_the_current_users_own_session_ids(clients: Clients, view: Store) -> None:
    alice, bob = clients.new(), clients.new()
    login(alice, "alice")
    login(bob, "bob")
    [bobs] = bob.get("/sessions").json()
    [(bob_key, _)] = view.execute(SessionsOf("bob", UNBOUNDED))
    assert bobs["id"] not in bob_key
    assert alice.post("/revoke", json={"args": [bobs["id"]]}).json() == {"revoked": 0}
    assert alice.post("/revoke", json={"args": [bob_key]}).json() == {"revoked": 0}
    assert bob.get("/whoami").json()["user"] == "bob"
    assert bob.post("/revoke", json={"args": [bobs["id"]]}).json() == {"revoked": 1}
    assert bob.get("/whoami").json()["user"] is None


# -- 15. unrelated cookies never drop a valid session ------------------------------------------------


def test_15_other_sites_cookies_never_drop_the_session(client: httpx.Client) -> None:
    token = login(client, "alice")
    crowd = "; ".join(f"tracker{i}={'x' * 90}" for i in range(100))  # 9 KiB of someone else's cookies
    r = client.get("/whoami", headers={"cookie": f"{crowd}; {COOKIE}={token}"})
    assert r.json()["user"] == "alice" and "set-cookie" not in r.headers


def test_15_cookie_lines_joined_with_a_comma_are_read_as_lines(door: str, client: httpx.Client) -> None:
    token = login(client, "alice")
    r = client.get("/whoami", headers={"cookie": f"theme=dark,{COOKIE}={token}; lang=en"})
    assert r.json()["user"] == "alice" and "set-cookie" not in r.headers


# -- 7 (start-up). a store that cannot work at all is reported when the app starts ----------------


def test_7_a_foreign_sqlite_file_stops_every_door_at_start_up(door: str, tmp_path: Path) -> None:
    from session_mw.errors import ConfigError

    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    config = SessionConfig(store_url=f"sqlite:///{path}")
    if door == "asgi":
        from starlette.testclient import TestClient

        app: Any = DOORS[door](config, open_async_store(config), Engine(config))
        with pytest.raises(ConfigError, match="not a session_mw store"), TestClient(app):
            pass
    else:
        with pytest.raises(ConfigError, match="not a session_mw store"):
            DOORS[door](config, open_store(config), Engine(config))


def test_7_a_token_is_never_in_what_is_logged(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    planted = new_token(32)
    with caplog.at_level(logging.DEBUG):
        client.get("/whoami", headers=cookie(planted))
        token = login(client, "alice")
        client.post("/logout")
    assert planted not in caplog.text and token not in caplog.text
