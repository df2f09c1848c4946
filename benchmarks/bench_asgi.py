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
import cProfile
import functools
import io
import itertools
import pstats
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteCookieSessions
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope
from starsessions import SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionsMiddleware
from starsessions.stores.redis import RedisStore as StarRedisStore

from session_mw import SessionConfig
from session_mw import SessionMiddleware as OurSessionMiddleware

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

SCENARIOS = ("no-cookie", "read", "write")
BARE = "bare"
CONTENDERS = (BARE, "starlette-cookie", "starsessions+redis", "ours+memory", "ours+sqlite", "ours+redis")
REDIS_CONTENDERS = ("starsessions+redis", "ours+redis")
PATHS = {"no-cookie": "/plain", "read": "/read", "write": "/write"}
RATIOS = (  # (label, numerator, denominator)
    ("ours+redis / starsessions+redis", "ours+redis", "starsessions+redis"),
    ("ours+memory / starlette-cookie", "ours+memory", "starlette-cookie"),
    ("ours+sqlite / ours+memory", "ours+sqlite", "ours+memory"),
    ("ours+sqlite / ours+redis", "ours+sqlite", "ours+redis"),
)
OUR_PREFIX = "session_mw_bench:"
STAR_PREFIX = "starsessions_bench."
WRITE_COMMANDS = frozenset(
    {"set", "setex", "psetex", "getex", "getdel", "del", "unlink", "expire", "pexpire", "expireat", "pexpireat"}
    | {"persist", "hset", "hmset", "hsetnx", "hdel", "sadd", "srem", "zadd", "zrem", "rename"}
)
RESULTS = Path(__file__).resolve().parent / "results" / "asgi-latest.json"
CART = ["sku-1042", "sku-2077", "sku-3301"]


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
        return Contender(name, Starlette(routes=[Route(p, plain) for p in PATHS.values()]))
    app = Starlette(
        routes=[
            Route("/plain", plain),
            Route("/read", read),
            Route("/write", write),
            Route("/login", login),
            Route("/check", check),
        ]
    )
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
    elif name in ("ours+memory", "ours+sqlite", "ours+redis"):
        url = "memory://" if name == "ours+memory" else sqlite_url() if name == "ours+sqlite" else redis_url
        config = SessionConfig(store_url=url, cookie_secure=False, key_prefix=OUR_PREFIX)
        app.add_middleware(OurSessionMiddleware, config=config)

        async def close_store() -> None:
            middleware = _find_middleware(app, OurSessionMiddleware)
            if middleware is not None:
                await middleware.store.close()

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
    cookies = [c.split(";", 1)[0].strip() for c in reply.set_cookies()]
    cookies = [c for c in cookies if "=" in c and c.split("=", 1)[1] not in ("", '""', "''")]
    if reply.status != 200 or len(cookies) != 1:
        raise RuntimeError(f"{contender.name}: login gave status {reply.status} and cookies {reply.set_cookies()}")
    contender.cookie = cookies[0]


async def verify(contender: Contender) -> None:
    """Each timed request must do what it claims; fail loudly before timing otherwise."""
    name = contender.name
    for scenario in SCENARIOS:
        cookie = None if scenario == "no-cookie" else contender.cookie
        reply = await call(contender.app, scope_for(PATHS[scenario], cookie))
        if reply.status != 200 or reply.body != b"ok":
            raise RuntimeError(f"{name} {scenario}: status {reply.status}, body {reply.body!r}")
        if scenario == "no-cookie" and reply.set_cookies():
            raise RuntimeError(f"{name} no-cookie: unexpected Set-Cookie {reply.set_cookies()}")
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


def analyse(cases: Sequence[Case]) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    out: dict[str, Any] = {"scenarios": {}, "ratios": {}}
    for scenario in SCENARIOS:
        bare = by_key[(scenario, BARE)].samples
        rows: dict[str, Any] = {}
        for contender in CONTENDERS:
            samples = by_key[(scenario, contender)].samples
            row: dict[str, Any] = summarize(samples).as_dict()
            row["cpu_median_us"] = round(summarize(by_key[(scenario, contender)].cpu_samples).median, 3)
            row["batch"] = by_key[(scenario, contender)].batch
            row["overhead_us"] = round(paired_median(samples, bare, lambda a, b: (a - b) / 1000), 3)
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
    sc, ratios, counts = results["scenarios"], results["ratios"], results.get("redis_per_request", {})
    out: list[tuple[str, str, bool | None]] = []
    for contender in ("ours+memory", "ours+redis"):
        over = sc["no-cookie"][contender]["overhead_us"]
        out.append((f"{contender} no-cookie overhead <= 2 us", f"{over:+.2f} us", over <= 2.0))
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
    ratio = ratios["ours+redis / starsessions+redis"]["read"]
    over = ratio["overhead"]
    detail = f"{ratio['total']:.2f}x total" + (f", {over:.2f}x overhead" if over is not None else "")
    out.append(("ours+redis read <= 0.4x starsessions+redis (total)", detail, ratio["total"] <= 0.4))
    return out


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    rows = []
    for scenario in SCENARIOS:
        for i, contender in enumerate(CONTENDERS):
            r = results["scenarios"][scenario][contender]
            spread = (r["p75_us"] - r["p25_us"]) / 2 / r["median_us"] * 100 if r["median_us"] else 0.0
            overhead = "-" if contender == BARE else f"{r['overhead_us']:+.2f}"
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


def profile(loop: asyncio.AbstractEventLoop, contenders: Sequence[Contender], requests: int, top: int) -> None:
    """cProfile of ours on the no-cookie and read paths: top functions by own time, overall and in session_mw."""
    ours = [c for c in contenders if c.name.startswith("ours")]
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for case in make_cases(loop, ours, ("no-cookie", "read")):
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_asgi", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 10 s instead of about a minute")
    parser.add_argument("--rounds", type=int, help="rounds of interleaved batches (default 40, quick 12)")
    parser.add_argument("--batch-ms", type=float, help="target duration of one batch (default 25, quick 12)")
    parser.add_argument("--count-requests", type=int, default=500, help="requests per Redis command count")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write results (default {RESULTS})")
    parser.add_argument("--no-json", action="store_true", help="don't write the JSON file")
    parser.add_argument("--profile", action="store_true", help="profile ours (no-cookie, read) instead of timing")
    parser.add_argument("--profile-requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (12 if args.quick else 40)
    args.batch_ms = args.batch_ms or (12.0 if args.quick else 25.0)
    args.warmup_ms = 60.0 if args.quick else 250.0
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    return args


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with PrivateRedis() as server:
        progress(f"redis {server.version()} at {server.url} ({'private' if server.private else 'REDIS_URL'})")
        contenders = [build(name, server.url) for name in CONTENDERS]
        try:
            for contender in contenders:
                if contender.name != BARE:
                    loop.run_until_complete(log_in(contender))
                loop.run_until_complete(verify(contender))
            if args.profile:
                profile(loop, contenders, args.profile_requests, top=18)
                return 0
            cases = make_cases(loop, contenders)
            run_interleaved(
                cases,
                rounds=args.rounds,
                target_batch_ns=int(args.batch_ms * 1e6),
                warmup_ns=int(args.warmup_ms * 1e6),
                progress=progress,
            )
            results: dict[str, Any] = {
                "benchmark": "asgi",
                "settings": {
                    "rounds": args.rounds,
                    "batch_ms": args.batch_ms,
                    "warmup_ms": args.warmup_ms,
                    "redis": "private redis-server" if server.private else "REDIS_URL",
                    "redis_version": server.version(),
                },
                "environment": environment_info(
                    ["session_mw", "starlette", "starsessions", "redis", "hiredis", "itsdangerous", "orjson"],
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
                    loop.run_until_complete(close())
            if not server.private:
                _forget_keys(server.url)
            loop.close()
    print(render(results))
    if not args.no_json:
        path = write_json(args.json, results)
        print(f"\nwrote {path} ({results['elapsed_s']} s)")
    return 0


def _forget_keys(url: str) -> None:
    """On a shared REDIS_URL, remove the sessions this run created."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(url)
    try:
        for prefix in (OUR_PREFIX, STAR_PREFIX):
            keys = list(client.scan_iter(match=prefix + "*", count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
