"""The ASGI door, through the real ASGI interface, on memory and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from session_mw import SessionConfig, SessionMiddleware, StoreUnavailable, session_manager, session_of
from session_mw.engine import Engine
from session_mw.stores import open_async_store
from session_mw.stores.base import AsyncStore, Meta, Record, Touch, Write
from session_mw.tokens import new_token
from tests.conftest import FakeClock, RedisServer

pytestmark = pytest.mark.anyio
IDLE, ABSOLUTE = 1000, 5000


class CountingStore:
    """A real store with call counters around it (it still does all the work)."""

    def __init__(self, inner: AsyncStore) -> None:
        self.inner = inner
        self.loads = self.writes = self.deletes = 0

    async def load(self, key: str, touch: Touch) -> Record | None:
        self.loads += 1
        return await self.inner.load(key, touch)

    async def write(self, op: Write) -> bool:
        self.writes += 1
        return await self.inner.write(op)

    async def delete(self, key: str) -> None:
        self.deletes += 1
        await self.inner.delete(key)

    async def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        return await self.inner.user_sessions(user_id)

    async def gc(self, now: float) -> int:
        return await self.inner.gc(now)

    async def close(self) -> None:
        await self.inner.close()


async def read_cart(request: Request) -> Response:
    session = session_of(request)
    return JSONResponse({"cart": session.get("cart", []), "user": session.user_id})


async def add(request: Request) -> Response:
    request.session.setdefault("cart", []).append((await request.json())["item"])
    return JSONResponse({"cart": request.session["cart"]})


async def login(request: Request) -> Response:
    session_of(request).user_id = (await request.json())["user"]
    return PlainTextResponse("ok")


async def elevate(request: Request) -> Response:
    session_of(request).regenerate()
    request.session["admin"] = True
    return PlainTextResponse("ok")


async def logout(request: Request) -> Response:
    session_of(request).invalidate()
    return PlainTextResponse("bye")


async def everywhere(request: Request) -> Response:
    return JSONResponse({"revoked": await session_manager(request).revoke_all()})


async def sessions(request: Request) -> Response:
    return JSONResponse([i.as_dict() for i in await session_manager(request).list()])


async def plain(request: Request) -> Response:
    return PlainTextResponse("hello", headers={"Cache-Control": "max-age=60"})


async def boom(request: Request) -> Response:
    request.session["lost"] = True
    return PlainTextResponse("oops", status_code=500)


async def remember(request: Request) -> Response:
    request.session["x"] = 1
    session_of(request).remember = True
    return PlainTextResponse("ok")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"cart": websocket.session.get("cart", [])})
    await websocket.close()


ROUTES = [
    Route("/cart", read_cart),
    Route("/cart", add, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/elevate", elevate, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/everywhere", everywhere, methods=["POST"]),
    Route("/sessions", sessions),
    Route("/plain", plain),
    Route("/static/app.css", plain),
    Route("/boom", boom, methods=["POST"]),
    Route("/remember", remember, methods=["POST"]),
    WebSocketRoute("/ws", ws),
]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def config(store_url: str, key_prefix: str) -> SessionConfig:
    return SessionConfig(
        store_url=store_url, key_prefix=key_prefix, idle_timeout=IDLE, absolute_timeout=ABSOLUTE,
        touch_interval=100, exclude_paths=("/static",),
    )


@pytest.fixture
async def store(config: SessionConfig) -> AsyncIterator[CountingStore]:
    s = CountingStore(open_async_store(config))
    yield s
    await s.close()


@pytest.fixture
def app(config: SessionConfig, store: CountingStore, clock: FakeClock) -> Starlette:
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config, store=store, engine=Engine(config, clock=clock))
    return app


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://shop.test")


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


def token_of(response: httpx.Response) -> str | None:
    header = response.headers.get("set-cookie")
    if header is None:
        return None
    return str(header.split(";", 1)[0].split("=", 1)[1])


def cookie(token: str) -> dict[str, str]:
    return {"cookie": f"__Host-session={token}"}


async def test_anonymous_reader_gets_no_session(client: httpx.AsyncClient, store: CountingStore) -> None:
    r = await client.get("/cart")
    assert r.json() == {"cart": [], "user": None}
    assert "set-cookie" not in r.headers
    assert (store.loads, store.writes) == (0, 0)


async def test_first_write_creates_a_secure_cookie(client: httpx.AsyncClient) -> None:
    r = await client.post("/cart", json={"item": "apple"})
    header = r.headers["set-cookie"]
    assert header.startswith("__Host-session=")
    for attr in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attr in header
    assert r.headers["cache-control"] == "no-store" and r.headers["vary"] == "Cookie"
    assert (await client.get("/cart")).json()["cart"] == ["apple"]


async def test_nested_mutation_is_saved_and_reads_write_nothing(
    client: httpx.AsyncClient, store: CountingStore
) -> None:
    await client.post("/cart", json={"item": "apple"})
    await client.post("/cart", json={"item": "pear"})
    writes = store.writes
    for _ in range(5):
        r = await client.get("/cart")
        assert r.json()["cart"] == ["apple", "pear"] and "set-cookie" not in r.headers
    assert store.writes == writes and store.loads == 6


async def test_session_fixation_is_impossible(client: httpx.AsyncClient) -> None:
    planted = new_token(32)  # well-formed, but never issued by the server
    r = await client.post("/cart", json={"item": "apple"}, headers=cookie(planted))
    issued = token_of(r)
    assert issued is not None and issued != planted
    r = await client.get("/cart", headers=cookie(planted))
    assert r.json()["cart"] == []


async def test_login_regenerates_and_the_old_token_is_dead(client: httpx.AsyncClient) -> None:
    before = token_of(await client.post("/cart", json={"item": "apple"}))
    after = token_of(await client.post("/login", json={"user": "alice"}))
    assert before and after and before != after
    assert (await client.get("/cart")).json() == {"cart": ["apple"], "user": "alice"}
    replay = await client.get("/cart", headers=cookie(before))
    assert replay.json() == {"cart": [], "user": None}
    assert replay.headers["set-cookie"].startswith("__Host-session=;")


async def test_privilege_change_regenerates(client: httpx.AsyncClient) -> None:
    await client.post("/cart", json={"item": "apple"})
    t1 = client.cookies.get("__Host-session")
    t2 = token_of(await client.post("/elevate"))
    assert t1 and t2 and t1 != t2
    assert (await client.get("/cart", headers=cookie(t1))).json()["cart"] == []


async def test_logout_kills_the_session_and_replay_fails(client: httpx.AsyncClient, store: CountingStore) -> None:
    await client.post("/login", json={"user": "alice"})
    token = client.cookies.get("__Host-session")
    assert token
    r = await client.post("/logout")
    assert r.headers["set-cookie"].startswith("__Host-session=;") and "Max-Age=0" in r.headers["set-cookie"]
    assert (await client.get("/cart", headers=cookie(token))).json()["user"] is None


async def test_idle_timeout(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await client.post("/login", json={"user": "alice"})
    clock.advance(IDLE - 1)
    assert (await client.get("/cart")).json()["user"] == "alice"
    clock.advance(IDLE)
    assert (await client.get("/cart")).json()["user"] is None


async def test_absolute_timeout_ends_even_an_active_session(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await client.post("/login", json={"user": "alice"})
    for _ in range(ABSOLUTE // (IDLE // 2) - 1):
        clock.advance(IDLE // 2)
        assert (await client.get("/cart")).json()["user"] == "alice"
    clock.advance(IDLE // 2)
    assert (await client.get("/cart")).json()["user"] is None


async def test_touch_is_throttled_and_keeps_an_active_user(
    client: httpx.AsyncClient, clock: FakeClock, store: CountingStore
) -> None:
    await client.post("/login", json={"user": "alice"})
    writes = store.writes
    # active every 90 % of the idle timeout: never logged out, never rewritten
    for _ in range(5):  # 5 x 899 s stays inside the absolute timeout
        clock.advance(IDLE * 0.9 - 1)
        assert (await client.get("/cart")).json()["user"] == "alice"
    assert store.writes == writes


async def test_a_burst_of_reads_touches_at_most_once(
    client: httpx.AsyncClient, clock: FakeClock, store: CountingStore
) -> None:
    await client.post("/login", json={"user": "alice"})
    key = next(iter(await store.user_sessions("alice")))[0]
    clock.advance(150)
    for _ in range(5):
        await client.get("/cart")
        clock.advance(1)
    record = await store.inner.load(key, Touch(clock.now, 10_000, IDLE))
    assert record is not None and record.meta.last_seen == clock.now - 5


async def test_a_write_never_resurrects_a_session_deleted_meanwhile(
    app: Starlette, store: CountingStore
) -> None:
    async with client_for(app) as tab1, client_for(app) as tab2:
        await tab1.post("/login", json={"user": "alice"})
        token = tab1.cookies["__Host-session"]
        tab2.cookies.set("__Host-session", token, domain="shop.test")

        async def slow_add(request: Request) -> Response:
            request.session["cart"] = ["apple"]
            await tab1.post("/logout")  # another tab logs out while this request runs
            return PlainTextResponse("ok")

        app.router.routes.insert(0, Route("/slow", slow_add, methods=["POST"]))
        r = await tab2.post("/slow")
        assert r.headers["set-cookie"].startswith("__Host-session=;")
        assert await store.user_sessions("alice") == []
        assert (await tab2.get("/cart", headers=cookie(token))).json() == {"cart": [], "user": None}


@pytest.mark.parametrize(
    "header",
    [
        "__Host-session=garbage",
        "__Host-session=" + "A" * 5000,
        f"__Host-session={new_token(32)}; __Host-session={new_token(32)}",
        '__Host-session="\\x00\\"',
        "__Host-session=%00%ff%fe; other=1",
        "=; ;; __Host-session",
    ],
)
async def test_bad_cookies_are_no_session_never_an_error(client: httpx.AsyncClient, header: str) -> None:
    r = await client.get("/cart", headers={"cookie": header})
    assert r.status_code == 200 and r.json() == {"cart": [], "user": None}
    r = await client.post("/cart", json={"item": "apple"}, headers={"cookie": header})
    assert r.status_code == 200 and token_of(r)


async def test_server_error_saves_nothing(client: httpx.AsyncClient, store: CountingStore) -> None:
    r = await client.post("/boom")
    assert r.status_code == 500 and "set-cookie" not in r.headers and store.writes == 0


async def test_headers_respect_the_apps_own(client: httpx.AsyncClient) -> None:
    r = await client.get("/plain")
    assert "vary" not in r.headers and r.headers["cache-control"] == "max-age=60"


async def test_excluded_paths_never_touch_the_store(client: httpx.AsyncClient, store: CountingStore) -> None:
    await client.post("/cart", json={"item": "apple"})
    loads = store.loads
    r = await client.get("/static/app.css")
    assert r.status_code == 200 and store.loads == loads


async def test_remember_gives_a_persistent_cookie(client: httpx.AsyncClient) -> None:
    r = await client.post("/remember")
    assert f"Max-Age={ABSOLUTE}" in r.headers["set-cookie"]


async def test_log_out_everywhere_and_list_sessions(app: Starlette) -> None:
    async with client_for(app) as phone, client_for(app) as laptop, client_for(app) as other:
        await phone.post("/login", json={"user": "alice"}, headers={"user-agent": "Phone"})
        await laptop.post("/login", json={"user": "alice"}, headers={"user-agent": "Laptop"})
        await other.post("/login", json={"user": "bob"})
        listed = (await laptop.get("/sessions")).json()
        assert sorted(s["user_agent"] for s in listed) == ["Laptop", "Phone"]
        assert [s["current"] for s in listed if s["user_agent"] == "Laptop"] == [True]
        r = await laptop.post("/everywhere")
        assert r.json() == {"revoked": 2} and r.headers["set-cookie"].startswith("__Host-session=;")
        assert (await phone.get("/cart")).json()["user"] is None
        assert (await laptop.get("/cart")).json()["user"] is None
        assert (await other.get("/cart")).json()["user"] == "bob"


def test_websocket_sees_the_session_read_only(config: SessionConfig) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test") as tc:
        token = token_of(tc.post("/cart", json={"item": "apple"}))
        assert token
        with tc.websocket_connect("/ws", headers=cookie(token)) as socket:
            assert socket.receive_json() == {"cart": ["apple"]}


def test_lifespan_passes_through(config: SessionConfig) -> None:
    started: list[bool] = []

    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.append(True)
        yield

    from contextlib import asynccontextmanager

    app = Starlette(routes=ROUTES, lifespan=asynccontextmanager(lifespan))
    app.add_middleware(SessionMiddleware, config=config)
    with TestClient(app, base_url="https://shop.test"):
        pass
    assert started == [True]


@pytest.fixture
def outage_app(redis_server: RedisServer, key_prefix: str) -> Iterator[tuple[Starlette, RedisServer]]:
    config = SessionConfig(store_url=redis_server.url, key_prefix=key_prefix,
                           store_connect_timeout=0.5, store_socket_timeout=0.5)
    app = Starlette(routes=ROUTES)
    app.add_middleware(SessionMiddleware, config=config)
    yield app, redis_server


async def test_redis_down_gives_503_and_recovers(outage_app: tuple[Starlette, RedisServer]) -> None:
    app, server = outage_app
    async with client_for(app) as c:
        await c.post("/cart", json={"item": "apple"})
        server.stop()
        r = await c.get("/cart")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.text == "Session store unavailable; please retry shortly.\n"
        anon = client_for(app)
        r = await anon.post("/cart", json={"item": "pear"})  # the write at response start fails
        assert r.status_code == 503 and "set-cookie" not in r.headers
        assert (await anon.get("/plain")).status_code == 200  # no session needed, still served
        await anon.aclose()
        server.start()
        r = await c.get("/cart")
        assert r.status_code in (200, 503)  # the pool may hold one dead connection
        r = await c.get("/cart")
        assert (r.status_code == 200 and r.json()["cart"] == []) or r.json()["cart"] == ["apple"]


async def test_store_unavailable_is_a_typed_error(key_prefix: str) -> None:
    from tests.conftest import free_port

    store = open_async_store(SessionConfig(store_url=f"redis://127.0.0.1:{free_port()}/0", key_prefix=key_prefix,
                                           store_connect_timeout=0.5))
    with pytest.raises(StoreUnavailable) as info:
        await store.load("0" * 64, Touch(0, 1, 10))
    assert info.value.status_hint == 503
    await store.close()
