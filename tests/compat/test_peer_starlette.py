"""Starlette's own session tests (tests/middleware/test_session.py), ported to our shim.

Each test makes the requests Starlette's test makes, with the arguments Starlette's test passes,
against ``session_mw.compat.starlette.SessionMiddleware`` on a real SQLite file. What
``request.session`` holds across requests must be what Starlette gives; where the cookie
differs by design (the ``__Host-`` prefix, Secure on by default, a random token instead of
the signed data, expiry decided by the server) the test says so and checks ours.

The clients use ``https://`` base URLs: our cookie is Secure unless the app passes
``https_only=False``, and a client (httpx, as a browser) never sends a Secure cookie over
plain http. ``test_plain_http_needs_https_only_false`` pins that difference.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from session_mw import SessionConfig
from session_mw.compat.starlette import SessionMiddleware
from session_mw.config import DEFAULTS
from session_mw.stores import open_store
from session_mw.stores.base import AsyncStore, Close
from session_mw.stores.threaded import AsyncFromSync

SECURE = "https://testserver"


async def view_session(request: Request) -> Response:
    return JSONResponse({"session": request.session})


async def update_session(request: Request) -> Response:
    request.session.update(await request.json())
    return JSONResponse({"session": request.session})


async def clear_session(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({"session": request.session})


ROUTES = [
    Route("/view_session", view_session),
    Route("/update_session", update_session, methods=["POST"]),
    Route("/clear_session", clear_session, methods=["POST"]),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    """A real SQLite file, handed to the middleware so that it outlives one client's lifespan."""
    sync = open_store(SessionConfig(store_url=f"sqlite:///{tmp_path / 'sessions.db'}"))
    yield AsyncFromSync(sync, offload=True)
    sync.execute(Close())


def app_with(store: AsyncStore, **options: Any) -> Starlette:
    """Starlette's test app: its three routes behind the shim, with Starlette's arguments."""
    middleware = Middleware(SessionMiddleware, store=store, config=SessionConfig(), **options)
    return Starlette(routes=ROUTES, middleware=[middleware])


def cookie_name(set_cookie: str) -> str:
    return set_cookie.split("=", 1)[0]


def attribute(set_cookie: str, name: str) -> str | None:
    """The value of one cookie attribute (names are case-insensitive, RFC 6265 5.2)."""
    match = re.search(rf";\s*{name}=([^;]*)", set_cookie, re.IGNORECASE)
    return None if match is None else match[1]


def test_session(store: AsyncStore) -> None:
    """Starlette: test_session"""
    with TestClient(app_with(store, secret_key="example"), base_url=SECURE) as client:
        assert client.get("/view_session").json() == {"session": {}}

        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        set_cookie = response.headers["set-cookie"]
        # difference by design: what the app did not pass keeps our secure defaults, so a session
        # without max_age lasts our absolute timeout (8 h), not Starlette's 14 days (still persistent)
        assert attribute(set_cookie, "Max-Age") == str(int(DEFAULTS.absolute_timeout))
        # difference by design: a random token under __Host-id, Secure; the data stays on the server
        assert cookie_name(set_cookie) == "__Host-id" and "Secure" in set_cookie
        assert "data" not in set_cookie

        assert client.get("/view_session").json() == {"session": {"some": "data"}}
        assert client.post("/clear_session").json() == {"session": {}}
        assert client.get("/view_session").json() == {"session": {}}


def test_session_expires(store: AsyncStore) -> None:
    """Starlette: test_session_expires (max_age=-1, as Starlette's test passes it)"""
    app = app_with(store, secret_key="example", max_age=-1)
    with TestClient(app, base_url=SECURE) as client:
        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        token = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    # the client drops an expired cookie by itself: send it anyway, the server must refuse it
    with TestClient(app, base_url=SECURE, cookies={"__Host-id": token}) as client:
        assert client.get("/view_session").json() == {"session": {}}


def test_session_expires_after_max_age(store: AsyncStore) -> None:
    """Starlette: test_session_expires, with a max_age we accept (1 s): the server forgets the session.

    Starlette refuses the expired signed cookie; we refuse the token because the store's session
    has ended, even when the client keeps sending the cookie after its Max-Age.
    """
    app = app_with(store, secret_key="example", max_age=1)
    with TestClient(app, base_url=SECURE) as client:
        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        assert attribute(response.headers["set-cookie"], "Max-Age") == "1"
        token = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        assert client.get("/view_session").json() == {"session": {"some": "data"}}
    time.sleep(1.1)
    with TestClient(app, base_url=SECURE, cookies={"__Host-id": token}) as client:
        assert client.get("/view_session").json() == {"session": {}}


def test_secure_session(store: AsyncStore) -> None:
    """Starlette: test_secure_session"""
    app = app_with(store, secret_key="example", https_only=True)
    secure_client, plain_client = (
        TestClient(app, base_url="https://testserver"),
        TestClient(app, base_url="http://testserver"),
    )
    with secure_client as secure, plain_client as plain:
        assert plain.get("/view_session").json() == {"session": {}}
        assert plain.post("/update_session", json={"some": "data"}).json() == {"session": {"some": "data"}}
        assert plain.get("/view_session").json() == {"session": {}}  # a Secure cookie never goes over http

        assert secure.get("/view_session").json() == {"session": {}}
        assert secure.post("/update_session", json={"some": "data"}).json() == {"session": {"some": "data"}}
        assert secure.get("/view_session").json() == {"session": {"some": "data"}}
        assert secure.post("/clear_session").json() == {"session": {}}
        assert secure.get("/view_session").json() == {"session": {}}


async def cookie_seen(request: Request) -> Response:
    return JSONResponse({"cookie": request.headers.get("cookie")})


def test_session_cookie_subpath(store: AsyncStore) -> None:
    """Starlette: test_session_cookie_subpath

    Ours: no ``__Host-`` prefix (it requires Path=/); the Path attribute is Starlette's. We also
    check what the path is for: the session works under /second_app and the cookie stays there.
    """
    second_app = Starlette(
        routes=[Route("/update_session", update_session, methods=["POST"]), Route("/view_session", view_session)],
        middleware=[
            Middleware(SessionMiddleware, secret_key="example", path="/second_app", store=store, config=SessionConfig())
        ],
    )
    app = Starlette(routes=[Mount("/second_app", app=second_app), Route("/elsewhere", cookie_seen)])
    # Starlette's test sets base_url=".../second_app" too; httpx would join it with the request's
    # /second_app/..., so the base URL here is the host alone and the request path the same
    with TestClient(app, base_url=SECURE) as client:
        response = client.post("/second_app/update_session", json={"some": "data"})
        assert response.status_code == 200
        set_cookie = response.headers["set-cookie"]
        assert attribute(set_cookie, "path") == "/second_app"
        assert not cookie_name(set_cookie).startswith("__Host-")
        assert client.get("/second_app/view_session").json() == {"session": {"some": "data"}}
        assert client.get("/elsewhere").json() == {"cookie": None}


@pytest.mark.parametrize("name", ["session", "__Host-id"])
def test_invalid_session_cookie(store: AsyncStore, name: str) -> None:
    """Starlette: test_invalid_session_cookie (under Starlette's cookie name and under ours)"""
    app = app_with(store, secret_key="example")
    with TestClient(app, base_url=SECURE) as client:
        assert client.post("/update_session", json={"some": "data"}).json() == {"session": {"some": "data"}}
    with TestClient(app, base_url=SECURE, cookies={name: "invalid"}) as client:
        response = client.get("/view_session")
        assert response.status_code == 200 and response.json() == {"session": {}}


def test_session_cookie(store: AsyncStore) -> None:
    """Starlette: test_session_cookie (max_age=None: a browser-session cookie)"""
    with TestClient(app_with(store, secret_key="example", max_age=None), base_url=SECURE) as client:
        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        assert "Max-Age" not in response.headers["set-cookie"]
        assert client.get("/view_session").json() == {"session": {"some": "data"}}

        client.cookies.delete("__Host-id")
        assert client.get("/view_session").json() == {"session": {}}


def test_domain_cookie(store: AsyncStore) -> None:
    """Starlette: test_domain_cookie

    Starlette writes ``domain=.example.com``; werkzeug (which formats our cookie) drops the
    leading dot, which browsers ignore anyway (RFC 6265 5.2.3): the cookie goes to the same hosts.
    A Domain rules out ``__Host-``. The client is on a host of that domain, so the cookie is kept.
    """
    app = app_with(store, secret_key="example", domain=".example.com")
    with TestClient(app, base_url="https://www.example.com") as client:
        response = client.post("/update_session", json={"some": "data"})
        assert response.json() == {"session": {"some": "data"}}
        set_cookie = response.headers["set-cookie"]
        assert attribute(set_cookie, "Domain") == "example.com"
        assert not cookie_name(set_cookie).startswith("__Host-")
        assert client.get("/view_session").json() == {"session": {"some": "data"}}

        client.cookies.delete(cookie_name(set_cookie))
        assert client.get("/view_session").json() == {"session": {}}


def test_plain_http_needs_https_only_false(store: AsyncStore) -> None:
    """Difference by design: Starlette's default (no ``https_only``) works over plain http; ours
    keeps Secure on, so over http only ``https_only=False`` gives Starlette's behaviour."""
    with TestClient(app_with(store, secret_key="example"), base_url="http://testserver") as client:
        response = client.post("/update_session", json={"some": "data"})
        assert "Secure" in response.headers["set-cookie"]
        assert client.get("/view_session").json() == {"session": {}}
    with TestClient(app_with(store, secret_key="example", https_only=False)) as client:
        response = client.post("/update_session", json={"some": "data"})
        assert "Secure" not in response.headers["set-cookie"]
        assert (
            cookie_name(response.headers["set-cookie"]) == "id"
        )  # our generic name (#11) unless session_cookie= is passed
        assert client.get("/view_session").json() == {"session": {"some": "data"}}


def test_max_age_counts_from_the_sessions_start(store: AsyncStore) -> None:
    """Starlette: SessionMiddleware's max_age (not a test of its suite). Difference by design:
    Starlette re-signs the cookie on every response that writes, so a session written more often
    than max_age never ends. Ours is an absolute lifetime (OWASP's absolute timeout): the
    session ends max_age after it began, however busy, and a stolen token stops working."""
    app = app_with(store, secret_key="example", max_age=1)
    with TestClient(app, base_url=SECURE) as client:
        first = client.post("/update_session", json={"some": "data"})
        token = first.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    # the cookie is sent explicitly: the client's jar would drop it at its whole-second Expires
    with TestClient(app, base_url=SECURE, cookies={"__Host-id": token}) as client:
        time.sleep(0.6)
        more = client.post("/update_session", json={"more": "data"})
        assert more.json() == {"session": {"some": "data", "more": "data"}}
        time.sleep(0.6)  # 1.2 s after the start, 0.6 s after the last write
        assert client.get("/view_session").json() == {"session": {}}
