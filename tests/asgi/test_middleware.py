"""What only the ASGI door has: websockets, lifespan, scope passing. The shared behaviour is in tests/doors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from session_mw import SessionConfig, SessionMiddleware, StoreUnavailable, session_of
from session_mw.stores import open_async_store
from session_mw.stores.base import UNBOUNDED, Close, Load
from tests.conftest import free_port


async def add(request: Request) -> Response:
    request.session.setdefault("cart", []).append("apple")
    return JSONResponse(request.session)


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    session = session_of(websocket)
    await websocket.send_json({"cart": session.get("cart", [])})
    session["ignored"] = True  # read-only: a websocket has no response to carry a cookie
    await websocket.close()


ROUTES = [Route("/cart", add, methods=["POST"]), WebSocketRoute("/ws", ws)]


@pytest.fixture(params=["memory", "redis"])
def config(request: pytest.FixtureRequest, key_prefix: str) -> SessionConfig:
    url = "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))
    return SessionConfig(store_url=url, key_prefix=key_prefix)


def test_request_session_is_starlettes_own_property(config: SessionConfig) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        assert tc.post("/cart").json() == {"cart": ["apple"]}
        assert tc.post("/cart").json() == {"cart": ["apple", "apple"]}


def test_websocket_sees_the_session_read_only(config: SessionConfig) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        header = tc.post("/cart").headers["set-cookie"]
        cookie = {"cookie": header.split(";", 1)[0]}
        for _ in range(2):
            with tc.websocket_connect("/ws", headers=cookie) as socket:
                assert socket.receive_json() == {"cart": ["apple"]}
        with tc.websocket_connect("/ws") as socket:
            assert socket.receive_json() == {"cart": []}


def test_lifespan_passes_through(config: SessionConfig) -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test"):
        pass
    assert started == [True]


def test_session_of_without_the_middleware_names_the_fix() -> None:
    with pytest.raises(RuntimeError, match="SessionMiddleware must be installed"):
        session_of({"type": "http"})


@pytest.mark.anyio
async def test_store_unavailable_is_a_typed_error(key_prefix: str) -> None:
    store = open_async_store(
        SessionConfig(store_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix=key_prefix, store_connect_timeout=0.5)
    )
    with pytest.raises(StoreUnavailable) as info:
        await store.execute(Load("0" * 64, UNBOUNDED))
    assert info.value.status_hint == 503
    await store.execute(Close())
