"""What only the WSGI door has: lazy loading, streamed bodies, late start_response, closing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, session
from flask import request as flask_request
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from session_mw import SessionConfig, SessionMiddleware, StoreUnavailable
from session_mw.contrib.flask import FlaskSessions
from session_mw.stores.base import Load
from session_mw.stores.memory import MemoryStore
from session_mw.wsgi import WSGISessionMiddleware, session_of
from tests.conftest import free_port


class Body:
    """A streamed body that records whether the server closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="https://shop.test")


def test_streamed_body_passes_through_and_is_closed() -> None:
    bodies: list[Body] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session_of(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Body([b"a", b"b", b"c"]))
        return bodies[-1]

    r = client(WSGISessionMiddleware(app, SessionConfig())).get("/")
    assert r.text == "abc" and r.headers["set-cookie"].startswith("__Host-id=")
    assert bodies[0].closed


def test_late_start_response_inside_a_generator_still_saves() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        session_of(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late"

    r = client(WSGISessionMiddleware(app, SessionConfig())).get("/")
    assert r.text == "late" and r.headers["set-cookie"].startswith("__Host-id=")


class LoadCounting(MemoryStore):
    """A memory store that records the keys it was asked to load."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def execute(self, op: Any) -> Any:
        if isinstance(op, Load):
            self.loads.append(op.key)
        return super().execute(op)


def test_lazy_loading_reads_the_store_only_when_used() -> None:
    store = LoadCounting()
    loads = store.loads

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/write":
            session_of(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    c = client(WSGISessionMiddleware(app, SessionConfig(), store=store))
    c.get("/write")
    assert loads == []
    c.get("/static")  # carries the cookie, never touches the session
    assert loads == []
    c.get("/write")
    assert len(loads) == 1


def test_store_down_during_a_late_start_gives_503_and_closes_the_body() -> None:
    bodies: list[Body] = []
    config = SessionConfig(store_url=f"redis://127.0.0.1:{free_port()}/0", store_connect_timeout=0.3)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        session_of(environ)["n"] = 1  # a new session: the write at start_response fails
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Body([b"secret app output"]))
        return bodies[-1]

    r = client(WSGISessionMiddleware(app, config)).get("/")
    assert r.status_code == 503 and "secret" not in r.text and r.headers["retry-after"] == "5"
    assert bodies[0].closed


def test_an_app_error_in_the_store_becomes_503_not_a_traceback() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise StoreUnavailable("down")

    r = client(WSGISessionMiddleware(app, SessionConfig())).get("/")
    assert r.status_code == 503 and "Traceback" not in r.text


@pytest.mark.parametrize("direction", ["fastapi-to-flask", "flask-to-fastapi"])
def test_a_starlette_app_and_a_flask_app_share_one_session_on_redis(
    redis_url: str, key_prefix: str, direction: str
) -> None:
    config = SessionConfig(store_url=redis_url, key_prefix=key_prefix)

    async def asgi_cart(request: Request) -> Response:
        if request.method == "POST":
            request.session.setdefault("cart", []).append("from-asgi")
        return JSONResponse({"cart": request.session.get("cart", [])})

    from starlette.applications import Starlette

    asgi = Starlette(routes=[Route("/cart", asgi_cart, methods=["GET", "POST"])])
    asgi.add_middleware(SessionMiddleware, config=config)
    flask_app = Flask(__name__)
    FlaskSessions(flask_app, config=config)

    @flask_app.route("/cart", methods=["GET", "POST"])
    def flask_cart() -> Any:
        if flask_request.method == "POST":
            session.setdefault("cart", []).append("from-flask")
        return {"cart": session.get("cart", [])}

    with TestClient(asgi, base_url="https://shop.test") as fast:
        flask_client = client(flask_app)
        if direction == "fastapi-to-flask":
            header = fast.post("/cart").headers["set-cookie"]
            cookie = {"cookie": header.split(";", 1)[0]}
            assert flask_client.post("/cart", headers=cookie).json() == {"cart": ["from-asgi", "from-flask"]}
            assert fast.get("/cart", headers=cookie).json() == {"cart": ["from-asgi", "from-flask"]}
        else:
            header = flask_client.post("/cart").headers["set-cookie"]
            cookie = {"cookie": header.split(";", 1)[0]}
            assert fast.post("/cart", headers=cookie).json() == {"cart": ["from-flask", "from-asgi"]}
            assert flask_client.get("/cart", headers=cookie).json() == {"cart": ["from-flask", "from-asgi"]}


class Switchable(MemoryStore):
    """A memory store whose loads can be made to fail, as a store outage would."""

    down = False

    def execute(self, op: Any) -> Any:
        if self.down and isinstance(op, Load):
            raise StoreUnavailable("the store is down")
        return super().execute(op)


def _logged_in(app: Any) -> tuple[httpx.Client, str]:
    c = client(app)
    r = c.get("/login")
    cookie = r.headers["set-cookie"].split(";")[0]
    return c, cookie


def test_a_generator_app_that_meets_an_outage_gets_the_503() -> None:
    store = Switchable()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        s = session_of(environ)
        if environ["PATH_INFO"] == "/login":
            s.user_id = "alice"
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield f"user={s.get('u')}".encode()

    middleware = WSGISessionMiddleware(app, SessionConfig(), store=store)
    _, cookie = _logged_in(middleware)
    store.down = True
    # start_response ran before the failure, so ours comes with exc_info, as PEP 3333 asks: a
    # server that has sent no byte yet replaces the response (httpx's transport, told not to
    # re-raise app exceptions, does the same)
    transport = httpx.WSGITransport(app=middleware, raise_app_exceptions=False)
    with httpx.Client(transport=transport, base_url="https://shop.test") as c:
        r = c.get("/", headers={"cookie": cookie})
    assert r.status_code == 503 and r.headers["retry-after"] == "5" and r.text.startswith("Session store unavailable")


def test_flask_after_request_that_meets_an_outage_gets_the_503() -> None:
    store = Switchable()
    app = Flask(__name__)
    FlaskSessions(app, store=store)

    @app.get("/login")
    def login() -> str:
        session["u"] = 1
        return "ok"

    @app.get("/")
    def home() -> str:
        return "home"

    @app.after_request
    def stamp(response: Any) -> Any:
        response.headers["X-User"] = str(session.get("u"))
        return response

    c, cookie = _logged_in(app)
    store.down = True
    r = c.get("/", headers={"cookie": cookie})
    assert r.status_code == 503 and r.text.startswith("Session store unavailable")


def test_flask_excluded_paths_never_load_nor_lock() -> None:
    store = LoadCounting()
    loads = store.loads
    app = Flask(__name__)
    FlaskSessions(app, config=SessionConfig(locking=True, lock_timeout=0.2, exclude_paths=("/ping",)), store=store)

    @app.get("/login")
    def login() -> str:
        session["u"] = "x"
        return "ok"

    @app.get("/ping")
    def ping() -> str:
        return f"pong {session.get('u')}"

    @app.get("/")
    def home() -> str:
        return str(session.get("u"))

    c, cookie = _logged_in(app)
    assert c.get("/ping", headers={"cookie": cookie}).text == "pong None" and loads == []
    r = c.get("/", headers={"cookie": cookie})
    assert r.status_code == 200 and r.text == "x"  # no lock left behind by /ping
