"""``session_mw.compat.starlette.SessionMiddleware``: Starlette's arguments, server-side sessions."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from session_mw.compat.starlette import STARLETTE_MAX_AGE, SessionMiddleware
from session_mw.stores.memory import MemoryStore
from session_mw.stores.threaded import AsyncFromSync


async def add(request: Request) -> Response:
    request.session.setdefault("cart", []).append("apple")
    return JSONResponse(request.session)


async def show(request: Request) -> Response:
    return JSONResponse(request.session)


async def logout(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({})


def make(store: MemoryStore, **options: Any) -> Starlette:
    app = Starlette(
        routes=[Route("/add", add, methods=["POST"]), Route("/", show), Route("/logout", logout, methods=["POST"])]
    )
    app.add_middleware(SessionMiddleware, store=AsyncFromSync(store, offload=False), **options)
    return app


def test_starlettes_arguments_give_starlettes_behaviour_with_the_data_on_the_server() -> None:
    store = MemoryStore()
    with TestClient(make(store, secret_key="s3cret", max_age=3600, same_site="strict"), base_url="https://t") as c:
        r = c.post("/add")
        header = r.headers["set-cookie"]
        assert header.startswith("__Host-session=") and "Max-Age=3600" in header and "SameSite=Strict" in header
        assert "Secure" in header and "HttpOnly" in header
        assert "apple" not in header and store.count() == 1  # a token in the cookie, the cart in the store
        assert c.get("/").json() == {"cart": ["apple"]}
        assert c.post("/logout").headers["set-cookie"].startswith("__Host-session=;") and store.count() == 0


def test_the_default_max_age_is_starlettes_and_https_only_false_turns_secure_off() -> None:
    with TestClient(make(MemoryStore(), https_only=False, session_cookie="sid"), base_url="http://t") as c:
        header = c.post("/add").headers["set-cookie"]
    assert header.startswith("sid=") and f"Max-Age={STARLETTE_MAX_AGE}" in header and "Secure" not in header


def test_a_browser_session_cookie_without_max_age_and_other_settings_from_a_config() -> None:
    from session_mw import SessionConfig

    with TestClient(
        make(MemoryStore(), max_age=None, config=SessionConfig(idle_timeout=60)), base_url="https://t"
    ) as c:
        header = c.post("/add").headers["set-cookie"]
    assert "Max-Age" not in header


def test_bad_arguments_are_config_errors() -> None:
    from session_mw import ConfigError

    with pytest.raises(ConfigError, match="cookie_samesite"):
        SessionMiddleware(show, same_site="sometimes", store=AsyncFromSync(MemoryStore(), offload=False))  # type: ignore[arg-type]
