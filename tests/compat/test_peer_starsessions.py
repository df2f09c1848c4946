"""starsessions' own tests (tests/test_middleware.py, test_session.py, test_expiring_session.py,
test_rolling_session.py, test_autoloading.py, backends/test_redis.py), ported to our ASGI door.

starsessions' middleware arguments map onto ``SessionConfig`` (``starsessions_like`` below):
``cookie_name``, ``cookie_path``, ``cookie_domain``, ``cookie_same_site`` -> ``cookie_samesite``,
``cookie_https_only`` -> ``cookie_secure``; ``lifetime`` > 0 is a persistent cookie
(``remember_default``) and a session that ends ``lifetime`` after its creation, or, with
``rolling=True``, after ``lifetime`` without a request (``idle_timeout``); ``lifetime=0`` is a
browser-session cookie. The store is our memory store on a fake clock (starsessions' tests use
its ``InMemoryStore``), and Redis for the Redis backend's tests.

starsessions' apps call ``await load_session(connection)`` first; ours loads before the app
runs (the autoloading behaviour), so the ported apps read ``scope["session"]`` directly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, Literal

import httpx
import pytest
import redis
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from session_mw import SessionConfig
from session_mw.asgi import SessionMiddleware, session_of
from session_mw.engine import Engine
from session_mw.errors import StoreUnavailable
from session_mw.stores import open_async_store
from session_mw.stores.base import UNBOUNDED, Create, Load, Meta, Op
from session_mw.stores.memory import MemoryStore
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import FakeClock
from session_mw.tokens import new_token

ASGI = Callable[[Any, Any, Any], Awaitable[None]]
COOKIE = "__Host-session"
BASE = "https://testserver"


class Setup:
    """A middleware built from starsessions' arguments, its memory store and its clock."""

    def __init__(self, app: ASGI, clock: FakeClock, digest_key: str | None = None, **starsessions: Any) -> None:
        self.clock = clock
        self.store = MemoryStore(clock)
        self.config = starsessions_like(digest_key=digest_key, **starsessions)
        self.engine = Engine(self.config, clock=clock)
        self.middleware = SessionMiddleware(
            app, self.config, store=AsyncFromSync(self.store, offload=False), engine=self.engine
        )

    def write(self, data: dict[str, Any]) -> str:
        """starsessions' ``store.write("session_id", ...)``: a session put in the store directly;
        returns the token that a browser would hold for it."""
        token = new_token(self.config.token_bytes)
        now = self.clock()
        meta = Meta(now, now, now + self.config.absolute_timeout, remember=self.config.remember_default, public_id="p1")
        encoded = {k: self.engine.serializer.dumps(v) for k, v in data.items()}
        self.store.execute(Create(self.engine.digest(token), meta, encoded, self.engine.lifetime))
        return token

    def stored(self, token: str) -> dict[str, Any] | None:
        record = self.store.execute(Load(self.engine.digest(token), UNBOUNDED))
        if record is None:
            return None
        return {k: self.engine.serializer.loads(v) for k, v in record.data.items()}

    def client(self, token: str | None = None, raw: str | None = None) -> TestClient:
        """A client holding ``token`` as a browser would after a Set-Cookie from the host (so that
        a later Set-Cookie replaces it), or sending the ``raw`` cookie value as is."""
        name = self.config.full_cookie_name
        client = TestClient(self.middleware, base_url=BASE, cookies={name: raw} if raw else None)
        if token:
            given = httpx.Response(
                200, headers={"set-cookie": f"{name}={token}; Path=/"}, request=httpx.Request("GET", BASE)
            )
            client.cookies.extract_cookies(given)
        return client


def starsessions_like(
    *,
    cookie_name: str = "session",
    cookie_same_site: Literal["lax", "strict", "none"] = "lax",
    cookie_https_only: bool = True,
    cookie_domain: str | None = None,
    cookie_path: str = "/",
    lifetime: float | timedelta = 0,
    rolling: bool = False,
    digest_key: str | None = None,
) -> SessionConfig:
    """starsessions' ``SessionMiddleware`` arguments as our settings (a timedelta is taken as is:
    our settings accept one, as starsessions' ``lifetime`` does)."""
    base = SessionConfig(
        store_url="memory://",
        cookie_name=cookie_name,
        cookie_samesite=cookie_same_site,
        cookie_secure=cookie_https_only,
        cookie_domain=cookie_domain,
        cookie_path=cookie_path,
        digest_key=digest_key,
    )
    if not lifetime:
        return base  # a browser-session cookie
    timeouts: dict[str, Any] = {"idle_timeout": lifetime, "absolute_timeout": lifetime}
    if rolling:  # lifetime without a request; the absolute timeout stays ours (at least the lifetime)
        seconds = lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime
        timeouts["absolute_timeout"] = max(seconds, base.absolute_timeout)
    return base.replace(remember_default=True, **timeouts)


def asgi(handler: ASGI) -> ASGI:
    """A bare ASGI app (as starsessions' tests write them) that also answers the lifespan protocol,
    which the middleware passes on when a TestClient is used as a context manager."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await handler(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@asgi
async def show(scope: Any, receive: Any, send: Any) -> None:
    await JSONResponse(HTTPConnection(scope, receive).session)(scope, receive, send)


@asgi
async def set_key(scope: Any, receive: Any, send: Any) -> None:
    HTTPConnection(scope, receive).session["key"] = "value"
    await Response("")(scope, receive, send)


@asgi
async def clear(scope: Any, receive: Any, send: Any) -> None:
    HTTPConnection(scope, receive).session.clear()
    await Response("")(scope, receive, send)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_loads_empty_session(clock: FakeClock) -> None:
    """starsessions: test_loads_empty_session"""
    with Setup(show, clock).client() as client:
        assert client.get("/").json() == {}


@pytest.mark.parametrize("value", ["session_id", new_token(32)])
def test_handles_not_existing_session(clock: FakeClock, value: str) -> None:
    """starsessions: test_handles_not_existing_session (its id, and a well-formed unknown token)"""
    with Setup(show, clock).client(raw=value) as client:
        assert client.get("/").json() == {}


def test_loads_existing_session(clock: FakeClock) -> None:
    """starsessions: test_loads_existing_session (and test_autoloading's test_always_loads_session:
    no ``load_session`` call is needed)"""
    setup = Setup(show, clock)
    token = setup.write({"key": "value"})
    with setup.client(token) as client:
        assert client.get("/").json() == {"key": "value"}


def test_send_cookie_if_session_created(clock: FakeClock) -> None:
    """starsessions: test_send_cookie_if_session_created"""
    with Setup(set_key, clock).client() as client:
        assert "session" in client.get("/").headers["set-cookie"]


def test_send_cookie_if_session_updated(clock: FakeClock) -> None:
    """starsessions: test_send_cookie_if_session_updated (as written there: the client sends no
    cookie, so the session is new). With the cookie of the stored session, the update is saved and,
    a difference by design, no cookie is sent: the token has not changed (starsessions re-sends it)."""
    setup = Setup(set_key, clock)
    token = setup.write({"key2": "value2"})
    with setup.client() as client:
        assert "session" in client.get("/").headers["set-cookie"]
    with setup.client(token) as client:
        assert "set-cookie" not in client.get("/").headers
    assert setup.stored(token) == {"key2": "value2", "key": "value"}


def test_send_cookie_if_session_destroyed(clock: FakeClock) -> None:
    """starsessions: test_send_cookie_if_session_destroyed and test_will_clear_storage_if_session_destroyed"""
    setup = Setup(clear, clock)
    token = setup.write({"key2": "value2"})
    with setup.client(token) as client:
        header = client.get("/").headers["set-cookie"]
    assert "session" in header and "01 Jan 1970 00:00:00 GMT" in header
    assert setup.stored(token) is None


def test_send_cookie_with_domain_if_session_destroyed_and_domain_set(clock: FakeClock) -> None:
    """starsessions: test_send_cookie_with_domain_if_session_destroyed_and_domain_set"""
    setup = Setup(clear, clock, cookie_domain="example.com")
    token = setup.write({"key2": "value2"})
    with setup.client(token) as client:
        header = client.get("/").headers["set-cookie"]
    assert "01 Jan 1970 00:00:00 GMT" in header and "domain=example.com" in header.lower()


def test_will_not_send_cookie_if_initially_empty_session_destroyed(clock: FakeClock) -> None:
    """starsessions: test_will_not_send_cookie_if_initially_empty_session_destroyed

    Without a cookie, and with the test's "session_id" (not shaped like our tokens, so not a
    cookie we set): nothing is sent, as there. A dead token of ours is different: a response that
    used the session clears it, so the browser stops sending it; starsessions leaves it.
    """
    with Setup(clear, clock).client() as client:
        assert "set-cookie" not in client.get("/").headers
    with Setup(clear, clock).client(raw="session_id") as client:
        assert "set-cookie" not in client.get("/").headers
    with Setup(clear, clock).client(raw=new_token(32)) as client:
        header = client.get("/").headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=;") and "Max-Age=0" in header


def _cookie_of(app: ASGI, clock: FakeClock, **starsessions: Any) -> str:
    with Setup(app, clock, **starsessions).client() as client:
        return str(client.get("/").headers["set-cookie"])


def test_max_age_argument_set_in_cookie(clock: FakeClock) -> None:
    """starsessions: test_max_age_argument_set_in_cookie"""
    assert "max-age=1" in _cookie_of(set_key, clock, lifetime=1).lower()


def test_same_site_argument_set_in_cookie(clock: FakeClock) -> None:
    """starsessions: test_same_site_argument_set_in_cookie (attribute names compared case-blind:
    starsessions writes ``samesite=none``, werkzeug ``SameSite=None``; RFC 6265 reads both)"""
    assert "samesite=none" in _cookie_of(set_key, clock, cookie_same_site="none").lower()


def test_path_argument_set_in_cookie(clock: FakeClock) -> None:
    """starsessions: test_path_argument_set_in_cookie"""
    assert "path=/admin" in _cookie_of(set_key, clock, cookie_path="/admin").lower()


def test_domain_argument_set_in_cookie(clock: FakeClock) -> None:
    """starsessions: test_domain_argument_set_in_cookie"""
    assert "domain=example.com" in _cookie_of(set_key, clock, cookie_domain="example.com").lower()


def test_set_secure_cookie(clock: FakeClock) -> None:
    """starsessions: test_set_secure_cookie (Secure is our default too)"""
    assert "secure" in _cookie_of(set_key, clock, cookie_https_only=True).lower()
    assert "secure" in _cookie_of(set_key, clock).lower()


def test_session_only_cookies(clock: FakeClock) -> None:
    """starsessions: test_session_only_cookies (lifetime=0: a browser-session cookie)"""
    assert "max-age" not in _cookie_of(set_key, clock, lifetime=0).lower()


def test_session_timedelta_lifetime() -> None:
    """starsessions: test_session_timedelta_lifetime (our settings take a timedelta too)"""
    config = starsessions_like(lifetime=timedelta(seconds=60))
    assert config.absolute_timeout == 60 and config.idle_timeout == 60


def test_no_cookie_clear_outside_cookie_path(clock: FakeClock) -> None:
    """starsessions: test_no_cookie_clear_outside_cookie_path"""
    setup = Setup(clear, clock, cookie_path="/admin")
    token = setup.write({"key": "value"})
    with setup.client(token) as client:
        assert "set-cookie" not in client.get("/").headers


def test_invalid_cookie_name_raises() -> None:
    """starsessions: test_invalid_cookie_name_raises (a ConfigError, which is a ValueError)"""
    for bad in ("bad name; inject=1", "bad\r\nname"):
        with pytest.raises(ValueError, match="cookie_name"):
            starsessions_like(cookie_name=bad)
    for good in ("session", "my-session_v2"):
        assert starsessions_like(cookie_name=good).cookie_name == good


def test_unsafe_session_id_is_ignored(clock: FakeClock) -> None:
    """starsessions: test_unsafe_session_id_is_ignored"""
    with Setup(show, clock).client(raw="abc\r\nSet-Cookie: evil=1") as client:
        response = client.get("/")
    assert response.json() == {} and "evil" not in str(response.headers)


class FailingStore:
    """A store whose loads raise ``error`` (its start-up check passes, as a server going down later)."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def execute(self, op: Op[Any]) -> Any:
        if isinstance(op, Load):
            raise self.error
        return None


def test_store_error_propagates() -> None:
    """starsessions: test_store_error_propagates

    An unexpected store error (starsessions' test: RuntimeError) is not swallowed. Difference by
    design for an outage (``StoreUnavailable``, what our stores raise when the server cannot be
    reached): a 503 with Retry-After, documented, rather than an exception.
    """
    config = SessionConfig(store_url="memory://", cookie_secure=False)
    broken = SessionMiddleware(show, config, store=FailingStore(RuntimeError("connection refused")))
    with TestClient(broken, cookies={"id": new_token(32)}) as client, pytest.raises(RuntimeError, match="refused"):
        client.get("/")
    down = SessionMiddleware(show, config, store=FailingStore(StoreUnavailable("connection refused")))
    with TestClient(down, cookies={"id": new_token(32)}) as client:
        response = client.get("/")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_tampered_ciphertext_yields_empty_session(clock: FakeClock) -> None:
    """starsessions: test_tampered_ciphertext_yields_empty_session and
    test_encryptor_round_trip_via_middleware. Our analogue of the encryption key is the digest
    key: the same key finds the session, another key finds nothing (an empty session, not a 500)."""
    writer = Setup(set_key, clock, digest_key="k" * 32, lifetime=60)
    with writer.client() as client:
        cookie = client.get("/").cookies.get(COOKIE)
    assert cookie is not None
    same = SessionMiddleware(show, writer.config, store=writer.middleware.store, engine=writer.engine)
    with TestClient(same, base_url=BASE, cookies={COOKIE: cookie}) as client:
        assert client.get("/").json() == {"key": "value"}
    other_config = writer.config.replace(digest_key="o" * 32)
    other = SessionMiddleware(
        show, other_config, store=writer.middleware.store, engine=Engine(other_config, clock=clock)
    )
    with TestClient(other, base_url=BASE, cookies={COOKIE: cookie}) as client:
        response = client.get("/")
    assert response.status_code == 200 and response.json() == {}


# -- tests/test_session.py --------------------------------------------------------------


@asgi
async def regenerate(scope: Any, receive: Any, send: Any) -> None:
    session_of(scope).regenerate()
    await JSONResponse(session_of(scope))(scope, receive, send)


def test_regenerate_id_removes_old_session_on_save(clock: FakeClock) -> None:
    """starsessions: test_regenerate_session_id and test_regenerate_id_removes_old_session_on_save"""
    setup = Setup(regenerate, clock)
    old = setup.write({"abc": "value"})
    with setup.client(old) as client:
        response = client.get("/")
    new = response.cookies.get(COOKIE)
    assert response.json() == {"abc": "value"}
    assert new and new != old
    assert setup.stored(old) is None and setup.stored(new) == {"abc": "value"}


@asgi
async def destroy(scope: Any, receive: Any, send: Any) -> None:
    session_of(scope).invalidate()
    await Response("")(scope, receive, send)


def test_destroy_without_session_id(clock: FakeClock) -> None:
    """starsessions: test_destroy_without_session_id (a session that was never stored)"""
    with Setup(destroy, clock).client() as client:
        response = client.get("/")
    assert response.status_code == 200 and "set-cookie" not in response.headers


# -- tests/test_expiring_session.py, tests/test_rolling_session.py ------------------------------


def _expires_at(response: Any, now: float) -> float:
    match = re.search(r"Max-Age=(\d+)", response.headers["set-cookie"])
    assert match is not None
    return now + int(match[1])


def test_expiring_session_must_not_extend_duration(clock: FakeClock) -> None:
    """starsessions: test_expiring_session_must_not_extend_duration (lifetime=10, rolling=False)

    starsessions re-sends the cookie on every response with the same expiry. Ours sends it when the
    token changes (here: a regeneration 2 s later), with the same expiry; and a session used 2 s
    and 8 s after its creation is still over at 10 s.
    """
    setup = Setup(regenerate, clock, lifetime=10, rolling=False)
    token = setup.write({"id": 42})
    client = setup.client(token)
    with client:
        clock.advance(0.5)
        first = client.get("/")
        first_expiry = _expires_at(first, clock())
        clock.advance(2)
        second = client.get("/")
        assert _expires_at(second, clock()) == pytest.approx(first_expiry, abs=1)
        clock.advance(5.5)
        assert client.get("/").json() == {"id": 42}
        clock.advance(2.5)
        assert client.get("/").json() == {}


def test_rolling_session_must_extend_duration(clock: FakeClock) -> None:
    """starsessions: test_rolling_session_must_extend_duration (lifetime=10, rolling=True)

    starsessions slides the cookie's expiry; ours slides the session's end on the server (the
    idle timeout) and the cookie lasts to the absolute deadline. A session used every 8 s lives
    on past 10 s, and ends 10 s after its last use.
    """
    setup = Setup(show, clock, lifetime=10, rolling=True)
    token = setup.write({"id": 42})
    with setup.client(token) as client:
        for _ in range(4):
            clock.advance(8)
            assert client.get("/").json() == {"id": 42}
        clock.advance(10.5)
        assert client.get("/").json() == {}


# -- tests/backends/test_redis.py, through the middleware -----------------------------------


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@asgi
async def write_or_clear(scope: Any, receive: Any, send: Any) -> None:
    session = HTTPConnection(scope, receive).session
    if scope["path"] == "/clear":
        session.clear()
    elif scope["path"] == "/write":
        session["data"] = "data"
    await JSONResponse(session)(scope, receive, send)


def test_redis_prefix_read_write_remove(redis_url: str, key_prefix: str, sync_redis: redis.Redis) -> None:
    """starsessions: backends/test_redis.py test_redis_prefix, test_redis_read_write,
    test_redis_remove, test_redis_empty_session: the session is under the prefix, read back,
    removed when cleared; an unknown session is empty."""
    config = SessionConfig(store_url=redis_url, key_prefix=f"{key_prefix}prefix_")
    app = SessionMiddleware(write_or_clear, config, store=open_async_store(config))
    with TestClient(app, base_url=BASE) as client:
        assert client.get("/").json() == {}
        assert client.get("/write").json() == {"data": "data"}
        assert sync_redis.keys(f"{key_prefix}prefix_*")
        assert client.get("/").json() == {"data": "data"}
        assert client.get("/clear").json() == {}
        assert not sync_redis.keys(f"{key_prefix}prefix_s:*")
        assert client.get("/").json() == {}
