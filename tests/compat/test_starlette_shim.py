"""``session_mw.compat.starlette.SessionMiddleware``: Starlette's arguments, server-side sessions."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from session_mw import SessionConfig
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


async def bare(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for tests that only build the middleware."""


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
        assert header.startswith("__Host-id=") and "Max-Age=3600" in header and "SameSite=Strict" in header
        assert "Secure" in header and "HttpOnly" in header
        assert "apple" not in header and store.count() == 1  # a token in the cookie, the cart in the store
        assert c.get("/").json() == {"cart": ["apple"]}
        assert c.post("/logout").headers["set-cookie"].startswith("__Host-id=;") and store.count() == 0


def test_what_the_app_did_not_pass_keeps_our_secure_defaults() -> None:
    """Starlette's defaults are https_only=False and 14 days; ours are Secure and 8 hours, with an idle timeout."""
    from session_mw.config import DEFAULTS

    app = make(MemoryStore())
    with TestClient(app, base_url="https://t") as c:
        header = c.post("/add").headers["set-cookie"]
    assert header.startswith("__Host-id=") and "Secure" in header and "HttpOnly" in header
    assert (
        f"Max-Age={int(DEFAULTS.absolute_timeout)}" in header and "SameSite=Lax" in header
    )  # persistent, as Starlette's
    shim = SessionMiddleware(bare, store=AsyncFromSync(MemoryStore(), offload=False))
    assert shim.config.idle_timeout == DEFAULTS.idle_timeout and shim.config.absolute_timeout < STARLETTE_MAX_AGE


def test_an_explicit_max_age_bounds_the_session_and_keeps_our_idle_timeout() -> None:
    from session_mw import SessionConfig

    shim = SessionMiddleware(bare, max_age=3600, store=AsyncFromSync(MemoryStore(), offload=False))
    assert (shim.config.absolute_timeout, shim.config.idle_timeout) == (3600, SessionConfig().idle_timeout)
    short = SessionMiddleware(bare, max_age=60, store=AsyncFromSync(MemoryStore(), offload=False))
    assert (short.config.absolute_timeout, short.config.idle_timeout) == (60, 60)
    from_config = SessionMiddleware(
        bare, max_age=3600, config=SessionConfig(idle_timeout=120), store=AsyncFromSync(MemoryStore(), offload=False)
    )
    assert from_config.config.idle_timeout == 120


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"https_only": False}, "https_only=False"),
        ({"same_site": "none"}, "same_site='none'"),
        ({"max_age": 14 * 24 * 3600}, "max_age=1209600"),
    ],
)
def test_an_explicit_weaker_argument_is_honoured_with_one_warning(
    options: dict[str, Any], setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="session_mw"):
        shim = SessionMiddleware(bare, **options, store=AsyncFromSync(MemoryStore(), offload=False))
    [record] = [r for r in caplog.records if "weaker" in r.getMessage()]
    assert setting in record.getMessage()
    if "https_only" in options:
        assert not shim.config.cookie_secure
    if "same_site" in options:
        assert shim.config.cookie_samesite == "none"
    if "max_age" in options:
        assert shim.config.absolute_timeout == options["max_age"]


def test_arguments_as_strong_as_ours_warn_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="session_mw"):
        SessionMiddleware(
            bare,
            https_only=True,
            same_site="strict",
            max_age=600,
            store=AsyncFromSync(MemoryStore(), offload=False),
            config=SessionConfig(),  # not the environment: CI's own SESSION_MW_REQUIRE_* are warned about there
        )
    assert not caplog.records


def test_https_only_false_turns_secure_off() -> None:
    with TestClient(make(MemoryStore(), https_only=False, session_cookie="sid"), base_url="http://t") as c:
        header = c.post("/add").headers["set-cookie"]
    assert header.startswith("sid=") and "Secure" not in header


def test_bad_arguments_are_config_errors() -> None:
    from session_mw import ConfigError

    with pytest.raises(ConfigError, match="cookie_samesite"):
        SessionMiddleware(bare, same_site="sometimes", store=AsyncFromSync(MemoryStore(), offload=False))  # type: ignore[arg-type]
