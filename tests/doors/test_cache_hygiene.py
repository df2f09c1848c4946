"""Cache hygiene (part of the hardening issue): pages of a logged-in user are never cached,
and a logout may clear what the browser kept (opt-in), through every door on every store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from session_mw import SessionConfig
from session_mw.engine import Engine
from session_mw.stores import open_async_store, open_store
from session_mw.testing import FakeClock
from tests.doors.apps import DOORS
from tests.doors.harness import Clients, Counting


@pytest.fixture
def build(door: str, config: SessionConfig, clock: FakeClock) -> Iterator[Any]:
    """Clients for an app of the door under test with some settings changed."""
    made: list[Clients] = []

    def clients(**settings: Any) -> Clients:
        changed = config.replace(**settings)
        store = open_async_store(changed, clock=clock) if door == "asgi" else open_store(changed, clock=clock)
        built = Clients(door, DOORS[door](changed, Counting(store), Engine(changed, clock=clock)))
        made.append(built)
        return built

    yield clients
    for built in made:
        built.close()


def _login(browser: httpx.Client, user: str = "alice") -> None:
    assert browser.post("/login", json={"user": user}).status_code == 200


def test_a_page_read_from_a_logged_in_session_is_never_cached(build: Any) -> None:
    browser = build().new()
    assert browser.get("/cached-whoami").headers["cache-control"] == "public, max-age=3600"  # no session
    browser.post("/cart", json={"item": "apple"})  # an anonymous session: the app decides
    anonymous = browser.get("/cached-whoami")
    assert anonymous.headers["cache-control"] == "public, max-age=3600" and "set-cookie" not in anonymous.headers
    _login(browser)
    page = browser.get("/cached-whoami")
    assert page.json()["user"] == "alice" and "set-cookie" not in page.headers
    assert page.headers.get_list("cache-control") == ["no-store"] and page.headers["vary"] == "Cookie"


def test_no_store_for_logged_in_pages_can_be_turned_off(build: Any) -> None:
    browser = build(no_store_authenticated=False).new()
    _login(browser)
    assert browser.get("/cached-whoami").headers["cache-control"] == "public, max-age=3600"


def test_clear_site_data_on_logout_is_opt_in(build: Any) -> None:
    plain, clearing = build().new(), build(clear_site_data_on_logout=True).new()
    for browser in (plain, clearing):
        _login(browser)
    assert "clear-site-data" not in plain.post("/logout").headers
    out = clearing.post("/logout")
    assert out.headers["clear-site-data"] == '"cache", "cookies", "storage"'
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert "clear-site-data" not in clearing.post("/logout").headers  # no session left to end
