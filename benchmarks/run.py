"""What users pay: every in-process path of ours and the peers', the raw Redis round trip, and
the HTTP comparison, in one pinned run.

Run from the repository root::

    python -m benchmarks.run              # about 4 minutes on 2 vCPUs
    python -m benchmarks.run --quick      # under a minute, noisier
    python -m benchmarks.run --no-http    # the in-process paths only
    python -m benchmarks.run --profile    # pyinstrument profiles of ours to benchmarks/results/profiles/

The process pins itself to CPU 0 before it starts its private redis-server (which inherits the
pinning), so a Redis round trip costs what one costs on one CPU, never a cross-CPU wake-up. The
HTTP servers run on CPU 0 too; the load generator on CPU 1. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from . import _harness as harness
from . import _machine as machine
from . import bench_asgi, bench_wsgi
from ._harness import OUR_PREFIX, Case, PrivateRedis

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("no-cookie", "untouched", "read", "write", "login", "logout")
PATH = {
    "no-cookie": "/plain",
    "untouched": "/plain",  # the cookie is sent, the endpoint never touches the session
    "read": "/read",
    "write": "/write",
    "login": "/signin",  # an anonymous session with a cart logs in: the token rotates
    "logout": "/signout",  # a logged-in session with a cart logs out: the session is deleted
}
#: The request that makes a fresh session for each timed login/logout request (untimed).
SEED = {"login": "/seed", "logout": "/seed_user"}
COOKIE_FREE = ("no-cookie",)

ASGI = (
    "bare",
    "starlette-cookie",
    "starsessions+memory",
    "starsessions+redis",
    "ours+memory",
    "ours+sqlite",
    "ours+redis",
    "ours+redis-cached",
)
WSGI = ("bare", "flask-cookie", "flask-session+redis", "ours+memory", "ours+sqlite", "ours+redis", "ours+redis-cached")
#: Who runs login and logout (the signed cookies have no token to rotate or session to delete).
SEEDED = {
    "starlette": ("bare", "starsessions+redis", "ours+memory", "ours+sqlite", "ours+redis", "ours+redis-cached"),
    "flask": ("bare", "flask-session+redis", "ours+memory", "ours+sqlite", "ours+redis", "ours+redis-cached"),
}
FLOOR = "floor"
FLOOR_SYNC = "redis-py GET (sync)"
FLOOR_ASYNC = "redis-py GET (asyncio)"

#: The headline table: (framework, scenario, ours, peer).
HEADLINE: tuple[tuple[str, str, str, str], ...] = (
    ("starlette", "untouched", "ours+redis", "starsessions+redis"),
    ("starlette", "read", "ours+redis", "starsessions+redis"),
    ("starlette", "write", "ours+redis", "starsessions+redis"),
    ("starlette", "login", "ours+redis", "starsessions+redis"),
    ("starlette", "logout", "ours+redis", "starsessions+redis"),
    ("starlette", "untouched", "ours+redis-cached", "starsessions+redis"),
    ("starlette", "read", "ours+redis-cached", "starsessions+redis"),
    ("starlette", "read", "ours+redis-cached", "ours+memory"),
    ("starlette", "write", "ours+redis-cached", "starsessions+redis"),
    ("starlette", "read", "ours+memory", "starsessions+memory"),
    ("starlette", "write", "ours+memory", "starsessions+memory"),
    ("starlette", "read", "ours+memory", "starlette-cookie"),
    ("starlette", "read", "ours+sqlite", "ours+memory"),
    ("starlette", "write", "ours+sqlite", "ours+memory"),
    ("flask", "untouched", "ours+redis", "flask-session+redis"),
    ("flask", "read", "ours+redis", "flask-session+redis"),
    ("flask", "read", "ours+redis", "flask-cookie"),
    ("flask", "write", "ours+redis", "flask-session+redis"),
    ("flask", "login", "ours+redis", "flask-session+redis"),
    ("flask", "logout", "ours+redis", "flask-session+redis"),
    ("flask", "read", "ours+redis-cached", "flask-session+redis"),
    ("flask", "read", "ours+redis-cached", "flask-cookie"),
    ("flask", "read", "ours+redis-cached", "ours+memory"),
    ("flask", "write", "ours+redis-cached", "flask-session+redis"),
    ("flask", "read", "ours+memory", "flask-cookie"),
    ("flask", "write", "ours+sqlite", "ours+memory"),
)


# -- the two doors: calling a Starlette or a Flask app in process ------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    set_cookies: list[str]


class Seeded:
    """``run(n)`` for login/logout: ``prepare(n)`` makes n fresh sessions (untimed), ``fire`` times
    one request on each. Counting Redis work runs the two apart, so seeding is never counted."""

    def __init__(self, prepare: Callable[[int], list[Any]], fire: Callable[[list[Any]], int]) -> None:
        self.prepare = prepare
        self.fire = fire

    def __call__(self, n: int) -> int:
        return self.fire(self.prepare(n))


class StarletteDoor:
    name = "starlette"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, app: Any, path: str, cookie: str | None) -> Reply:
        r = self.loop.run_until_complete(bench_asgi.call(app, bench_asgi.scope_for(path, cookie)))
        return Reply(r.status, r.body, r.set_cookies())

    def runner(self, app: Any, path: str, cookie: str | None) -> Callable[[int], int]:
        return bench_asgi.runner(self.loop, app, bench_asgi.scope_for(path, cookie))

    def seeded(self, app: Any, seed: str, path: str) -> Seeded:
        receive, send = bench_asgi._receive, bench_asgi._discard

        def prepare(n: int) -> list[Any]:
            return [bench_asgi.scope_for(path, cookie_of(self.call(app, seed, None))) for _ in range(n)]

        async def batch(scopes: list[Any]) -> int:
            started = time.perf_counter_ns()
            for scope in scopes:
                await app(scope, receive, send)
            return time.perf_counter_ns() - started

        return Seeded(prepare, lambda scopes: self.loop.run_until_complete(batch(scopes)))


class FlaskDoor:
    name = "flask"

    def call(self, app: Any, path: str, cookie: str | None) -> Reply:
        r = bench_wsgi.call(app, bench_wsgi.environ_for(path, cookie))
        return Reply(r.code, r.body, r.set_cookies())

    def runner(self, app: Any, path: str, cookie: str | None) -> Callable[[int], int]:
        return bench_wsgi.runner(app, bench_wsgi.environ_for(path, cookie), path, "flask")

    def seeded(self, app: Any, seed: str, path: str) -> Seeded:
        def prepare(n: int) -> list[Any]:
            return [bench_wsgi.environ_for(path, cookie_of(self.call(app, seed, None))) for _ in range(n)]

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
            return bench_wsgi._write

        def fire(environs: list[Any]) -> int:
            started = time.perf_counter_ns()
            for environ in environs:
                body = app(environ, start_response)
                for _chunk in body:
                    pass
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            return time.perf_counter_ns() - started

        return Seeded(prepare, fire)


Door = StarletteDoor | FlaskDoor


def cookie_of(reply: Reply) -> str:
    return harness.replay_cookie("seed", reply.status, reply.status == 200, reply.set_cookies)


def _expires(set_cookie: str) -> bool:
    low = set_cookie.lower()
    value = set_cookie.split(";", 1)[0].split("=", 1)[-1].strip()
    return value in ("", '""', "''") or "max-age=0" in low or "1970" in low


# -- setup and checks ----------------------------------------------------------------------------


@dataclass
class Built:
    door: Door
    name: str
    app: Any
    cookie: str | None
    closers: list[Callable[[], Any]]


def check_paths(built: Built) -> None:
    """Every timed request must do what it claims; fail loudly before timing otherwise."""
    door, name, app = built.door, f"{built.door.name} {built.name}", built.app
    for scenario in ("no-cookie", "untouched", "read", "write"):
        cookie = None if scenario in COOKIE_FREE or built.name == "bare" else built.cookie
        reply = door.call(app, PATH[scenario], cookie)
        if reply.status != 200 or reply.body != b"ok":
            raise RuntimeError(f"{name} {scenario}: status {reply.status}, body {reply.body!r}")
        quiet = scenario == "no-cookie" or (scenario == "untouched" and built.name.startswith("ours"))
        if quiet and reply.set_cookies:
            raise RuntimeError(f"{name} {scenario}: unexpected Set-Cookie {reply.set_cookies}")
    if built.name == "bare" or built.name not in SEEDED[door.name]:
        return
    cookie = cookie_of(door.call(app, SEED["login"], None))
    reply = door.call(app, PATH["login"], cookie)
    new = [c.split(";", 1)[0] for c in reply.set_cookies if not _expires(c)]
    if reply.status != 200 or not new or new[-1] == cookie:
        raise RuntimeError(f"{name} login: status {reply.status}, cookies {reply.set_cookies} (had {cookie})")
    cookie = cookie_of(door.call(app, SEED["logout"], None))
    reply = door.call(app, PATH["logout"], cookie)
    if reply.status != 200 or not any(_expires(c) for c in reply.set_cookies):
        raise RuntimeError(f"{name} logout: status {reply.status}, cookies {reply.set_cookies}")
    after = door.call(app, "/read", cookie)
    if after.body != b"no session":
        raise RuntimeError(f"{name} logout: the session still reads after it ({after.body!r})")


def _run_on(loop: asyncio.AbstractEventLoop, close: Callable[[], Any]) -> None:
    loop.run_until_complete(close())


def build_all(door: Door, url: str) -> list[Built]:
    out = []
    if isinstance(door, StarletteDoor):
        for name in ASGI:
            c = bench_asgi.build(name, url)
            closers: list[Callable[[], Any]] = [functools.partial(_run_on, door.loop, close) for close in c.closers]
            out.append(Built(door, name, c.app, None, closers))
    else:
        for name in WSGI:
            w = bench_wsgi.build(name, url)
            out.append(Built(door, name, w.app, None, list(w.closers)))
    for built in out:
        if built.name != "bare":
            built.cookie = cookie_of(door.call(built.app, "/login", None))
        check_paths(built)
    return out


def label(framework: str, contender: str) -> str:
    return f"{framework}:{contender}"


def make_cases(builds: Sequence[Built], scenarios: Sequence[str] = SCENARIOS) -> list[Case]:
    cases = []
    for built in builds:
        door = built.door
        for scenario in scenarios:
            key = label(door.name, built.name)
            if scenario in SEED:
                if built.name not in SEEDED[door.name]:
                    continue
                if built.name != "bare":
                    cases.append(Case(scenario, key, door.seeded(built.app, SEED[scenario], PATH[scenario])))
                    continue
            cookie = None if scenario in COOKIE_FREE or built.name == "bare" else built.cookie
            cases.append(Case(scenario, key, door.runner(built.app, PATH[scenario], cookie)))
    return cases


def floor_cases(url: str, loop: asyncio.AbstractEventLoop) -> tuple[list[Case], list[Callable[[], Any]]]:
    """The raw redis-py round trip: a GET of a 64-byte value, sync and on the benchmark's loop."""
    sync = redis.Redis.from_url(url)
    sync.set(OUR_PREFIX + "floor", b"x" * 64)
    aio = redis.asyncio.Redis.from_url(url)
    key = OUR_PREFIX + "floor"

    def run_sync(n: int) -> int:
        get = sync.get
        started = time.perf_counter_ns()
        for _ in range(n):
            get(key)
        return time.perf_counter_ns() - started

    async def batch(n: int) -> int:
        get = aio.get
        started = time.perf_counter_ns()
        for _ in range(n):
            await get(key)
        return time.perf_counter_ns() - started

    def run_async(n: int) -> int:
        return loop.run_until_complete(batch(n))

    cases = [Case(FLOOR, FLOOR_SYNC, run_sync), Case(FLOOR, FLOOR_ASYNC, run_async)]
    return cases, [sync.close, functools.partial(_run_on, loop, aio.aclose)]


# -- analysis ------------------------------------------------------------------------------------


def count_round_trips(cases: Sequence[Case], url: str, requests: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Redis work per request of each Redis case, from the server's counters (seeding not counted)."""
    probe = harness.RedisProbe(url)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for case in cases:
            if not ("+redis" in case.contender or case.scenario == FLOOR):
                continue
            run = case.run
            if isinstance(run, Seeded):
                prepared = run.prepare(requests)
                diff = probe.measure(functools.partial(run.fire, prepared))
            else:
                diff = probe.measure(functools.partial(run, requests))
            writes = sum(c for n, c in diff.per_command.items() if n in harness.WRITE_COMMANDS)
            out[case.key] = {
                "round_trips": round(diff.reads / requests, 2),
                "commands": round(diff.commands / requests, 2),
                "write_commands": round(writes / requests, 2),
                "per_command": {k: round(v / requests, 2) for k, v in diff.per_command.items()},
            }
    finally:
        probe.close()
    return out


def analyse(cases: Sequence[Case], counts: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    floors = {"flask": by_key[(FLOOR, FLOOR_SYNC)].samples, "starlette": by_key[(FLOOR, FLOOR_ASYNC)].samples}
    rows: dict[str, dict[str, Any]] = {}
    for case in cases:
        if case.scenario == FLOOR:
            continue
        framework = case.contender.split(":", 1)[0]
        bare = by_key[(case.scenario, label(framework, "bare"))].samples
        floor = floors[framework]
        trips = counts.get(case.key, {}).get("round_trips", 0.0)
        trips = round(trips)  # whole round trips: the counters are exact but for stray probe reads
        row: dict[str, Any] = harness.summarize(case.samples).as_dict()
        row["cpu_median_us"] = round(harness.summarize(case.cpu_samples).median, 3)
        row["batch"] = case.batch
        row["overhead_us"] = round(harness.paired_median(case.samples, bare, lambda a, b: (a - b) / 1000), 2)
        row["round_trips"] = trips
        beyond = [(s - b - trips * f) / 1000 for s, b, f in zip(case.samples, bare, floor, strict=True)]
        row["beyond_floor_us"] = round(statistics.median(beyond), 2)
        if case.key in counts:
            row["redis"] = counts[case.key]
        rows.setdefault(case.scenario, {})[case.contender] = row
    floor_rows = {c.contender: harness.summarize(c.samples).as_dict() for c in cases if c.scenario == FLOOR}
    headline = []
    for framework, scenario, ours, peer in HEADLINE:
        a, b = by_key[(scenario, label(framework, ours))], by_key[(scenario, label(framework, peer))]
        ra, rb = rows[scenario][a.contender], rows[scenario][b.contender]
        headline.append(
            {
                "framework": framework,
                "scenario": scenario,
                "ours": ours,
                "peer": peer,
                "ours_us": ra["median_us"],
                "peer_us": rb["median_us"],
                "ratio": round(harness.paired_median(a.samples, b.samples, lambda x, y: x / y), 3),
                "ours_round_trips": ra["round_trips"],
                "peer_round_trips": rb["round_trips"],
                "ours_beyond_floor_us": ra["beyond_floor_us"],
                "peer_beyond_floor_us": rb["beyond_floor_us"],
            }
        )
    return {"floor": floor_rows, "paths": rows, "headline": headline}


def render(results: dict[str, Any]) -> str:
    lines = [machine.describe(results["machine"]), ""]
    floor = results["floor"]
    lines.append(
        "floor (one Redis round trip through redis-py, GET of 64 bytes): "
        + "; ".join(f"{name} {row['median_us']:.1f} us" for name, row in floor.items())
    )
    lines.append("")
    rows = []
    for h in results["headline"]:
        rows.append(
            [
                h["framework"],
                h["scenario"],
                f"{h['ours']} vs {h['peer']}",
                f"{h['ours_us']:.1f}",
                f"{h['peer_us']:.1f}",
                f"{h['ratio']:.2f}x",
                f"{h['ours_round_trips']}/{h['peer_round_trips']}",
                f"{h['ours_beyond_floor_us']:+.1f}",
                f"{h['peer_beyond_floor_us']:+.1f}",
            ]
        )
    headers = ["framework", "path", "ours vs peer", "ours us", "peer us", "ratio", "RTs", "ours >floor", "peer >floor"]
    lines.append(harness.format_table(headers, rows, "lllrrrrrr"))
    lines.append(
        "(ratio: median over rounds of ours/peer µs per request, in-process; RTs: Redis round trips per request, "
        "ours/peer; >floor: µs beyond the bare framework and the RTs' raw redis-py round trips)"
    )
    lines.append("")
    all_rows = []
    for scenario, contenders in results["paths"].items():
        for i, (contender, r) in enumerate(contenders.items()):
            spread = (r["p75_us"] - r["p25_us"]) / 2 / r["median_us"] * 100 if r["median_us"] else 0.0
            all_rows.append(
                [
                    scenario if i == 0 else "",
                    contender,
                    f"{r['median_us']:.1f}",
                    f"{spread:.0f}",
                    f"{r['overhead_us']:+.1f}",
                    r["round_trips"],
                    f"{r['beyond_floor_us']:+.1f}",
                    r["batch"],
                ]
            )
    headers = ["path", "contender", "median us", "+-%", "over bare", "RTs", ">floor", "batch"]
    lines.append(harness.format_table(headers, all_rows, "llrrrrrr"))
    http = results.get("http")
    if http:
        from . import bench_http

        lines.append("")
        lines.append(bench_http.render(http))
    return "\n".join(lines)


# -- profiles ------------------------------------------------------------------------------------


def profile(cases: Sequence[Case], folder: Path, seconds: float, html: bool) -> dict[str, Any]:
    """pyinstrument of ours+redis on untouched, read, write, login and logout, both frameworks;
    the cached Redis store and SQLite on write (the targets not met)."""
    from . import _profiles

    wanted = {"untouched", "read", "write", "login", "logout"}
    picked = [
        c
        for c in cases
        if (c.scenario in wanted and c.contender.endswith("ours+redis"))
        or (c.scenario == "write" and c.contender.endswith(("ours+redis-cached", "ours+sqlite")))
    ]
    return _profiles.profile_cases(picked, folder, seconds, html)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="under a minute: fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, help="rounds of interleaved batches (default 30, quick 8)")
    parser.add_argument("--batch-ms", type=float, help="target duration of one batch (default 20, quick 8)")
    parser.add_argument("--count-requests", type=int, help="requests per Redis count (default 300, quick 60)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP comparison")
    parser.add_argument("--http-seconds", type=float, help="seconds per HTTP case and round (default 5, quick 2)")
    parser.add_argument("--http-rounds", type=int, help="HTTP rounds (default 3, quick 1)")
    parser.add_argument("--profile", action="store_true", help="write pyinstrument profiles of ours instead of timing")
    parser.add_argument("--profile-seconds", type=float, default=2.0, help="per profiled path")
    parser.add_argument("--profile-html", action="store_true", help="also pyinstrument's HTML pages (large)")
    parser.add_argument("--json", type=Path, help="where to write results (default results/run-latest.json)")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (8 if q else 30)
    args.batch_ms = args.batch_ms or (8.0 if q else 20.0)
    args.warmup_ms = 30.0 if q else 150.0
    args.count_requests = args.count_requests or (60 if q else 300)
    args.http_seconds = args.http_seconds or (2.0 if q else 5.0)
    args.http_rounds = args.http_rounds or (1 if q else 3)
    args.json = args.json or RESULTS / ("run-quick.json" if q else "run-latest.json")
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    pinned = machine.pin(machine.SERVER_CPU)  # before the redis-server starts: it inherits the pinning
    loop, loop_name = machine.new_event_loop()
    asyncio.set_event_loop(loop)
    info = machine.machine_info(loop_name)
    harness.progress(machine.describe(info).replace("\n", "; "))
    results: dict[str, Any] = {"benchmark": "run", "machine": info}
    with PrivateRedis() as server:
        harness.announce(server)
        doors: list[Door] = [StarletteDoor(loop), FlaskDoor()]
        builds: list[Built] = []
        closers: list[Callable[[], Any]] = []
        try:
            for door in doors:
                builds += build_all(door, server.url)
            floors, closers = floor_cases(server.url, loop)
            cases = floors + make_cases(builds)
            gc.collect()
            gc.freeze()  # the apps live to the end: keep them out of the gc.collect() before each batch
            if args.profile:
                out = profile(cases, RESULTS / "profiles", args.profile_seconds, args.profile_html)
                print(_profile_summary(out))
                return 0
            harness.progress(f"{len(cases)} cases, pinned to CPU {pinned}")
            harness.run_interleaved(
                cases,
                rounds=args.rounds,
                target_batch_ns=int(args.batch_ms * 1e6),
                warmup_ns=int(args.warmup_ms * 1e6),
                progress=harness.progress,
            )
            counts = count_round_trips(cases, server.url, args.count_requests)
            results.update(analyse(cases, counts))
        finally:
            for built in builds:
                for close in built.closers:
                    close()
            for close in closers:
                close()
            gc.unfreeze()
        if not args.no_http:
            from . import bench_http

            results["http"] = bench_http.run_all(
                server.url, seconds=args.http_seconds, rounds=args.http_rounds, progress=harness.progress
            )
        results["settings"] = {
            "rounds": args.rounds,
            "batch_ms": args.batch_ms,
            "warmup_ms": args.warmup_ms,
            "count_requests": args.count_requests,
            "redis_version": server.version(),
            "quick": args.quick,
        }
    loop.close()
    packages: tuple[str, ...] = (
        "session_mw",
        "starlette",
        "starsessions",
        "flask",
        "flask-session",
        "werkzeug",
        "redis",
        "hiredis",
    )
    packages += ("orjson", "msgspec", "itsdangerous", "uvicorn", "gunicorn", "uvloop", "httptools")
    results["environment"] = harness.environment_info(packages, source_dirs=["session_mw"])
    results["machine"]["competing_processes_after"] = machine.competitors()
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(render(results))
    if not args.no_json:
        path = harness.write_json(args.json, results)
        print(f"\nwrote {path} ({results['elapsed_s']} s)")
    return 0


def _profile_summary(out: dict[str, Any]) -> str:
    lines = []
    for name, entry in out.items():
        lines.append(f"\n== {name}: {entry['requests']} requests; top own time ==")
        for row in entry["top"][:12]:
            lines.append(f"  {row['percent']:5.1f} %  {row['function']}  ({row['file']})")
        lines.append(f"  -> {entry['text']}" + (f", {entry['html']}" if entry["html"] else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
