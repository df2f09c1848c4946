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


@pytest.mark.anyio
async def test_a_request_cancelled_while_loading_releases_the_lock() -> None:
    import asyncio

    from session_mw.stores.base import Op, R
    from session_mw.stores.memory import MemoryStore
    from session_mw.stores.threaded import AsyncFromSync

    class SlowLoads(AsyncFromSync):
        slow = False

        async def execute(self, op: Op[R]) -> R:
            if self.slow and isinstance(op, Load):
                await asyncio.sleep(5)
            return await super().execute(op)

    store = SlowLoads(MemoryStore(), offload=False)
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/login":
            scope["session"].user_id = "alice"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(scope["session"].user_id).encode()})

    middleware = SessionMiddleware(app, SessionConfig(locking=True, lock_timeout=0.2), store=store)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    await middleware({"type": "http", "path": "/login", "headers": []}, receive, send)
    cookie = next(v for n, v in sent[0]["headers"] if n == b"set-cookie").split(b";")[0]
    scope = {"type": "http", "path": "/", "headers": [(b"cookie", cookie)]}
    store.slow = True
    task = asyncio.ensure_future(middleware(dict(scope), receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.slow = False
    sent.clear()
    await middleware(dict(scope), receive, send)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"alice"


def test_starlettes_session_protocol_marks_a_read_of_an_empty_session(config: SessionConfig) -> None:
    """``request.session`` calls ``mark_accessed()``: a page built from an empty session varies on Cookie."""

    async def page(request: Request) -> Response:
        return JSONResponse(request.session)  # json reads the dict below any method of ours

    app = Starlette(routes=[Route("/", page)])
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        r = tc.get("/")
    assert r.json() == {} and r.headers["vary"] == "Cookie" and "set-cookie" not in r.headers
