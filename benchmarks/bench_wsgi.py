"""µs per request of session implementations on Flask (and plain WSGI), called as WSGI apps (no server).

Run from the repository root::

    python -m benchmarks.bench_wsgi            # ~40 s on 2 cores
    python -m benchmarks.bench_wsgi --quick    # ~10 s
    python -m benchmarks.bench_wsgi --profile  # cProfile of ours on Flask, no-cookie and read paths

See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from flask import Flask, current_app, jsonify, session
from flask_session import Session as FlaskSessionExtension
from werkzeug.test import EnvironBuilder

from session_mw import SessionConfig
from session_mw.contrib.flask import FlaskSessions
from session_mw.wsgi import WSGISessionMiddleware, session_of

from . import _harness as harness
from ._harness import BARE_PATHS, CART, OUR_PREFIX, PATHS, SCENARIOS, Benchmark, Case, PrivateRedis, Target, sqlite_url

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

BARE = "bare"
WSGI_BARE = "wsgi-bare"
CONTENDERS = (
    BARE,
    "flask-cookie",
    "flask-session+redis",
    "ours+memory",
    "ours+sqlite",
    "ours+redis",
    WSGI_BARE,
    "wsgi-ours+memory",
)
FS_PREFIX = "flask_session_bench:"
BENCH = Benchmark(
    name="wsgi",
    contenders=CONTENDERS,
    baseline={name: (WSGI_BARE if name.startswith("wsgi-") else BARE) for name in CONTENDERS},
    ratios=(  # (label, numerator, denominator)
        ("ours+redis / flask-session+redis", "ours+redis", "flask-session+redis"),
        ("ours+redis / flask-cookie", "ours+redis", "flask-cookie"),
        ("ours+memory / flask-cookie", "ours+memory", "flask-cookie"),
        ("ours+sqlite / flask-cookie", "ours+sqlite", "flask-cookie"),
        ("ours+sqlite / ours+memory", "ours+sqlite", "ours+memory"),
        ("ours+sqlite / ours+redis", "ours+sqlite", "ours+redis"),
    ),
    redis_contenders=("flask-session+redis", "ours+redis"),
    packages=(
        "session_mw",
        "flask",
        "werkzeug",
        "flask-session",
        "msgspec",
        "redis",
        "hiredis",
        "itsdangerous",
        "orjson",
    ),
    results=Path(__file__).resolve().parent / "results" / "wsgi-latest.json",
    record_baseline=True,
    overhead_note="(overhead: vs bare Flask; wsgi-* rows vs wsgi-bare, the plain WSGI app without middleware)",
)
BASE_URL = "http://bench.example"
SECRET_KEY = "bench-" + "x" * 32

_counter = itertools.count(1)
_users = itertools.count(1)


# -- the Flask apps --------------------------------------------------------------------


def flask_app(name: str, *, sessions: bool = True) -> Flask:
    """``/plain`` never touches the session; ``/read``, ``/write``, ``/login``, ``/check`` do.

    With ``sessions=False`` (the bare baseline) every path is the session-free endpoint.
    """
    app = Flask(f"bench_{name.replace('+', '_').replace('-', '_')}")

    def plain() -> str:
        return "ok"

    if not sessions:
        for path in BARE_PATHS:
            app.add_url_rule(path, path.strip("/"), plain)
        return app

    def read() -> str:
        return "ok" if session.get("cart") else "no session"

    def write() -> str:
        session["n"] = next(_counter)
        return "ok"

    def login() -> str:
        session["cart"] = CART
        session["n"] = 0
        return "ok"

    def check() -> Any:
        return jsonify(cart=session.get("cart"), n=session.get("n"))

    kind = "ours" if name.startswith("ours") else name.split("+")[0]

    def log_in() -> None:
        """A login: a new token for the session (where the implementation has one), and a user id."""
        user = f"user-{next(_users)}"
        if kind == "ours":
            session.login(user)  # type: ignore[attr-defined]  # our Session; rotates the token
        elif kind == "flask-session":
            session["user_id"] = user
            current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
        else:  # the signed cookie: nothing to rotate
            session["user_id"] = user

    def seed() -> str:  # an anonymous session with a cart: what signin logs in
        session["cart"] = CART
        return "ok"

    def seed_user() -> str:  # a logged-in session with a cart: what signout logs out
        session["cart"] = CART
        log_in()
        return "ok"

    def signin() -> str:
        log_in()
        return "ok"

    def signout() -> str:
        if kind == "ours":
            session.invalidate()  # type: ignore[attr-defined]
        else:
            session.clear()  # Flask-Session then deletes the stored session and expires the cookie
        return "ok"

    for view in (plain, read, write, login, check, seed, seed_user, signin, signout):
        app.add_url_rule(f"/{view.__name__}", view.__name__, view)
    return app


# -- a tiny plain WSGI app (for the middleware without Flask) -----------------------------

_OK_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "2")]


def wsgi_bare(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_OK_HEADERS))
    return [b"ok"]


def wsgi_sessions(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    body = b"ok"
    if path != "/plain":
        sess = session_of(environ)
        if path == "/read":
            body = b"ok" if sess.get("cart") else b"no session"
        elif path == "/write":
            sess["n"] = next(_counter)
        elif path == "/login":
            sess["cart"] = CART
            sess["n"] = 0
        elif path == "/check":
            body = json.dumps({"cart": sess.get("cart"), "n": sess.get("n")}).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# -- contenders ------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    app: WSGIApp
    cookie: str | None = None  # "name=value", captured from a real login response
    closers: list[Callable[[], object]] = field(default_factory=list)


def build(name: str, redis_url: str) -> Contender:
    url = "memory://" if name.endswith("memory") else sqlite_url() if name.endswith("sqlite") else redis_url
    config = SessionConfig(
        store_url=url,
        cookie_secure=False,  # the environ is plain http, like Flask's SESSION_COOKIE_SECURE=False default
        key_prefix=OUR_PREFIX,
        client_cache=name == "ours+redis-cached",  # client-side caching
    )
    if name == WSGI_BARE:
        return Contender(name, wsgi_bare)
    if name == "wsgi-ours+memory":
        middleware = WSGISessionMiddleware(wsgi_sessions, config)
        return Contender(name, middleware, closers=[middleware.driver.close])
    if name == BARE:  # Flask's SecureCookieSessionInterface is installed, but no SECRET_KEY and no session use
        return Contender(name, flask_app(name, sessions=False))
    app = flask_app(name)
    contender = Contender(name, app)
    if name == "flask-cookie":
        app.config["SECRET_KEY"] = SECRET_KEY
    elif name == "flask-session+redis":
        client = redis.Redis.from_url(redis_url)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=FS_PREFIX)
        FlaskSessionExtension(app)
        contender.closers.append(client.close)
    elif name in ("ours+memory", "ours+sqlite", "ours+redis", "ours+redis-cached"):
        FlaskSessions(app, config=config)
        contender.closers.append(app.extensions["session_mw"].driver.close)
    else:
        raise ValueError(f"unknown contender {name!r}")
    return contender


# -- calling a WSGI app directly -------------------------------------------------------


def environ_for(path: str, cookie: str | None) -> WSGIEnviron:
    headers = [("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"), ("Accept", "*/*")]
    if cookie is not None:
        headers.append(("Cookie", cookie))
    environ: WSGIEnviron = EnvironBuilder(path=path, base_url=BASE_URL, method="GET", headers=headers).get_environ()
    return environ


def _write(data: bytes) -> None:
    return None


@dataclass
class Reply:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status[:3])

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


def call(app: WSGIApp, environ: WSGIEnviron) -> Reply:
    """One request, keeping the response (for setup and checks, never timed)."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started.append((status, list(headers)))
        return _write

    body = app(dict(environ), start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, headers = started[-1]
    return Reply(status, headers, data)


def runner(app: WSGIApp, template: WSGIEnviron, scenario: str, contender: str) -> Callable[[int], int]:
    """``run(n)``: n requests, each with a fresh copy of the environ; returns elapsed ns.

    ``start_response`` records the last status; it is checked after the timed loop.
    """
    last: list[str] = [""]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        last[0] = status
        return _write

    def run(n: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(n):
            body = app(template.copy(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        elapsed = time.perf_counter_ns() - started
        if not last[0].startswith("200"):
            raise RuntimeError(f"{contender} {scenario}: status {last[0]!r} during timing")
        return elapsed

    return run


# -- setup and checks ------------------------------------------------------------------


def log_in(contender: Contender) -> None:
    """Create a session with one real request and keep its cookie for replay."""
    reply = call(contender.app, environ_for("/login", None))
    contender.cookie = harness.replay_cookie(contender.name, reply.status, reply.code == 200, reply.set_cookies())


def verify(contender: Contender) -> None:
    """Each timed request must do what it claims; fail loudly before timing otherwise."""
    name = contender.name
    for scenario in SCENARIOS:
        cookie = None if scenario == "no-cookie" else contender.cookie
        reply = call(contender.app, environ_for(PATHS[scenario], cookie))
        harness.check_reply(name, scenario, reply.status, reply.code == 200, reply.body, reply.set_cookies())
    if name in (BARE, WSGI_BARE, "flask-cookie"):
        return  # bare has no session; the signed cookie is replayed unchanged, so writes don't stick
    wrote = call(contender.app, environ_for("/write", contender.cookie))
    seen = call(contender.app, environ_for("/check", contender.cookie))
    state = json.loads(seen.body)
    if wrote.code != 200 or state.get("cart") != CART or state.get("n") in (0, None):
        raise RuntimeError(f"{name}: a write did not reach the replayed session: {state}")


def make_cases(contenders: Sequence[Contender], scenarios: Sequence[str] = SCENARIOS) -> list[Case]:
    cases = []
    for scenario in scenarios:
        for contender in contenders:
            cookie = None if scenario == "no-cookie" else contender.cookie  # bare: None, it never logged in
            template = environ_for(PATHS[scenario], cookie)
            cases.append(Case(scenario, contender.name, runner(contender.app, template, scenario, contender.name)))
    return cases


# -- results ---------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        harness.ratio_target(results, "ours+redis / flask-cookie", 1.0),
        harness.ratio_target(results, "ours+redis / flask-session+redis", 0.5),
        harness.round_trip_target(results),
    ]


# -- profiling -------------------------------------------------------------------------


def profile(contenders: Sequence[Contender], requests: int, top: int) -> None:
    """cProfile of ours on Flask, no-cookie and read paths: top functions by own time, overall and in session_mw."""
    ours = [c for c in contenders if c.name in ("ours+memory", "ours+redis")]
    harness.profile_cases(make_cases(ours, ("no-cookie", "read")), requests, top)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return harness.parse_args(
        BENCH,
        argv,
        description=__doc__.split("\n")[0],
        quick_help="about 10 s instead of about 40 s",
        profile_help="profile ours on Flask (no-cookie, read) instead",
        quick_rounds=16,
        warmup_ms=(40.0, 200.0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with PrivateRedis() as server:
        harness.announce(server)
        contenders: list[Contender] = []
        try:
            for name in CONTENDERS:
                contenders.append(build(name, server.url))
            for contender in contenders:
                if contender.name not in (BARE, WSGI_BARE):
                    log_in(contender)
                verify(contender)
            # Everything built so far (Flask, Werkzeug, redis-py, the apps) lives to the end: move it
            # out of the collector's reach, so the gc.collect() before each batch takes microseconds
            # instead of tens of milliseconds. Batches run with the collector off either way.
            gc.collect()
            gc.freeze()
            if args.profile:
                profile(contenders, args.profile_requests, top=18)
                return 0
            results = harness.measure(BENCH, make_cases(contenders), args, server, started, targets)
        finally:
            for contender in contenders:
                for close in contender.closers:
                    close()
            if not server.private:
                harness.forget_keys(server.url, (OUR_PREFIX, FS_PREFIX))
            gc.unfreeze()
    harness.report(BENCH, args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
