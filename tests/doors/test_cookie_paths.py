"""Apps mounted under a path prefix: the cookie's Path, its prefix, and the cookies of other apps.

Through every door on every store, with httpx's cookie jar as the browser: it honours Path and
sends the cookies of longer paths first, as browsers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from session_mw import SessionConfig
from session_mw.contrib.flask import config_from_flask
from session_mw.engine import Engine
from session_mw.stores import open_async_store, open_store
from session_mw.tokens import new_token
from tests.doors.apps import DOORS

HOST = "shop.test"
PREFIXES = ("/a", "/b")


def _mounted_asgi(apps: dict[str, Any]) -> Any:
    """A front router, as a proxy with a root path serves apps: the prefix moves to ``root_path``."""

    async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        for prefix, app in apps.items():
            if scope["path"].startswith(prefix + "/"):
                inner = dict(scope, path=scope["path"][len(prefix) :], root_path=prefix)
                await app(inner, receive, send)
                return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return router


class Site:
    """Several apps of one door on one host, each under its own prefix with its own store."""

    def __init__(self, door: str, configs: dict[str, SessionConfig]) -> None:
        self.door = door
        apps: dict[str, Any] = {}
        self.stores: list[Any] = []
        for prefix, config in configs.items():
            store = open_async_store(config) if door == "asgi" else open_store(config)
            self.stores.append(store)
            apps[prefix] = DOORS[door](config, store, Engine(config))
        if door == "asgi":
            self._test_client = TestClient(_mounted_asgi(apps), base_url=f"https://{HOST}").__enter__()
            transport: httpx.BaseTransport = self._test_client._transport
        else:
            transport = httpx.WSGITransport(app=DispatcherMiddleware(NotFound(), apps))
        self._transport = transport
        self._clients: list[httpx.Client] = []

    def browser(self) -> httpx.Client:
        client = httpx.Client(transport=self._transport, base_url=f"https://{HOST}")
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self.door == "asgi":
            self._test_client.__exit__(None, None, None)


@pytest.fixture
def site(door: str, store_url: str, key_prefix: str) -> Iterator[Site]:
    configs = {p: SessionConfig(store_url=store_url, key_prefix=f"{key_prefix}{p}:", cookie_path=p) for p in PREFIXES}
    built = Site(door, configs)
    yield built
    built.close()


def _session_cookies(response: httpx.Response) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if "id=" in h.split(";", 1)[0]]


def test_each_app_keeps_its_cookie_under_its_own_path(site: Site) -> None:
    browser = site.browser()
    r = browser.post("/a/login", json={"user": "alice"})
    [set_cookie] = _session_cookies(r)
    assert set_cookie.startswith("__Secure-id=") and "; Path=/a" in set_cookie and "Secure" in set_cookie
    assert browser.post("/b/login", json={"user": "bob"}).status_code == 200
    assert {(c.path, c.name) for c in browser.cookies.jar} == {("/a", "__Secure-id"), ("/b", "__Secure-id")}
    assert browser.get("/a/whoami").json()["user"] == "alice"
    assert browser.get("/b/whoami").json()["user"] == "bob"


def test_a_logout_in_one_app_leaves_the_other_logged_in(site: Site) -> None:
    browser = site.browser()
    browser.post("/a/login", json={"user": "alice"})
    browser.post("/b/login", json={"user": "bob"})
    out = browser.post("/a/logout")
    [expiry] = _session_cookies(out)
    assert "Max-Age=0" in expiry and "; Path=/a" in expiry  # only its own cookie
    assert browser.get("/a/whoami").json()["user"] is None
    assert browser.get("/b/whoami").json()["user"] == "bob"


def test_a_cookie_of_our_name_for_a_parent_path_neither_blocks_a_login_nor_is_expired(site: Site) -> None:
    """A browser still holding a cookie of the same name for ``/`` (another app at the root, or this
    app before its path changed) sends both; ours is the live one, and the other is left alone."""
    browser = site.browser()
    old = new_token(32)
    browser.cookies.set("__Secure-id", old, domain=HOST, path="/")
    first = browser.get("/a/whoami")  # both sent; neither is a session of this app
    assert first.status_code == 200 and first.json()["user"] is None
    browser.post("/a/cart", json={"item": "apple"})
    assert browser.post("/a/login", json={"user": "alice"}).status_code == 200
    me = browser.get("/a/whoami")
    assert me.json() == {"user": "alice", "note": None, "cart": ["apple"]}
    assert not _session_cookies(me)  # nothing more to set, nothing expired
    assert browser.cookies.get("__Secure-id", domain=HOST, path="/") == old


def test_a_non_token_value_under_our_name_is_never_expired(site: Site) -> None:
    """Not shaped like our tokens (Flask's signed cookie, another library's id): not ours to clear."""
    browser = site.browser()
    browser.cookies.set("__Secure-id", "eyJfZnJlc2giOmZhbHNlfQ.Zx1.sig", domain=HOST, path="/a")
    r = browser.post("/a/cart", json={"item": "apple"})
    assert r.status_code == 200 and browser.get("/a/cart").json()["cart"] == ["apple"]  # ours replaced it
    other = site.browser()
    other.cookies.set("__Secure-id", "not-one-of-ours", domain=HOST, path="/")
    page = other.get("/a/cart")
    assert page.status_code == 200 and not _session_cookies(page)


def test_two_live_sessions_under_our_name_are_both_refused(site: Site) -> None:
    """One planted for a longer path (cookie tossing) cannot stand in for the user's own session."""
    victim, attacker = site.browser(), site.browser()
    victim.post("/a/login", json={"user": "alice"})
    attacker.post("/a/login", json={"user": "mallory"})
    planted = attacker.cookies.get("__Secure-id", domain=HOST, path="/a")
    assert planted is not None
    victim.cookies.set("__Secure-id", planted, domain=HOST, path="/a/whoami")
    r = victim.get("/a/whoami")
    assert r.status_code == 200 and r.json()["user"] is None and not _session_cookies(r)
    assert attacker.get("/a/whoami").json()["user"] == "mallory"  # neither was expired
    victim.cookies.delete("__Secure-id", domain=HOST, path="/a/whoami")
    assert victim.get("/a/whoami").json()["user"] == "alice"


def test_a_dead_duplicate_is_expired_only_in_our_slot(site: Site) -> None:
    browser = site.browser()
    browser.cookies.set("__Secure-id", new_token(32), domain=HOST, path="/a")
    browser.cookies.set("__Secure-id", new_token(32), domain=HOST, path="/a/cart")
    r = browser.get("/a/cart")
    [expiry] = _session_cookies(r)
    assert "Max-Age=0" in expiry and "; Path=/a" in expiry and "Path=/a/cart" not in expiry


# -- Flask: the cookie path is SESSION_COOKIE_PATH, else APPLICATION_ROOT, as in Flask --------


@pytest.mark.parametrize(
    ("flask_config", "path", "name"),
    [
        ({}, "/", "__Host-id"),
        ({"APPLICATION_ROOT": "/"}, "/", "__Host-id"),
        ({"APPLICATION_ROOT": "/shop"}, "/shop", "__Secure-id"),
        ({"APPLICATION_ROOT": "/shop", "SESSION_COOKIE_PATH": "/"}, "/", "__Host-id"),
        ({"APPLICATION_ROOT": "/shop", "SESSION_COOKIE_PATH": "/shop/cart"}, "/shop/cart", "__Secure-id"),
        ({"SESSION_COOKIE_DOMAIN": "example.com"}, "/", "__Secure-id"),
        ({"APPLICATION_ROOT": "/shop", "SESSION_MW_COOKIE_PATH": "/x"}, "/x", "__Secure-id"),
        ({"APPLICATION_ROOT": "/shop", "SESSION_MW_COOKIE_SECURE": False}, "/shop", "id"),
    ],
)
def test_flask_cookie_path_follows_flask(flask_config: dict[str, Any], path: str, name: str) -> None:
    config = config_from_flask(flask_config, environ={})
    assert (config.cookie_path, config.full_cookie_name) == (path, name)


def test_two_flask_apps_under_their_application_roots(tmp_path: Any) -> None:
    from flask import Flask, jsonify

    from session_mw.contrib.flask import FlaskSessions, current_session

    def shop(root: str) -> Flask:
        app = Flask(f"shop{root.replace('/', '_')}")
        app.config.update(APPLICATION_ROOT=root, SESSION_MW_STORE_URL=f"sqlite:///{tmp_path}/sessions.db")

        @app.post("/login/<user>")
        def login(user: str) -> Any:
            current_session().user_id = user
            return jsonify(ok=True)

        @app.get("/me")
        def me() -> Any:
            return jsonify(user=current_session().user_id)

        FlaskSessions(app)
        return app

    site = DispatcherMiddleware(NotFound(), {"/a": shop("/a"), "/b": shop("/b")})
    with httpx.Client(transport=httpx.WSGITransport(app=site), base_url=f"https://{HOST}") as browser:
        a = browser.post("/a/login/alice")
        assert "; Path=/a" in a.headers["set-cookie"]
        browser.post("/b/login/bob")
        assert browser.get("/a/me").json() == {"user": "alice"}
        assert browser.get("/b/me").json() == {"user": "bob"}


@pytest.fixture
def scoped(door: str, store_url: str, key_prefix: str) -> Iterator[httpx.Client]:
    """One app whose cookie is scoped to ``/cart``, with routes inside and outside that path."""
    config = SessionConfig(store_url=store_url, key_prefix=key_prefix, cookie_path="/cart")
    store = open_async_store(config) if door == "asgi" else open_store(config)
    app = DOORS[door](config, store, Engine(config))
    if door == "asgi":
        with TestClient(app, base_url=f"https://{HOST}") as client:
            yield client
    else:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=f"https://{HOST}") as client:
            yield client


def test_a_dead_cookie_sent_outside_our_path_is_not_expired(scoped: httpx.Client) -> None:
    """The browser sends our cookie only under ``/cart``: one of our name elsewhere was set for another path."""
    header = {"cookie": f"__Secure-id={new_token(32)}"}
    outside = scoped.get("/whoami", headers=header)
    assert outside.status_code == 200 and outside.json()["user"] is None and not _session_cookies(outside)
    inside = scoped.get("/cart", headers=header)
    [expiry] = _session_cookies(inside)
    assert "Max-Age=0" in expiry and "; Path=/cart" in expiry
