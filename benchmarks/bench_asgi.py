"""µs per request of session middlewares on Starlette, called as ASGI apps (no server).

Run from the repository root::

    python -m benchmarks.bench_asgi            # ~1 min on 2 cores
    python -m benchmarks.bench_asgi --quick    # ~10 s
    python -m benchmarks.bench_asgi --profile  # cProfile of ours on the no-cookie and read paths

See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteCookieSessions
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope
from starsessions import InMemoryStore as StarMemoryStore
from starsessions import SessionAutoloadMiddleware, regenerate_session_id
from starsessions import SessionMiddleware as StarSessionsMiddleware
from starsessions.stores.redis import RedisStore as StarRedisStore

from session_mw import Session, SessionConfig
from session_mw import SessionMiddleware as OurSessionMiddleware

from . import _harness as harness
from ._harness import BARE_PATHS, CART, OUR_PREFIX, PATHS, SCENARIOS, Benchmark, Case, PrivateRedis, Target, sqlite_url

BARE = "bare"
CONTENDERS = (BARE, "starlette-cookie", "starsessions+redis", "ours+memory", "ours+sqlite", "ours+redis")
STAR_PREFIX = "starsessions_bench."
BENCH = Benchmark(
    name="asgi",
    contenders=CONTENDERS,
    baseline={name: BARE for name in CONTENDERS},
    ratios=(  # (label, numerator, denominator)
        ("ours+redis / starsessions+redis", "ours+redis", "starsessions+redis"),
        ("ours+memory / starlette-cookie", "ours+memory", "starlette-cookie"),
        ("ours+sqlite / ours+memory", "ours+sqlite", "ours+memory"),
        ("ours+sqlite / ours+redis", "ours+sqlite", "ours+redis"),
    ),
    redis_contenders=("starsessions+redis", "ours+redis"),
    packages=("session_mw", "starlette", "starsessions", "redis", "hiredis", "itsdangerous", "orjson"),
    results=Path(__file__).resolve().parent / "results" / "asgi-latest.json",
)


# -- the apps --------------------------------------------------------------------------

_counter = itertools.count(1)


async def plain(request: Request) -> Response:
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    cart = request.session.get("cart")
    return PlainTextResponse("ok" if cart else "no session")


async def write(request: Request) -> Response:
    request.session["n"] = next(_counter)
    return PlainTextResponse("ok")


async def login(request: Request) -> Response:
    request.session["cart"] = CART
    request.session["n"] = 0
    return PlainTextResponse("ok")


_users = itertools.count(1)


def _log_in(request: Request) -> None:
    """A login: a new token for the session (where the implementation has one), and a user id."""
    user = f"user-{next(_users)}"
    kind = request.app.state.kind
    if kind == "ours":
        cast(Session, request.session).login(user)  # rotate: the old token dies, the user's index lists the new one
    elif kind == "starsessions":
        regenerate_session_id(request)  # a new id; starsessions leaves the old one in the store
        request.session["user_id"] = user
    else:  # the signed cookie: nothing to rotate
        request.session["user_id"] = user


async def seed(request: Request) -> Response:
    """An anonymous session with a cart: what a ``signin`` request logs in."""
    request.session["cart"] = CART
    return PlainTextResponse("ok")


async def seed_user(request: Request) -> Response:
    """A logged-in session with a cart: what a ``signout`` request logs out."""
    request.session["cart"] = CART
    _log_in(request)
    return PlainTextResponse("ok")


async def signin(request: Request) -> Response:
    _log_in(request)
    return PlainTextResponse("ok")


async def signout(request: Request) -> Response:
    if request.app.state.kind == "ours":
        cast(Session, request.session).invalidate()
    else:
        request.session.clear()  # both peers then delete the stored session and expire the cookie
    return PlainTextResponse("ok")


async def check(request: Request) -> Response:
    return JSONResponse({"cart": request.session.get("cart"), "n": request.session.get("n")})


@dataclass
class Contender:
    name: str
    app: Starlette
    cookie: str | None = None  # "name=value", captured from a real login response
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def build(name: str, redis_url: str) -> Contender:
    if name == BARE:  # no session middleware: every path is the session-free endpoint
        return Contender(name, Starlette(routes=[Route(p, plain) for p in BARE_PATHS]))
    app = Starlette(
        routes=[
            Route("/plain", plain),
            Route("/read", read),
            Route("/write", write),
            Route("/login", login),
            Route("/check", check),
            Route("/seed", seed),
            Route("/seed_user", seed_user),
            Route("/signin", signin),
            Route("/signout", signout),
        ]
    )
    app.state.kind = "ours" if name.startswith("ours") else name.split("+")[0]
    contender = Contender(name, app)
    if name == "starlette-cookie":
        app.add_middleware(StarletteCookieSessions, secret_key="bench-" + "x" * 32, https_only=False)
    elif name == "starsessions+redis":
        client = redis.asyncio.Redis.from_url(redis_url)
        app.add_middleware(SessionAutoloadMiddleware)  # inner: loads the session before the endpoint
        app.add_middleware(
            StarSessionsMiddleware,
            store=StarRedisStore(connection=client, prefix=STAR_PREFIX),
            cookie_https_only=False,
        )
        contender.closers.append(client.aclose)
    elif name == "starsessions+memory":
        app.add_middleware(SessionAutoloadMiddleware)
        app.add_middleware(StarSessionsMiddleware, store=StarMemoryStore(), cookie_https_only=False)
    elif name in ("ours+memory", "ours+sqlite", "ours+redis", "ours+redis-cached"):
        url = "memory://" if name == "ours+memory" else sqlite_url() if name == "ours+sqlite" else redis_url
        cached = name == "ours+redis-cached"  # client-side caching (client_cache)
        config = SessionConfig(store_url=url, cookie_secure=False, key_prefix=OUR_PREFIX, client_cache=cached)
        app.add_middleware(OurSessionMiddleware, config=config)

        async def close_store() -> None:
            middleware = _find_middleware(app, OurSessionMiddleware)
            if middleware is not None:
                await middleware.driver.close()

        contender.closers.append(close_store)
    else:
        raise ValueError(f"unknown contender {name!r}")
    return contender


def _find_middleware(app: Starlette, cls: type[OurSessionMiddleware]) -> OurSessionMiddleware | None:
    node: Any = app.middleware_stack
    while node is not None:
        if isinstance(node, cls):
            return node
        node = getattr(node, "app", None)
    return None


# -- calling an ASGI app directly ------------------------------------------------------

_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> Message:
    return _REQUEST


async def _discard(message: Message) -> None:
    return None


def scope_for(path: str, cookie: str | None) -> Scope:
    headers = [
        (b"host", b"bench.example"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        (b"accept", b"*/*"),
    ]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("bench.example", 80),
    }


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def set_cookies(self) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == b"set-cookie"]


async def call(app: ASGIApp, scope: Scope) -> Reply:
    """One request, keeping the response (for setup and checks, never timed)."""
    messages: list[Message] = []

    async def keep(message: Message) -> None:
        messages.append(message)

    await app(scope, _receive, keep)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Reply(start["status"], list(start.get("headers", [])), body)


def runner(loop: asyncio.AbstractEventLoop, app: ASGIApp, template: Scope) -> Callable[[int], int]:
    """``run(n)``: n requests, each with a fresh copy of the scope; returns elapsed ns."""
    receive, send = _receive, _discard

    async def batch(n: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(n):
            await app(dict(template), receive, send)
        return time.perf_counter_ns() - started

    def run(n: int) -> int:
        return loop.run_until_complete(batch(n))

    return run


# -- setup and checks ------------------------------------------------------------------


async def log_in(contender: Contender) -> None:
    """Create a session with one real request and keep its cookie for replay."""
    reply = await call(contender.app, scope_for("/login", None))
    contender.cookie = harness.replay_cookie(contender.name, reply.status, reply.status == 200, reply.set_cookies())


async def verify(contender: Contender) -> None:
    """Each timed request must do what it claims; fail loudly before timing otherwise."""
    name = contender.name
    for scenario in SCENARIOS:
        cookie = None if scenario == "no-cookie" else contender.cookie
        reply = await call(contender.app, scope_for(PATHS[scenario], cookie))
        harness.check_reply(name, scenario, reply.status, reply.status == 200, reply.body, reply.set_cookies())
    if name in (BARE, "starlette-cookie"):
        return  # bare has no session; the signed cookie is replayed unchanged, so writes don't stick
    wrote = await call(contender.app, scope_for("/write", contender.cookie))
    seen = await call(contender.app, scope_for("/check", contender.cookie))
    state = seen.body.decode()
    if wrote.status != 200 or '"cart":["sku-1042"' not in state or '"n":0' in state:
        raise RuntimeError(f"{name}: a write did not reach the replayed session: {state}")


def make_cases(
    loop: asyncio.AbstractEventLoop, contenders: Sequence[Contender], scenarios: Sequence[str] = SCENARIOS
) -> list[Case]:
    cases = []
    for scenario in scenarios:
        for contender in contenders:
            cookie = None if scenario == "no-cookie" else contender.cookie
            template = scope_for(PATHS[scenario], cookie)
            cases.append(Case(scenario, contender.name, runner(loop, contender.app, template)))
    return cases


# -- results ---------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    for contender in ("ours+memory", "ours+redis"):
        over = results["scenarios"]["no-cookie"][contender]["overhead_us"]
        out.append((f"{contender} no-cookie overhead <= 2 us", f"{over:+.2f} us", over <= 2.0))
    out.append(harness.round_trip_target(results))
    out.append(harness.ratio_target(results, "ours+redis / starsessions+redis", 0.4))
    return out


# -- profiling -------------------------------------------------------------------------


def profile(loop: asyncio.AbstractEventLoop, contenders: Sequence[Contender], requests: int, top: int) -> None:
    """cProfile of ours on the no-cookie and read paths: top functions by own time, overall and in session_mw."""
    ours = [c for c in contenders if c.name.startswith("ours")]
    harness.profile_cases(make_cases(loop, ours, ("no-cookie", "read")), requests, top)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return harness.parse_args(
        BENCH,
        argv,
        description=__doc__.split("\n")[0],
        quick_help="about 10 s instead of about a minute",
        profile_help="profile ours (no-cookie, read) instead of timing",
        quick_rounds=12,
        warmup_ms=(60.0, 250.0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with PrivateRedis() as server:
        harness.announce(server)
        contenders = [build(name, server.url) for name in CONTENDERS]
        try:
            for contender in contenders:
                if contender.name != BARE:
                    loop.run_until_complete(log_in(contender))
                loop.run_until_complete(verify(contender))
            if args.profile:
                profile(loop, contenders, args.profile_requests, top=18)
                return 0
            results = harness.measure(BENCH, make_cases(loop, contenders), args, server, started, targets)
        finally:
            for contender in contenders:
                for close in contender.closers:
                    loop.run_until_complete(close())
            if not server.private:
                harness.forget_keys(server.url, (OUR_PREFIX, STAR_PREFIX))
            loop.close()
    harness.report(BENCH, args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
