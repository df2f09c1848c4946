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
    assert r.text == "abc" and r.headers["set-cookie"].startswith("__Host-session=")
    assert bodies[0].closed


def test_late_start_response_inside_a_generator_still_saves() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        session_of(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late"

    r = client(WSGISessionMiddleware(app, SessionConfig())).get("/")
    assert r.text == "late" and r.headers["set-cookie"].startswith("__Host-session=")


def test_lazy_loading_reads_the_store_only_when_used() -> None:
    loads: list[str] = []

    class CountingMemory(MemoryStore):
        def execute(self, op: Any) -> Any:
            if isinstance(op, Load):
                loads.append(op.key)
            return super().execute(op)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/write":
            session_of(environ)["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    c = client(WSGISessionMiddleware(app, SessionConfig(), store=CountingMemory()))
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
