"""The session behaviour suite, through every door (ASGI, WSGI, Flask) and on every store.

Each test drives the real ASGI or WSGI interface with a sync HTTP client; the store is real
(memory, a SQLite file, or a private redis-server) with call counters around it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import Delete
from session_mw.testing import FakeClock
from session_mw.tokens import new_token
from tests.conftest import RedisServer
from tests.doors.apps import DOORS, HOOKS
from tests.doors.harness import ABSOLUTE, COOKIE, IDLE, Clients, Counting, cookie, live_keys, stored, token_of


def test_anonymous_reader_gets_no_session(client: httpx.Client, store: Counting) -> None:
    r = client.get("/cart")
    assert r.json() == {"cart": [], "user": None}
    assert "set-cookie" not in r.headers
    assert store.calls == Counter()


def test_first_write_creates_a_secure_cookie(client: httpx.Client) -> None:
    r = client.post("/cart", json={"item": "apple"})
    header = r.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=")
    for attr in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attr in header
    assert r.headers["cache-control"] == "no-store" and r.headers["vary"] == "Cookie"
    assert client.get("/cart").json()["cart"] == ["apple"]


def test_nested_mutation_is_saved_and_reads_write_nothing(client: httpx.Client, store: Counting) -> None:
    client.post("/cart", json={"item": "apple"})
    client.post("/cart", json={"item": "pear"})
    writes = store.calls["write"]
    for _ in range(5):
        r = client.get("/cart")
        assert r.json()["cart"] == ["apple", "pear"] and "set-cookie" not in r.headers
    assert store.calls["write"] == writes and store.calls["load"] == 6


def test_session_fixation_is_impossible(client: httpx.Client) -> None:
    planted = new_token(32)  # well-formed, but never issued by the server
    r = client.post("/cart", json={"item": "apple"}, headers=cookie(planted))
    issued = token_of(r)
    assert issued is not None and issued != planted
    assert client.get("/cart", headers=cookie(planted)).json()["cart"] == []


def test_login_regenerates_and_the_old_token_is_dead(client: httpx.Client) -> None:
    before = token_of(client.post("/cart", json={"item": "apple"}))
    after = token_of(client.post("/login", json={"user": "alice"}))
    assert before and after and before != after
    assert client.get("/cart").json() == {"cart": ["apple"], "user": "alice"}
    replay = client.get("/cart", headers=cookie(before))
    assert replay.json() == {"cart": [], "user": None}
    assert replay.headers["set-cookie"].startswith(f"{COOKIE}=;")


def test_privilege_change_regenerates(client: httpx.Client) -> None:
    client.post("/cart", json={"item": "apple"})
    t1 = client.cookies.get(COOKIE)
    t2 = token_of(client.post("/elevate"))
    assert t1 and t2 and t1 != t2
    assert client.get("/cart", headers=cookie(t1)).json()["cart"] == []
    assert client.get("/cart", headers=cookie(t2)).json()["cart"] == ["apple"]


def test_logout_kills_the_session_and_replay_fails(client: httpx.Client) -> None:
    client.post("/login", json={"user": "alice"})
    token = client.cookies.get(COOKIE)
    assert token
    r = client.post("/logout")
    assert r.headers["set-cookie"].startswith(f"{COOKIE}=;") and "Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/cart", headers=cookie(token)).json()["user"] is None


def test_idle_timeout(client: httpx.Client, clock: FakeClock) -> None:
    client.post("/login", json={"user": "alice"})
    clock.advance(IDLE - 1)
    assert client.get("/cart").json()["user"] == "alice"
    clock.advance(IDLE)
    assert client.get("/cart").json()["user"] is None


def test_absolute_timeout_ends_even_an_active_session(client: httpx.Client, clock: FakeClock) -> None:
    client.post("/login", json={"user": "alice"})
    for _ in range(ABSOLUTE // (IDLE // 2) - 1):
        clock.advance(IDLE // 2)
        assert client.get("/cart").json()["user"] == "alice"
    clock.advance(IDLE // 2)
    assert client.get("/cart").json()["user"] is None


def test_touch_is_throttled_and_keeps_an_active_user(client: httpx.Client, clock: FakeClock, store: Counting) -> None:
    client.post("/login", json={"user": "alice"})
    writes = store.calls["write"]
    for _ in range(5):  # active every 90 % of the idle timeout: never logged out, never rewritten
        clock.advance(IDLE * 0.9 - 1)
        assert client.get("/cart").json()["user"] == "alice"
    assert store.calls["write"] == writes


def test_a_burst_of_reads_touches_at_most_once(client: httpx.Client, clock: FakeClock, view: Store) -> None:
    client.post("/login", json={"user": "alice"})
    [key] = live_keys(view, "alice")
    clock.advance(150)
    for _ in range(5):
        client.get("/cart")
        clock.advance(1)
    record = stored(view, key)
    assert record is not None and record.meta.last_seen == clock.now - 5


def test_a_write_never_resurrects_a_session_deleted_meanwhile(clients: Clients, view: Store, door: str) -> None:
    tab1, tab2 = clients.new(), clients.new()
    tab1.post("/login", json={"user": "alice"})
    token = tab1.cookies[COOKIE]
    [key] = live_keys(view, "alice")
    HOOKS["race"] = lambda: view.execute(Delete(key))  # another tab logs out while tab2's request runs
    r = tab2.post("/race", json={"item": "apple"}, headers=cookie(token))
    assert r.headers["set-cookie"].startswith(f"{COOKIE}=;")
    assert live_keys(view, "alice") == [] and stored(view, key) is None


@pytest.mark.parametrize(
    "header",
    [
        f"{COOKIE}=garbage",
        f"{COOKIE}=" + "A" * 5000,
        f"{COOKIE}={new_token(32)}; {COOKIE}={new_token(32)}",
        f'{COOKIE}="\\x00\\"',
        f"{COOKIE}=%00%ff%fe; other=1",
        f"=; ;; {COOKIE}",
    ],
)
def test_bad_cookies_are_no_session_never_an_error(client: httpx.Client, header: str) -> None:
    r = client.get("/cart", headers={"cookie": header})
    assert r.status_code == 200 and r.json() == {"cart": [], "user": None}
    r = client.post("/cart", json={"item": "apple"}, headers={"cookie": header})
    assert r.status_code == 200 and token_of(r)


def test_server_error_saves_nothing(client: httpx.Client, store: Counting) -> None:
    r = client.post("/boom")
    assert r.status_code == 500 and "set-cookie" not in r.headers and store.calls["write"] == 0


def test_headers_respect_the_apps_own(client: httpx.Client) -> None:
    r = client.get("/plain")
    assert "vary" not in r.headers and r.headers["cache-control"] == "max-age=60"


def test_excluded_paths_never_touch_the_store(client: httpx.Client, store: Counting) -> None:
    client.post("/cart", json={"item": "apple"})
    loads = store.calls["load"]
    assert client.get("/assets/app.css").status_code == 200 and store.calls["load"] == loads


def test_remember_gives_a_persistent_cookie(client: httpx.Client) -> None:
    assert f"Max-Age={ABSOLUTE}" in client.post("/remember").headers["set-cookie"]


def test_log_out_everywhere_and_list_sessions(clients: Clients) -> None:
    phone, laptop, other = clients.new(), clients.new(), clients.new()
    phone.post("/login", json={"user": "alice"}, headers={"user-agent": "Phone"})
    laptop.post("/login", json={"user": "alice"}, headers={"user-agent": "Laptop"})
    other.post("/login", json={"user": "bob"})
    listed = laptop.get("/sessions").json()
    assert sorted(s["user_agent"] for s in listed) == ["Laptop", "Phone"]
    assert [s["current"] for s in listed if s["user_agent"] == "Laptop"] == [True]
    r = laptop.post("/everywhere")
    assert r.json() == {"revoked": 2} and r.headers["set-cookie"].startswith(f"{COOKIE}=;")
    assert phone.get("/cart").json()["user"] is None
    assert laptop.get("/cart").json()["user"] is None
    assert other.get("/cart").json()["user"] == "bob"


def test_the_store_is_down_503_then_back(door: str, redis_server: RedisServer, key_prefix: str) -> None:
    config = SessionConfig(
        store_url=redis_server.url, key_prefix=key_prefix, store_connect_timeout=0.5, store_socket_timeout=0.5
    )
    store = open_async_store(config) if door == "asgi" else open_store(config)
    made = Clients(door, DOORS[door](config, store, Engine(config)))
    try:
        c, anon = made.new(), made.new()
        c.post("/cart", json={"item": "apple"})
        redis_server.stop()
        r = c.get("/cart")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.text == "Session store unavailable; please retry shortly.\n"
        r = anon.post("/cart", json={"item": "pear"})  # the save at response start fails
        assert r.status_code == 503 and "set-cookie" not in r.headers
        assert anon.get("/plain").status_code == 200  # requests without a session are still served
        redis_server.start()
        statuses = [c.get("/cart").status_code for _ in range(3)]
        assert statuses[-1] == 200 and c.get("/cart").json()["cart"] == []  # Redis restarted empty
    finally:
        made.close()


@pytest.mark.parametrize("locking", [False, True])
def test_locking_serializes_the_requests_of_one_session(
    door: str, store_url: str, key_prefix: str, locking: bool
) -> None:
    config = SessionConfig(store_url=store_url, key_prefix=key_prefix, locking=locking, lock_timeout=10)
    store = open_async_store(config) if door == "asgi" else open_store(config)
    made = Clients(door, DOORS[door](config, store, Engine(config)))
    try:
        first = made.new()
        token = token_of(first.post("/cart", json={"item": "first"}))
        assert token
        tabs = [made.new() for _ in range(3)]
        barrier = threading.Barrier(len(tabs))

        def add(tab: httpx.Client, item: str) -> int:
            barrier.wait()
            return tab.post("/slow-add", json={"item": item, "sleep": 0.05}, headers=cookie(token)).status_code

        with ThreadPoolExecutor(len(tabs)) as pool:
            statuses = list(pool.map(add, tabs, ["a", "b", "c"]))
        assert statuses == [200, 200, 200]
        cart = first.get("/cart", headers=cookie(token)).json()["cart"]
        if locking:
            assert sorted(cart) == ["a", "b", "c", "first"]
        else:  # without the lock, the overlapping read-modify-writes overwrite each other
            assert len(cart) < 4
    finally:
        made.close()


def test_a_lock_held_too_long_serves_reads_refuses_writes_and_never_blocks_a_logout(
    door: str, store_url: str, key_prefix: str
) -> None:
    """#11 item 10: a token holder's slow request cannot hold a logout hostage."""
    config = SessionConfig(store_url=store_url, key_prefix=key_prefix, locking=True, lock_timeout=0.2)
    store = open_async_store(config) if door == "asgi" else open_store(config)
    made = Clients(door, DOORS[door](config, store, Engine(config)))
    try:
        first, second = made.new(), made.new()
        token = token_of(first.post("/cart", json={"item": "first"}))
        assert token
        inside, go_on = threading.Event(), threading.Event()

        def hold() -> None:  # the first request holds the lock while the others run
            inside.set()
            assert go_on.wait(10)

        HOOKS["race"] = hold
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(first.post, "/race", json={"item": "x"}, headers=cookie(token))
            assert inside.wait(10)
            read = second.get("/cart", headers=cookie(token))
            write = second.post("/cart", json={"item": "lost"}, headers=cookie(token))
            started = time.monotonic()
            logout = second.post("/logout", headers=cookie(token))
            waited = time.monotonic() - started
            go_on.set()
            assert read.status_code == 200 and read.json()["cart"] == ["first"]
            assert write.status_code == 503 and write.text.startswith("Session busy")
            assert write.headers["retry-after"] == "5" and "set-cookie" not in write.headers
            assert logout.status_code == 200 and logout.headers["set-cookie"].startswith("__Host-id=;")
            assert waited < 5  # the lock wait (0.2 s), never the holder's whole request
            slow.result()  # its save finds the session gone: nothing is resurrected
        assert second.get("/cart", headers=cookie(token)).json() == {"cart": [], "user": None}
    finally:
        made.close()
