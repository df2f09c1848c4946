"""µs per request of session implementations on Flask (and plain WSGI), called as WSGI apps (no server).

Run from the repository root::

    python -m benchmarks.bench_wsgi            # ~40 s on 2 cores
    python -m benchmarks.bench_wsgi --quick    # ~10 s
    python -m benchmarks.bench_wsgi --profile  # cProfile of ours on Flask, no-cookie and read paths

See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import itertools
import json
import pstats
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from flask import Flask, jsonify, session
from flask_session import Session as FlaskSessionExtension
from werkzeug.test import EnvironBuilder

from session_mw import SessionConfig
from session_mw.contrib.flask import FlaskSessions
from session_mw.wsgi import WSGISessionMiddleware, session_of

from ._harness import (
    Case,
    PrivateRedis,
    RedisCounters,
    RedisProbe,
    environment_info,
    format_table,
    paired_median,
    run_interleaved,
    sqlite_url,
    summarize,
    write_json,
)

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

SCENARIOS = ("no-cookie", "read", "write")
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
BASELINE = {name: (WSGI_BARE if name.startswith("wsgi-") else BARE) for name in CONTENDERS}
REDIS_CONTENDERS = ("flask-session+redis", "ours+redis")
PATHS = {"no-cookie": "/plain", "read": "/read", "write": "/write"}
RATIOS = (  # (label, numerator, denominator)
    ("ours+redis / flask-session+redis", "ours+redis", "flask-session+redis"),
    ("ours+redis / flask-cookie", "ours+redis", "flask-cookie"),
    ("ours+memory / flask-cookie", "ours+memory", "flask-cookie"),
    ("ours+sqlite / flask-cookie", "ours+sqlite", "flask-cookie"),
    ("ours+sqlite / ours+memory", "ours+sqlite", "ours+memory"),
    ("ours+sqlite / ours+redis", "ours+sqlite", "ours+redis"),
)
OUR_PREFIX = "session_mw_bench:"
FS_PREFIX = "flask_session_bench:"
WRITE_COMMANDS = frozenset(
    {"set", "setex", "psetex", "getex", "getdel", "del", "unlink", "expire", "pexpire", "expireat", "pexpireat"}
    | {"persist", "hset", "hmset", "hsetnx", "hdel", "sadd", "srem", "zadd", "zrem", "rename"}
)
RESULTS = Path(__file__).resolve().parent / "results" / "wsgi-latest.json"
CART = ["sku-1042", "sku-2077", "sku-3301"]
BASE_URL = "http://bench.example"
SECRET_KEY = "bench-" + "x" * 32

_counter = itertools.count(1)


# -- the Flask apps --------------------------------------------------------------------


def flask_app(name: str, *, sessions: bool = True) -> Flask:
    """``/plain`` never touches the session; ``/read``, ``/write``, ``/login``, ``/check`` do.

    With ``sessions=False`` (the bare baseline) every path is the session-free endpoint.
    """
    app = Flask(f"bench_{name.replace('+', '_').replace('-', '_')}")

    def plain() -> str:
        return "ok"

    if not sessions:
        for path in PATHS.values():
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

    for view in (plain, read, write, login, check):
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
    )
    if name == WSGI_BARE:
        return Contender(name, wsgi_bare)
    if name == "wsgi-ours+memory":
        middleware = WSGISessionMiddleware(wsgi_sessions, config)
        return Contender(name, middleware, closers=[middleware.store.close])
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
    elif name in ("ours+memory", "ours+sqlite", "ours+redis"):
        FlaskSessions(app, config=config)
        contender.closers.append(app.extensions["session_mw"].store.close)
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
    cookies = [c.split(";", 1)[0].strip() for c in reply.set_cookies()]
    cookies = [c for c in cookies if "=" in c and c.split("=", 1)[1] not in ("", '""', "''")]
    if reply.code != 200 or len(cookies) != 1:
        raise RuntimeError(f"{contender.name}: login gave status {reply.status} and cookies {reply.set_cookies()}")
    contender.cookie = cookies[0]


def verify(contender: Contender) -> None:
    """Each timed request must do what it claims; fail loudly before timing otherwise."""
    name = contender.name
    for scenario in SCENARIOS:
        cookie = None if scenario == "no-cookie" else contender.cookie
        reply = call(contender.app, environ_for(PATHS[scenario], cookie))
        if reply.code != 200 or reply.body != b"ok":
            raise RuntimeError(f"{name} {scenario}: status {reply.status}, body {reply.body!r}")
        if scenario == "no-cookie" and reply.set_cookies():
            raise RuntimeError(f"{name} no-cookie: unexpected Set-Cookie {reply.set_cookies()}")
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


def analyse(cases: Sequence[Case]) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    out: dict[str, Any] = {"scenarios": {}, "ratios": {}}
    for scenario in SCENARIOS:
        rows: dict[str, Any] = {}
        for contender in CONTENDERS:
            case = by_key[(scenario, contender)]
            base = by_key[(scenario, BASELINE[contender])].samples
            row: dict[str, Any] = summarize(case.samples).as_dict()
            row["cpu_median_us"] = round(summarize(case.cpu_samples).median, 3)
            row["batch"] = case.batch
            row["baseline"] = BASELINE[contender]
            row["overhead_us"] = round(paired_median(case.samples, base, lambda a, b: (a - b) / 1000), 3)
            rows[contender] = row
        out["scenarios"][scenario] = rows
        for label, num, den in RATIOS:
            a, b = by_key[(scenario, num)].samples, by_key[(scenario, den)].samples
            over_num, over_den = rows[num]["overhead_us"], rows[den]["overhead_us"]
            out["ratios"].setdefault(label, {})[scenario] = {
                "total": round(paired_median(a, b, lambda x, y: x / y), 3),
                "overhead": round(over_num / over_den, 3) if over_den > 0.05 else None,
            }
    return out


def count_redis(cases: Sequence[Case], probe: RedisProbe, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in cases:
        if case.contender not in REDIS_CONTENDERS:
            continue
        diff: RedisCounters = probe.measure(functools.partial(case.run, requests))
        out.setdefault(case.scenario, {})[case.contender] = {
            "requests": requests,
            "round_trips": round(diff.reads / requests, 3),
            "commands": round(diff.commands / requests, 3),
            "write_commands": round(sum(c for n, c in diff.per_command.items() if n in WRITE_COMMANDS) / requests, 3),
            "keyspace_changes": round(diff.dirty / requests, 3),
            "per_command": {name: round(calls / requests, 3) for name, calls in diff.per_command.items()},
        }
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    ratios, counts = results["ratios"], results.get("redis_per_request", {})
    out: list[tuple[str, str, bool | None]] = []
    for label, limit in (("ours+redis / flask-cookie", 1.0), ("ours+redis / flask-session+redis", 0.5)):
        ratio = ratios[label]["read"]
        over = ratio["overhead"]
        detail = f"{ratio['total']:.2f}x total" + (f", {over:.2f}x overhead" if over is not None else "")
        peer = label.split(" / ")[1]
        out.append((f"ours+redis read <= {limit:.1f}x {peer} (total)", detail, ratio["total"] <= limit))
    read = counts.get("read", {}).get("ours+redis")
    if read is None:
        out.append(("ours+redis read: 1 round trip, no data write", "not measured", None))
    else:
        trips, writes, changes = read["round_trips"], read["write_commands"], read["keyspace_changes"]
        out.append(
            (
                "ours+redis read: 1 round trip, no data write",
                f"{trips:.2f} round trips, {writes:.2f} write cmds, {changes:.2f} changes",
                trips <= 1.0 and writes == 0 and changes == 0,
            )
        )
    return out


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    rows = []
    for scenario in SCENARIOS:
        for i, contender in enumerate(CONTENDERS):
            r = results["scenarios"][scenario][contender]
            spread = (r["p75_us"] - r["p25_us"]) / 2 / r["median_us"] * 100 if r["median_us"] else 0.0
            overhead = "-" if contender in (BARE, WSGI_BARE) else f"{r['overhead_us']:+.2f}"
            rows.append(
                [
                    scenario if i == 0 else "",
                    contender,
                    f"{r['median_us']:.2f}",
                    f"{spread:.1f}",
                    overhead,
                    f"{r['cpu_median_us']:.2f}",
                    r["batch"],
                ]
            )
        rows.append([""] * 7)
    headers = ["scenario", "contender", "median us/req", "+-%", "overhead us", "cpu us/req", "batch"]
    lines.append(format_table(headers, rows[:-1], "llrrrrr"))
    lines.append("(overhead: vs bare Flask; wsgi-* rows vs wsgi-bare, the plain WSGI app without middleware)")
    lines.append("")
    ratio_rows = []
    for label, _num, _den in RATIOS:
        for kind in ("total", "overhead"):
            cells = []
            for scenario in SCENARIOS:
                value = results["ratios"][label][scenario][kind]
                cells.append("n/a" if value is None else f"{value:.2f}x")
            ratio_rows.append([f"{label} ({kind})", *cells])
    lines.append(format_table(["ratio", *SCENARIOS], ratio_rows))
    counts = results.get("redis_per_request")
    if counts:
        lines.append("")
        count_rows = []
        for scenario in SCENARIOS:
            for contender in REDIS_CONTENDERS:
                c = counts[scenario][contender]
                breakdown = " ".join(f"{k}={v:g}" for k, v in c["per_command"].items()) or "-"
                count_rows.append(
                    [
                        scenario,
                        contender,
                        f"{c['round_trips']:.2f}",
                        f"{c['commands']:.2f}",
                        f"{c['write_commands']:.2f}",
                        f"{c['keyspace_changes']:.2f}",
                        breakdown,
                    ]
                )
        lines.append(
            format_table(
                [
                    "scenario",
                    "contender",
                    "round trips",
                    "commands",
                    "write cmds",
                    "keyspace changes",
                    "per command (incl. inside Lua)",
                ],
                count_rows,
                "llrrrrl",
            )
        )
    lines.append("")
    lines.append(
        format_table(
            ["target", "measured", "status"],
            [
                [t["target"], t["measured"], "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")]
                for t in results["targets"]
            ],
            "lll",
        )
    )
    return "\n".join(lines)


# -- profiling -------------------------------------------------------------------------


def profile(contenders: Sequence[Contender], requests: int, top: int) -> None:
    """cProfile of ours on Flask, no-cookie and read paths: top functions by own time, overall and in session_mw."""
    ours = [c for c in contenders if c.name in ("ours+memory", "ours+redis")]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for case in make_cases(ours, ("no-cookie", "read")):
        case.run(500)  # warm
        profiler = cProfile.Profile()
        profiler.enable()
        case.run(requests)
        profiler.disable()
        for title, restriction in (("all code", ()), ("session_mw only", ("session_mw/",))):
            buffer = io.StringIO()
            stats = pstats.Stats(profiler, stream=buffer).sort_stats("tottime")
            stats.print_stats(*restriction, top)
            body = buffer.getvalue()
            body = body[body.find("   ncalls") :] if "   ncalls" in body else body
            body = re.sub(r"\S*/(site-packages|python3\.\d+)/", "", body).replace(root, "")
            print(f"\n== {case.contender} / {case.scenario}: {requests} requests, top {top} by own time, {title} ==")
            print(body.rstrip())


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_wsgi", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 10 s instead of about 40 s")
    parser.add_argument("--rounds", type=int, help="rounds of interleaved batches (default 40, quick 16)")
    parser.add_argument("--batch-ms", type=float, help="target duration of one batch (default 25, quick 12)")
    parser.add_argument("--count-requests", type=int, default=500, help="requests per Redis command count")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write results (default {RESULTS})")
    parser.add_argument("--no-json", action="store_true", help="don't write the JSON file")
    parser.add_argument("--profile", action="store_true", help="profile ours on Flask (no-cookie, read) instead")
    parser.add_argument("--profile-requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (16 if args.quick else 40)
    args.batch_ms = args.batch_ms or (12.0 if args.quick else 25.0)
    args.warmup_ms = 40.0 if args.quick else 200.0
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    return args


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with PrivateRedis() as server:
        progress(f"redis {server.version()} at {server.url} ({'private' if server.private else 'REDIS_URL'})")
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
            cases = make_cases(contenders)
            run_interleaved(
                cases,
                rounds=args.rounds,
                target_batch_ns=int(args.batch_ms * 1e6),
                warmup_ns=int(args.warmup_ms * 1e6),
                progress=progress,
            )
            results: dict[str, Any] = {
                "benchmark": "wsgi",
                "settings": {
                    "rounds": args.rounds,
                    "batch_ms": args.batch_ms,
                    "warmup_ms": args.warmup_ms,
                    "redis": "private redis-server" if server.private else "REDIS_URL",
                    "redis_version": server.version(),
                },
                "environment": environment_info(
                    [
                        "session_mw",
                        "flask",
                        "werkzeug",
                        "flask-session",
                        "msgspec",
                        "redis",
                        "hiredis",
                        "itsdangerous",
                        "orjson",
                    ],
                    source_dirs=["session_mw"],
                ),
            }
            results.update(analyse(cases))
            probe = RedisProbe(server.url)
            try:
                results["redis_per_request"] = count_redis(cases, probe, args.count_requests)
            finally:
                probe.close()
            results["targets"] = [{"target": t, "measured": m, "pass": ok} for t, m, ok in targets(results)]
            results["elapsed_s"] = round(time.perf_counter() - started, 1)
        finally:
            for contender in contenders:
                for close in contender.closers:
                    close()
            if not server.private:
                _forget_keys(server.url)
            gc.unfreeze()
    print(render(results))
    if not args.no_json:
        path = write_json(args.json, results)
        print(f"\nwrote {path} ({results['elapsed_s']} s)")
    return 0


def _forget_keys(url: str) -> None:
    """On a shared REDIS_URL, remove the sessions this run created."""
    client = redis.Redis.from_url(url)
    try:
        for prefix in (OUR_PREFIX, FS_PREFIX):
            keys = list(client.scan_iter(match=prefix + "*", count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
