"""The key flows once more through httpx's own ASGI transport, in the app's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from session_mw import SessionConfig, SessionMiddleware, session_manager, session_of
from session_mw.tokens import new_token
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio
COOKIE = "__Host-id"


async def cart(request: Request) -> Response:
    session = session_of(request)
    if request.method == "POST":
        session.setdefault("cart", []).append((await request.json())["item"])
    return JSONResponse({"cart": session.get("cart", []), "user": session.user_id})


async def login(request: Request) -> Response:
    session_of(request).user_id = "alice"
    return JSONResponse({"ok": True})


async def logout(request: Request) -> Response:
    session_of(request).invalidate()
    return JSONResponse({"ok": True})


async def everywhere(request: Request) -> Response:
    return JSONResponse({"revoked": await session_manager(request).revoke_all()})


def make_app(config: SessionConfig) -> Starlette:
    app = Starlette(
        routes=[
            Route("/cart", cart, methods=["GET", "POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/everywhere", everywhere, methods=["POST"]),
        ]
    )
    app.add_middleware(SessionMiddleware, config=config)
    return app


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def client(request: pytest.FixtureRequest, key_prefix: str, tmp_path: object) -> AsyncIterator[httpx.AsyncClient]:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/s.db"}.get(request.param)
    if url is None:
        url = str(request.getfixturevalue("redis_url"))
    app = make_app(SessionConfig(store_url=url, key_prefix=key_prefix))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://shop.test") as c:
        yield c


def cookie(token: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={token}"}


async def test_fixation_regeneration_and_logout_replay(client: httpx.AsyncClient) -> None:
    planted = new_token(32)
    r = await client.post("/cart", json={"item": "apple"}, headers=cookie(planted))
    first = r.cookies[COOKIE]
    assert first != planted and r.headers["cache-control"] == "no-store"
    assert (await client.get("/cart", headers=cookie(planted))).json()["cart"] == []
    second = (await client.post("/login", headers=cookie(first))).cookies[COOKIE]
    assert second != first
    assert (await client.get("/cart", headers=cookie(second))).json() == {"cart": ["apple"], "user": "alice"}
    assert (await client.get("/cart", headers=cookie(first))).json() == {"cart": [], "user": None}
    r = await client.post("/logout", headers=cookie(second))
    assert r.headers["set-cookie"].startswith(f"{COOKIE}=;")
    assert (await client.get("/cart", headers=cookie(second))).json() == {"cart": [], "user": None}


async def test_log_out_everywhere(client: httpx.AsyncClient) -> None:
    tokens = []
    for _ in range(3):  # three browsers: each logs in with an empty cookie jar
        client.cookies.clear()
        tokens.append((await client.post("/login")).cookies[COOKIE])
    assert (await client.post("/everywhere", headers=cookie(tokens[0]))).json() == {"revoked": 3}
    for token in tokens:
        assert (await client.get("/cart", headers=cookie(token))).json()["user"] is None


async def test_redis_outage_is_a_503_then_recovers(redis_server: RedisServer, key_prefix: str) -> None:
    config = SessionConfig(
        store_url=redis_server.url, key_prefix=key_prefix, store_connect_timeout=0.5, store_socket_timeout=0.5
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(config)), base_url="https://t") as c:
        token = (await c.post("/cart", json={"item": "apple"})).cookies[COOKIE]
        redis_server.stop()
        r = await c.get("/cart", headers=cookie(token))
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "Traceback" not in r.text
        redis_server.start()
        statuses = [(await c.get("/cart", headers=cookie(token))).status_code for _ in range(3)]
        assert statuses[-1] == 200
