"""ASGI only: ``lazy_load`` (#10 item 2) and the websocket Origin check (#11 item 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from session_mw import SessionConfig, SessionMiddleware, load_session
from session_mw.contrib.fastapi import LoadedSession
from session_mw.errors import SessionNotLoaded
from session_mw.stores import open_async_store
from session_mw.stores.base import Load
from tests.conftest import free_port


class CountingLoads:
    """The real store, counting its loads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.loads = 0

    async def execute(self, op: Any) -> Any:
        if isinstance(op, Load):
            self.loads += 1
        return await self.inner.execute(op)


async def untouched(request: Request) -> Response:
    return PlainTextResponse("ok")


async def add(request: Request) -> Response:
    session = await load_session(request)
    session.setdefault("cart", []).append("apple")
    return JSONResponse(session)


async def careless(request: Request) -> Response:
    return JSONResponse(request.session.get("cart", []))  # forgot load_session


ROUTES = [
    Route("/untouched", untouched),
    Route("/cart", add, methods=["POST"]),
    Route("/careless", careless),
]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def config(request: pytest.FixtureRequest, key_prefix: str, tmp_path: Path) -> SessionConfig:
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/s.db"}
    url = urls.get(request.param) or str(request.getfixturevalue("redis_url"))
    return SessionConfig(store_url=url, key_prefix=key_prefix, lazy_load=True)


def test_a_lazy_session_costs_no_store_read_until_the_app_asks(config: SessionConfig) -> None:
    store = CountingLoads(open_async_store(config))
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config, store=store)
    with TestClient(app, base_url="https://shop.test") as tc:
        assert tc.post("/cart").json() == {"cart": ["apple"]}  # no cookie yet: nothing to read
        assert tc.post("/cart").json() == {"cart": ["apple", "apple"]}
        assert store.loads == 1
        r = tc.get("/untouched")
        assert r.text == "ok" and "set-cookie" not in r.headers and store.loads == 1  # no round trip
        with pytest.raises(SessionNotLoaded, match=r"await session_mw\.load_session"):
            tc.get("/careless")
        assert store.loads == 1
        assert tc.post("/cart").json() == {"cart": ["apple", "apple", "apple"]}  # nothing was lost


def test_the_fastapi_dependency_loads_it(config: SessionConfig) -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, config=config)

    @app.post("/cart")
    async def cart(session: LoadedSession) -> Any:
        session.setdefault("cart", []).append("pear")
        return session

    with TestClient(app, base_url="https://shop.test") as tc:
        assert tc.post("/cart").json() == {"cart": ["pear"]}
        assert tc.post("/cart").json() == {"cart": ["pear", "pear"]}


def test_a_lazy_load_meeting_a_store_outage_is_a_503(key_prefix: str) -> None:
    config = SessionConfig(
        store_url=f"redis://127.0.0.1:{free_port()}/0",
        key_prefix=key_prefix,
        lazy_load=True,
        store_connect_timeout=0.2,
        store_socket_timeout=0.2,
    )
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        r = tc.post("/cart", headers={"cookie": "__Host-id=" + "A" * 43})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert tc.get("/untouched", headers={"cookie": "__Host-id=" + "A" * 43}).text == "ok"


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"ok": True})
    await websocket.close()


def test_with_csrf_protect_a_cross_site_websocket_is_refused() -> None:
    config = SessionConfig(store_url="memory://", csrf_protect=True)
    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        with tc.websocket_connect("/ws", headers={"origin": "http://testserver"}) as socket:  # ws://testserver
            assert socket.receive_json() == {"ok": True}
        with tc.websocket_connect("/ws") as socket:  # no Origin: no browser, nothing to hijack
            assert socket.receive_json() == {"ok": True}
        foreign = {"origin": "https://evil.test"}
        with pytest.raises(WebSocketDisconnect) as refused, tc.websocket_connect("/ws", headers=foreign) as socket:
            socket.receive_json()
        assert refused.value.code == 1008
