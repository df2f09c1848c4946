"""#11: the account-level controls, through every door (ASGI, WSGI, Flask) on every store.

Each test builds its own site with the settings under test, on the suite's fake clock, and
listens to the security events it emits.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.events import SecurityEvent
from session_mw.stores import Store, open_async_store, open_store
from session_mw.stores.base import UNBOUNDED, Close, Load
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import FakeClock
from session_mw.tokens import Digester, new_token
from tests.doors.apps import DOORS, HOOKS
from tests.doors.harness import ABSOLUTE, IDLE, Clients, Counting, cookie, expired, live_keys, token_of


@dataclass
class Site:
    clients: Clients
    view: Store
    engine: Engine
    store: Any
    events: list[SecurityEvent] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def new(self) -> httpx.Client:
        return self.clients.new()


Build = Callable[..., Site]


@pytest.fixture
def build(door: str, store_url: str, key_prefix: str, clock: FakeClock) -> Iterator[Build]:
    made: list[tuple[Clients, Store]] = []

    def make(
        account_active: Callable[[str], bool] | None = None, same_store_as: Site | None = None, **settings: Any
    ) -> Site:
        config = SessionConfig(
            store_url=store_url,
            key_prefix=key_prefix,
            idle_timeout=IDLE,
            absolute_timeout=ABSOLUTE,
            touch_interval=100,
            **settings,
        )
        if same_store_as is not None and store_url == "memory://":  # elsewhere the data is shared anyway
            store = same_store_as.store
        else:
            store = open_async_store(config, clock=clock) if door == "asgi" else open_store(config, clock=clock)
            store = Counting(store)  # still the real store; it counts the loads
        events: list[SecurityEvent] = []
        engine = Engine(config, clock=clock, listeners=[events.append], account_active=account_active)
        clients = Clients(door, DOORS[door](config, store, engine))
        inner = store.inner if isinstance(store, Counting) else store
        if isinstance(inner, AsyncFromSync):
            view: Store = inner.sync  # memory and SQLite: the very store the door uses
        elif door != "asgi" and not store_url.startswith("redis"):
            view = inner
        else:
            view = open_store(config, clock=clock)  # Redis: another client of the same server
        made.append((clients, view))
        return Site(clients, view, engine, store, events)

    yield make
    for clients, view in made:
        clients.close()
        view.execute(Close())


def login(client: httpx.Client, user: str = "alice", token: str | None = None, **headers: str) -> str:
    sent = {**(cookie(token) if token else {}), **headers}
    r = client.post("/login", json={"user": user}, headers=sent)
    assert r.status_code == 200, r.text
    new = token_of(r)
    assert new
    return new


# -- 1. security events ---------------------------------------------------------------------


def test_events_name_the_session_by_a_keyed_hash_never_the_token_or_key(build: Build) -> None:
    site = build()
    c = site.new()
    token = token_of(c.post("/cart", json={"item": "apple"}))
    assert token
    token = login(c, token=token)
    c.post("/logout", headers=cookie(token))
    kinds = site.kinds()
    assert kinds[:3] == ["created", "regenerated", "invalidated"], kinds
    key = site.engine.digest(token)
    for event in site.events:
        shown = repr(event) + repr(event.as_extra())
        assert token not in shown and key not in shown
    assert site.events[1].user_id == "alice" and site.events[1].detail == "login"
    assert site.events[2].session == site.engine.events.ref(key)  # correlates with the session


def test_unknown_tokens_are_counted_per_client_and_a_burst_is_reported(build: Build) -> None:
    site = build(guess_threshold=5)
    c = site.new()
    for _ in range(7):
        c.get("/cart", headers=cookie(new_token(32)))
    assert site.kinds().count("unknown_token") == 7
    assert site.kinds().count("token_guessing") == 1  # once, when the threshold is crossed


def test_unknown_expired_and_revoked_tokens_get_identical_answers(build: Build, clock: FakeClock) -> None:
    site = build()
    c = site.new()
    expired_token = login(c, "alice")
    clock.advance(IDLE + 1)
    revoked = login(c, "bob")
    c.post("/logout", headers=cookie(revoked))

    def seen(token: str) -> tuple[int, str, list[tuple[str, str]]]:
        r = c.get("/cart", headers=cookie(token))
        headers = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "server"))
        return r.status_code, r.text, headers

    assert seen(new_token(32)) == seen(expired_token) == seen(revoked)


def test_expiry_is_reported_with_its_reason_and_answered_like_any_unknown_token(build: Build, clock: FakeClock) -> None:
    site = build()
    c = site.new()
    idle = login(c)
    clock.advance(IDLE + 1)
    assert c.get("/cart", headers=cookie(idle)).json()["user"] is None
    busy = login(c, "bob")
    for _ in range(ABSOLUTE // (IDLE - 100) + 1):  # active until the absolute deadline passes
        clock.advance(IDLE - 100)
        c.get("/cart", headers=cookie(busy))
    kinds = site.kinds()
    assert "expired_idle" in kinds and "expired_absolute" in kinds, kinds
    assert "unknown_token" not in kinds  # an expired token is not a guess
    assert next(e for e in site.events if e.kind == "expired_idle").session == site.engine.events.ref(
        site.engine.digest(idle)
    )


# -- 2. recent authentication ---------------------------------------------------------------


def test_login_and_reauthentication_record_when_a_credential_was_proved(build: Build, clock: FakeClock) -> None:
    site = build()
    c = site.new()
    assert c.get("/auth-info").json()["authenticated_at"] is None
    token = login(c)
    info = c.get("/auth-info", headers=cookie(token)).json()
    assert info["authenticated_at"] == pytest.approx(clock.now)
    assert c.post("/sensitive", json={"max_age": 300}, headers=cookie(token)).status_code == 200
    clock.advance(301)
    c.get("/cart", headers=cookie(token))  # activity moves nothing
    assert c.get("/auth-info", headers=cookie(token)).json()["authenticated_at"] == pytest.approx(clock.now - 301)
    assert c.post("/sensitive", json={"max_age": 300}, headers=cookie(token)).status_code == 403
    r = c.post("/reauth", headers=cookie(token))
    fresh = token_of(r)
    assert fresh and fresh != token  # a re-authentication regenerates the token
    assert c.get("/cart", headers=cookie(token)).json()["user"] is None  # the old one is dead
    assert c.post("/sensitive", json={"max_age": 300}, headers=cookie(fresh)).status_code == 200
    assert "reauthenticated" in site.kinds()
    assert site.new().post("/sensitive", json={}).status_code == 401


@pytest.mark.parametrize("resets", [True, False])
def test_reauthentication_starts_a_new_absolute_lifetime_only_if_set(
    build: Build, clock: FakeClock, resets: bool
) -> None:
    site = build(reauth_resets_lifetime=resets)
    c = site.new()
    token = login(c)
    for _ in range(6):  # active, never idle, until 200 s before the absolute deadline
        clock.advance((ABSOLUTE - 200) / 6)
        assert c.get("/cart", headers=cookie(token)).json()["user"] == "alice"
    token = token_of(c.post("/reauth", headers=cookie(token))) or ""
    clock.advance(300)  # past the first absolute deadline
    user = c.get("/cart", headers=cookie(token)).json()["user"]
    assert user == ("alice" if resets else None)


# -- 3. periodic renewal -------------------------------------------------------------------


def test_periodic_renewal_rotates_the_token_and_keeps_the_data(build: Build, clock: FakeClock) -> None:
    site = build(renew_interval=300)
    c = site.new()
    token = login(c)
    c.post("/cart", json={"item": "apple"}, headers=cookie(token))
    clock.advance(50)
    assert token_of(c.get("/cart", headers=cookie(token))) is None  # not due yet
    clock.advance(260)
    r = c.get("/cart", headers=cookie(token))
    renewed = token_of(r)
    assert renewed and renewed != token and r.json() == {"cart": ["apple"], "user": "alice"}
    assert c.get("/cart", headers=cookie(renewed)).json() == {"cart": ["apple"], "user": "alice"}
    assert c.get("/cart", headers=cookie(token)).json()["user"] is None
    assert "renewed" in site.kinds()


# -- 4. rotation grace window --------------------------------------------------------------


def test_during_the_grace_window_the_old_token_reads_the_old_session_and_cannot_write(
    build: Build, clock: FakeClock
) -> None:
    site = build(rotation_grace=5)
    c = site.new()
    old = token_of(c.post("/cart", json={"item": "apple"}))
    assert old
    new = login(c, token=old)
    tab = c.get("/cart", headers=cookie(old))  # a request already in flight with the old token
    assert tab.status_code == 200 and tab.json() == {"cart": ["apple"], "user": None}  # as it was: never alice's
    assert "set-cookie" not in tab.headers  # the browser's new cookie is left alone
    write = c.post("/cart", json={"item": "pear"}, headers=cookie(old))
    assert write.status_code == 409 and "set-cookie" not in write.headers and "nothing was saved" in write.text
    out = c.post("/logout", headers=cookie(old))
    assert out.status_code == 409  # a logout through the old token is the new session's to do
    assert c.get("/cart", headers=cookie(new)).json() == {"cart": ["apple"], "user": "alice"}
    assert "stale_write_refused" in site.kinds()
    clock.advance(6)
    after = c.get("/cart", headers=cookie(old))
    assert after.json() == {"cart": [], "user": None} and expired(after)  # dead after the window
    assert c.get("/cart", headers=cookie(new)).json()["user"] == "alice"


def test_a_logout_or_revoke_through_the_new_token_ends_the_old_one_at_once(build: Build, clock: FakeClock) -> None:
    site = build(rotation_grace=30)
    c = site.new()
    first = login(c)
    old = token_of(c.post("/elevate", headers=cookie(first)))  # a regenerate: same user, same data
    assert old
    assert c.get("/cart", headers=cookie(first)).json()["user"] == "alice"  # in the grace: read-only
    c.post("/logout", headers=cookie(old))
    replay = c.get("/cart", headers=cookie(first))
    assert replay.json() == {"cart": [], "user": None}  # dead with its successor: no replay after logout
    second = login(c)
    newer = token_of(c.post("/elevate", headers=cookie(second)))
    assert newer
    other = site.new()
    mine = login(other)
    [row] = [r for r in other.get("/sessions", headers=cookie(mine)).json() if not r["current"]]
    assert other.post("/revoke", json={"args": [row["id"]]}, headers=cookie(mine)).json() == {"revoked": 1}
    assert c.get("/cart", headers=cookie(second)).json()["user"] is None  # the revoked one's old token too


def test_a_slow_request_that_loaded_before_a_rotate_is_told_its_write_was_not_saved(build: Build, door: str) -> None:
    site = build(rotation_grace=5)
    first, second = site.new(), site.new()
    token = token_of(first.post("/cart", json={"item": "apple"}))
    assert token
    fresh: list[str] = []

    def rotate_meanwhile() -> None:
        fresh.append(login(second, token=token))

    HOOKS["race"] = rotate_meanwhile
    slow = first.post("/race", json={"item": "pear"}, headers=cookie(token))
    assert slow.status_code == 409 and "set-cookie" not in slow.headers  # not "saved", no logout
    assert second.get("/cart", headers=cookie(fresh[0])).json() == {"cart": ["apple"], "user": "alice"}


def test_without_a_grace_window_the_old_token_dies_at_once(build: Build) -> None:
    site = build()
    c = site.new()
    old = token_of(c.post("/cart", json={"item": "apple"}))
    assert old
    login(c, token=old)
    assert c.get("/cart", headers=cookie(old)).json() == {"cart": [], "user": None}


def test_renewal_with_a_grace_window_keeps_tabs_in_flight_working(build: Build, clock: FakeClock) -> None:
    site = build(renew_interval=300, rotation_grace=5)
    c = site.new()
    token = login(c)
    clock.advance(301)
    renewed = token_of(c.get("/cart", headers=cookie(token)))
    assert renewed and renewed != token
    assert c.get("/cart", headers=cookie(token)).json()["user"] == "alice"  # in flight: still read
    clock.advance(6)
    assert c.get("/cart", headers=cookie(token)).json()["user"] is None
    assert c.get("/cart", headers=cookie(renewed)).json()["user"] == "alice"


# -- 5. binding ----------------------------------------------------------------------------


def test_a_session_bound_to_its_user_agent_ends_when_another_one_uses_it(build: Build) -> None:
    site = build(bind_user_agent=True)
    c = site.new()
    token = login(c, **{"user-agent": "Firefox/140"})
    ok = c.get("/cart", headers={**cookie(token), "user-agent": "Firefox/140"})
    assert ok.json()["user"] == "alice"
    stolen = c.get("/cart", headers={**cookie(token), "user-agent": "curl/8"})
    assert stolen.json()["user"] is None and expired(stolen)
    assert "binding_mismatch" in site.kinds()
    again = c.get("/cart", headers={**cookie(token), "user-agent": "Firefox/140"})
    assert again.json()["user"] is None  # ended, not just refused once


@pytest.mark.parametrize(
    ("first", "same", "other"),
    [
        ("203.0.113.7", "203.0.113.200", "198.51.100.7"),
        ("2001:db8:1:2::10", "2001:db8:1:2:ffff::1", "2001:db8:1:3::10"),
    ],
)
def test_a_session_bound_to_an_address_prefix_survives_inside_it_and_ends_outside(
    build: Build, first: str, same: str, other: str
) -> None:
    site = build(bind_client_ip=True, client_ip_header="X-Forwarded-For")
    c = site.new()

    def via(address: str) -> dict[str, str]:
        return {"x-forwarded-for": f"10.9.9.9, {address}"}  # only the last hop (our proxy) is believed

    token = login(c, **via(first))
    assert c.get("/cart", headers={**cookie(token), **via(same)}).json()["user"] == "alice"
    assert c.get("/cart", headers={**cookie(token), **via(other)}).json()["user"] is None
    mismatch = [e for e in site.events if e.kind == "binding_mismatch"]
    assert mismatch and mismatch[0].client == other


# -- 6. per-user limit ---------------------------------------------------------------------


def test_past_the_per_user_limit_the_oldest_session_is_revoked(build: Build, clock: FakeClock) -> None:
    site = build(max_sessions_per_user=2)
    tokens = []
    for _ in range(3):
        tokens.append(login(site.new()))
        clock.advance(1)
    c = site.new()
    users = [c.get("/cart", headers=cookie(t)).json()["user"] for t in tokens]
    assert users == [None, "alice", "alice"]
    assert len(live_keys(site.view, "alice")) == 2 and "revoked" in site.kinds()


def test_past_the_per_user_limit_a_login_can_be_refused(build: Build, clock: FakeClock) -> None:
    site = build(max_sessions_per_user=2, session_limit_action="refuse")
    first, second = login(site.new()), login(site.new())
    r = site.new().post("/login", json={"user": "alice"})
    assert r.status_code == 403 and "set-cookie" not in r.headers and "Too many" in r.text
    c = site.new()
    assert [c.get("/cart", headers=cookie(t)).json()["user"] for t in (first, second)] == ["alice", "alice"]
    assert login(site.new(), "bob")  # another user is not affected
    assert "session_limit" in site.kinds()


# -- 12. keys: previous secrets ------------------------------------------------------------


def test_a_session_stored_under_a_previous_secret_is_found_and_moves_on_its_next_write(build: Build, door: str) -> None:
    old, new = "o" * 32, "n" * 32
    before = build(digest_key=old)
    token = login(before.new())
    after = build(digest_key=new, previous_digest_keys=(old,), same_store_as=before)
    c = after.new()
    assert c.get("/cart", headers=cookie(token)).json()["user"] == "alice"
    old_key, new_key = Digester(old)(token), Digester(new)(token)
    assert after.view.execute(Load(old_key, UNBOUNDED)) is not None  # a read moves nothing
    r = c.post("/cart", json={"item": "apple"}, headers=cookie(token))
    assert r.status_code == 200 and token_of(r) is None  # the same token: the browser sees no change
    assert after.view.execute(Load(old_key, UNBOUNDED)) is None
    moved = after.view.execute(Load(new_key, UNBOUNDED))
    assert moved is not None and moved.meta.user_id == "alice"
    assert c.get("/cart", headers=cookie(token)).json() == {"cart": ["apple"], "user": "alice"}
    without = build(digest_key="x" * 32, same_store_as=before)  # a secret that is not listed: the session is unknown
    assert without.new().get("/cart", headers=cookie(token)).json()["user"] is None


# -- 14. admin controls --------------------------------------------------------------------


def test_a_disabled_account_loses_every_session_on_its_next_request(build: Build) -> None:
    disabled: set[str] = set()
    site = build(account_active=lambda user: user not in disabled)
    alice, bob = login(site.new(), "alice"), login(site.new(), "bob")
    c = site.new()
    disabled.add("alice")  # and the app's revoke call was missed
    r = c.get("/cart", headers=cookie(alice))
    assert r.json()["user"] is None and expired(r)
    assert c.get("/cart", headers=cookie(bob)).json()["user"] == "bob"
    assert live_keys(site.view, "alice") == []
    assert [e.user_id for e in site.events if e.kind == "revoked_by_admin"] == ["alice"]


# -- 9. CSRF -------------------------------------------------------------------------------

ORIGIN = "https://shop.test"


def test_csrf_an_unsafe_request_of_a_session_needs_its_token(build: Build) -> None:
    site = build(csrf_protect=True)
    c = site.new()
    token = token_of(c.post("/cart", json={"item": "apple"}))  # no session yet: nothing to ride on
    assert token
    refused = c.post("/cart", json={"item": "pear"}, headers=cookie(token))
    assert refused.status_code == 403 and "CSRF" in refused.text
    csrf = c.get("/csrf", headers=cookie(token)).json()["csrf"]
    assert len(csrf) >= 43 and csrf not in token and token not in csrf
    wrong = c.post(
        "/cart",
        json={"item": "pear"},
        headers={**cookie(token), "x-csrf-token": csrf[:-1] + ("B" if csrf[-1] == "A" else "A")},
    )
    assert wrong.status_code == 403
    ok = c.post("/cart", json={"item": "pear"}, headers={**cookie(token), "x-csrf-token": csrf})
    assert ok.status_code == 200 and ok.json()["cart"] == ["apple", "pear"]
    form = c.post("/form", data={"csrf_token": csrf, "q": "x"}, headers=cookie(token))
    assert form.status_code == 200 and form.text == "saved"
    files = c.post("/form", data={"csrf_token": csrf}, files={"f": b"data"}, headers=cookie(token))
    assert files.status_code == 200
    assert c.post("/form", data={"csrf_token": "nope"}, headers=cookie(token)).status_code == 403
    assert site.kinds().count("csrf_refused") == 3
    assert c.get("/cart", headers=cookie(token)).json()["cart"] == ["apple", "pear"]  # refused ones changed nothing


def test_csrf_the_token_changes_with_the_session_token(build: Build) -> None:
    site = build(csrf_protect=True)
    c = site.new()
    first = c.get("/csrf")
    before = first.json()["csrf"]
    token = token_of(first)  # reading the token starts no session by itself
    assert token is None
    token = token_of(c.post("/cart", json={"item": "apple"}))
    assert token
    anonymous = c.get("/csrf", headers=cookie(token)).json()["csrf"]
    login_r = c.post("/login", json={"user": "alice"}, headers={**cookie(token), "x-csrf-token": anonymous})
    fresh = token_of(login_r)
    assert fresh
    after = c.get("/csrf", headers=cookie(fresh)).json()["csrf"]
    assert len({before, anonymous, after}) == 3
    stale = c.post("/cart", json={"item": "x"}, headers={**cookie(fresh), "x-csrf-token": anonymous})
    assert stale.status_code == 403


def test_csrf_a_foreign_origin_is_refused_even_without_a_session(build: Build) -> None:
    site = build(csrf_protect=True)
    c = site.new()
    forged = c.post("/login", json={"user": "mallory"}, headers={"origin": "https://evil.test"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers  # login CSRF
    fetch = c.post("/login", json={"user": "mallory"}, headers={"sec-fetch-site": "cross-site"})
    assert fetch.status_code == 403
    same = c.post("/login", json={"user": "alice"}, headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})
    assert same.status_code == 200
    token = token_of(same)
    assert token
    csrf = c.get("/csrf", headers=cookie(token)).json()["csrf"]
    foreign = c.post("/cart", json={"item": "x"}, headers={**cookie(token), "x-csrf-token": csrf, "origin": "null"})
    assert foreign.status_code == 403


def test_csrf_a_repeated_origin_is_refused_and_a_header_token_is_no_ambient_credential(build: Build, door: str) -> None:
    site = build(csrf_protect=True, token_header="X-Session")
    c = site.new()
    token = login(c, origin=ORIGIN)
    status, _, _ = _raw_request(site, door, "POST", [("origin", ORIGIN), ("origin", "https://evil.test")])
    assert status == 403  # a second Origin cannot hide behind the first, on either door
    api = c.post("/cart", json={"item": "x"}, headers={"x-session": token, "origin": "https://app.other"})
    assert api.status_code == 200  # a CORS API client sends its token itself: no CSRF to fear


def test_csrf_a_cross_site_post_is_refused_before_any_store_read(build: Build, door: str) -> None:
    site = build(csrf_protect=True)
    c = site.new()
    token = login(c)
    loads = site.store.calls["load"]
    forged = c.post("/cart", json={"item": "x"}, headers={**cookie(token), "sec-fetch-site": "cross-site"})
    assert forged.status_code == 403 and site.kinds()[-1] == "csrf_refused"
    assert site.store.calls["load"] == loads  # refused on its headers alone: the store was never asked
    c.get("/cart", headers=cookie(token))
    assert site.store.calls["load"] == loads + 1


def test_csrf_is_off_by_default(build: Build) -> None:
    site = build()
    c = site.new()
    token = token_of(c.post("/cart", json={"item": "apple"}))
    assert token
    assert (
        c.post("/cart", json={"item": "pear"}, headers={**cookie(token), "origin": "https://evil.test"}).status_code
        == 200
    )


# -- 11. header transport ------------------------------------------------------------------


def test_header_transport_carries_the_token_and_returns_a_rotated_one(build: Build) -> None:
    site = build(token_header="Authorization", cookie_transport=False)
    c = site.new()
    r = c.post("/cart", json={"item": "apple"})
    token = r.headers.get("session-token")
    assert token and "set-cookie" not in r.headers and r.headers["cache-control"] == "no-store"
    auth = {"authorization": f"Session {token}"}
    read = c.get("/cart", headers=auth)
    assert read.json()["cart"] == ["apple"] and "Authorization" in read.headers["vary"]
    rotated = c.post("/login", json={"user": "alice"}, headers=auth)
    fresh = rotated.headers.get("session-token")
    assert fresh and fresh != token and "set-cookie" not in rotated.headers
    assert c.get("/cart", headers={"authorization": f"Session {fresh}"}).json() == {"cart": ["apple"], "user": "alice"}
    assert c.get("/cart", headers=auth).json()["user"] is None  # the old token is dead
    out = c.post("/logout", headers={"authorization": f"Session {fresh}"})
    assert out.headers.get("session-token") == ""
    # a cookie is no way in when the transport is the header only
    assert c.get("/cart", headers=cookie(fresh)).json()["user"] is None


def test_header_transport_ignores_tokens_anywhere_but_the_header(build: Build) -> None:
    site = build(token_header="Authorization", cookie_transport=False)
    c = site.new()
    token = c.post("/login", json={"user": "alice"}).headers["session-token"]
    assert c.get(f"/cart?session={token}&token={token}").json()["user"] is None
    assert c.get("/cart", headers={"authorization": f"Bearer {token}"}).json()["user"] is None
    assert c.get("/cart", headers={"authorization": f"Session {token}x"}).json()["user"] is None
    assert c.get("/cart", headers={"authorization": "Session " + "A" * 10_000}).json()["user"] is None
    assert c.post("/form", data={"session": token}).headers.get("session-token")  # a new session, not alice's
    assert c.get("/cart", headers={"authorization": f"session  {token} "}).json()["user"] == "alice"


def test_cookie_and_header_transports_together(build: Build) -> None:
    site = build(token_header="X-Session")
    c = site.new()
    token = login(c)  # a browser: the cookie
    assert c.get("/cart", headers={"x-session": token}).json()["user"] == "alice"  # an API client
    api = c.post("/elevate", headers={"x-session": token})
    fresh = api.headers.get("session-token")
    assert fresh and "set-cookie" not in api.headers
    assert c.get("/cart", headers=cookie(fresh)).json()["user"] == "alice"


def test_header_transport_refuses_injected_line_breaks(door: str, build: Build) -> None:
    """CR LF in a header never reaches us through a real server; straight through the door interface
    it must still be no token (never a header split in our response)."""
    site = build(token_header="X-Session")
    token = login(site.new())
    for evil in (f"{token}\r\nSet-Cookie: evil=1", f"{token}\n", f"\r\n{token}"):
        status, headers, body = _raw_get(site, door, "x-session", evil)
        assert status == 200 and json.loads(body)["user"] is None  # no token: never alice's session
        assert all("evil" not in v for _, v in headers)
        assert not any(k.lower() == "session-token" for k, _ in headers)


def _raw_get(site: Site, door: str, name: str, value: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return _raw_request(site, door, "GET", [(name, value)])


def _raw_request(
    site: Site, door: str, method: str, extra: list[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """A request to /cart straight through the door's interface, with headers no HTTP client would send."""
    app = site.clients.app
    if door == "asgi":
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": "/cart",
            "raw_path": b"/cart",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"shop.test"), *((n.encode(), v.encode("latin-1")) for n, v in extra)],
            "client": ("127.0.0.1", 5000),
            "server": ("shop.test", 443),
        }
        site.new()  # the first client's event loop owns the store's connections: run the request there
        first = next(c for c in site.clients._open if isinstance(c, TestClient))
        assert first.portal is not None
        first.portal.call(app, scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], [(k.decode(), v.decode("latin-1")) for k, v in start["headers"]], content
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/cart",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "shop.test",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "shop.test",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in extra:  # a WSGI server joins a repeated header's values with ","
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    seen: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((int(status[:3]), headers))
        return lambda data: None

    body = app(environ, start_response)
    content = b"".join(body)
    getattr(body, "close", lambda: None)()
    status, headers = seen[0]
    return int(status), list(headers), content


# -- 7. cookie names and prefixes -------------------------------------------------------------


def test_the_default_cookie_name_is_generic_and_prefixed(build: Build) -> None:
    r = build().new().post("/cart", json={"item": "apple"})
    assert r.headers["set-cookie"].startswith("__Host-id=")  # neither Flask's nor Starlette's "session"
    assert "HttpOnly" in r.headers["set-cookie"] and "Secure" in r.headers["set-cookie"]


def test_secure_off_outside_localhost_is_warned_about_once(build: Build, caplog: pytest.LogCaptureFixture) -> None:
    site = build(cookie_secure=False)
    c = site.new()
    caplog.set_level("WARNING", logger="session_mw")
    c.get("/cart", headers={"host": "localhost:8000"})
    c.get("/cart", headers={"host": "127.0.0.1:8000"})
    assert "cookie_secure=False" not in caplog.text
    c.get("/cart")  # shop.test
    c.get("/cart")
    assert caplog.text.count("cookie_secure=False outside localhost (shop.test)") == 1


# -- 14. admin controls: an operator's page --------------------------------------------------


def test_an_admin_page_lists_and_ends_any_users_sessions(build: Build) -> None:
    site = build()
    alice = [login(site.new(), "alice") for _ in range(2)]
    bob = login(site.new(), "bob")
    admin = site.new()
    listed = admin.post("/admin/sessions", json={"args": ["alice"]}, headers=cookie(bob)).json()
    assert len(listed) == 2 and not any(row["current"] for row in listed)
    ended = admin.post("/admin/everywhere", json={"args": ["alice"]}, headers=cookie(bob))
    assert ended.json() == {"revoked": 2}
    assert [site.new().get("/cart", headers=cookie(t)).json()["user"] for t in alice] == [None, None]
    assert site.new().get("/cart", headers=cookie(bob)).json()["user"] == "bob"
    assert [e.user_id for e in site.events if e.kind == "revoked_by_admin"] == ["alice", "alice"]


# -- review findings: the edges -----------------------------------------------------------------


def test_an_oversized_forwarded_header_cannot_push_the_proxys_entry_out(build: Build) -> None:
    site = build(bind_client_ip=True, client_ip_header="X-Forwarded-For")
    c = site.new()
    token = login(c, **{"x-forwarded-for": "203.0.113.7"})
    padding = ", ".join(["10.0.0.1"] * 300)  # far past the header cap, ending in the victim's address
    spoofed = {"x-forwarded-for": f"{padding}, 203.0.113.9, 198.51.100.7"}  # our proxy appended the last
    assert c.get("/cart", headers={**cookie(token), **spoofed}).json()["user"] is None
    assert "binding_mismatch" in site.kinds()


def test_guesses_spread_over_an_ipv6_prefix_are_counted_together(build: Build) -> None:
    site = build(guess_threshold=5, client_ip_header="X-Forwarded-For")
    c = site.new()
    for host in range(6):
        c.get("/cart", headers={**cookie(new_token(32)), "x-forwarded-for": f"2001:db8:1:2::{host + 1:x}"})
    assert site.kinds().count("token_guessing") == 1


def test_a_held_lock_never_blocks_a_logout_that_also_writes(build: Build, store_url: str) -> None:
    site = build(locking=True, lock_timeout=0.2)
    first, second = site.new(), site.new()
    token = login(first)
    inside, go_on = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert go_on.wait(10)

    HOOKS["race"] = hold
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(first.post, "/race", json={"item": "x"}, headers=cookie(token))
        assert inside.wait(10)
        out = second.post("/logout-flash", headers=cookie(token))
        go_on.set()
        assert out.status_code == 200 and expired(out)  # the logout went through; its flash is dropped
        slow.result()
    assert second.get("/cart", headers=cookie(token)).json()["user"] is None
    assert live_keys(site.view, "alice") == []
