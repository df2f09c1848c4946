"""Shared pieces of the benchmarks: interleaved timing, statistics, tables, a private Redis, JSON,
and the analysis, report and command line that both benchmarks have.

Nothing here knows about ASGI or WSGI. A benchmark hands ``run_interleaved`` a list of
``Case`` objects whose ``run(n)`` performs ``n`` requests and returns the elapsed
nanoseconds (measured with ``time.perf_counter_ns`` around the request loop only); the
runner calibrates a batch size per case, warms every case up, then times one batch of
every case per round, rotating the order each round, with the garbage collector off
during batches and a ``gc.collect()`` between them.

A benchmark describes what it compares in a ``Benchmark`` (contenders, the baseline of each,
ratios, the Redis contenders); ``measure`` times its cases and builds the JSON report,
``render`` and ``report`` turn that into the tables.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Runner = Callable[[int], int]
"""``run(n)`` performs ``n`` requests and returns the elapsed time in nanoseconds."""

DEFAULT_REDIS_PORT = 6379


# -- timing ----------------------------------------------------------------------------


@dataclass
class Case:
    """One contender in one scenario."""

    scenario: str
    contender: str
    run: Runner
    batch: int = 0
    samples: list[float] = field(default_factory=list)  # wall ns per request, one per round
    cpu_samples: list[float] = field(default_factory=list)  # this thread's CPU ns per request, one per round

    @property
    def key(self) -> tuple[str, str]:
        return (self.scenario, self.contender)


@dataclass(frozen=True)
class Summary:
    """Per-request statistics over the rounds, in microseconds."""

    median: float
    p25: float
    p75: float
    minimum: float
    rounds: int

    @property
    def spread(self) -> float:
        """Half the interquartile range, relative to the median (0.02 means +-2 %)."""
        return (self.p75 - self.p25) / 2 / self.median if self.median else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "median_us": round(self.median, 3),
            "p25_us": round(self.p25, 3),
            "p75_us": round(self.p75, 3),
            "min_us": round(self.minimum, 3),
            "rounds": self.rounds,
        }


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of ``values`` (0 <= q <= 1)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(samples_ns: Sequence[float]) -> Summary:
    us = [s / 1000 for s in samples_ns]
    return Summary(statistics.median(us), quantile(us, 0.25), quantile(us, 0.75), min(us), len(us))


def paired_median(a: Sequence[float], b: Sequence[float], op: Callable[[float, float], float]) -> float:
    """Median over rounds of ``op(a[i], b[i])``: samples taken in the same round are compared.

    Pairing cancels slow drift (CPU frequency, a noisy neighbour) that affects both sides of
    one round alike.
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired samples must have the same, non-zero length")
    return statistics.median(op(x, y) for x, y in zip(a, b, strict=True))


def timed_batch(case: Case, n: int) -> tuple[int, int]:
    """Run one batch with the collector off; return (wall ns, CPU ns of this thread).

    Wall time comes from ``case.run`` (``perf_counter_ns`` around the request loop); CPU
    time is measured around the whole call, so it includes the little that ``run`` does
    outside its loop (one ``run_until_complete`` for an ASGI batch).
    """
    gc.collect()
    gc.disable()
    try:
        cpu = time.thread_time_ns()
        wall = case.run(n)
        return wall, time.thread_time_ns() - cpu
    finally:
        gc.enable()


def calibrate(case: Case, target_ns: int, min_batch: int = 20, max_batch: int = 200_000) -> int:
    """A batch size that takes about ``target_ns``; also warms the case up.

    Batches grow 4x until one takes a quarter of the target; the fastest of three batches of
    that size then sets the rate, so one preempted batch does not shrink the batch size.
    """
    n = min_batch
    while True:
        elapsed = timed_batch(case, n)[0]
        if elapsed >= target_ns // 4 or n >= max_batch:
            break
        n = min(max_batch, n * 4)
    per_request = max(1, min(elapsed, *(timed_batch(case, n)[0] for _ in range(2)))) / n
    return max(min_batch, min(max_batch, int(target_ns / per_request)))


def run_interleaved(
    cases: Sequence[Case],
    *,
    rounds: int,
    target_batch_ns: int,
    warmup_ns: int,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Fill ``case.samples`` (and ``cpu_samples``) with one ns-per-request sample per round.

    Warm-up: each case runs for about ``warmup_ns`` before calibration, so caches, lazily
    built middleware stacks, connection pools and Redis script caches are all in place.
    Round ``r`` visits the cases starting at index ``r % len(cases)``, so no case always
    runs first or right after the same neighbour.
    """
    for case in cases:
        calibrate(case, warmup_ns)  # warm-up: grows batches until warmup_ns is spent
        case.batch = calibrate(case, target_batch_ns)
        case.samples.clear()
        case.cpu_samples.clear()
    if progress:
        progress(f"calibrated {len(cases)} cases; {rounds} rounds")
    count = len(cases)
    started = time.perf_counter()
    for r in range(rounds):
        for i in range(count):
            case = cases[(r + i) % count]
            wall, cpu = timed_batch(case, case.batch)
            case.samples.append(wall / case.batch)
            case.cpu_samples.append(cpu / case.batch)
        if progress and (r + 1) % max(1, rounds // 5) == 0:
            progress(f"round {r + 1}/{rounds} ({time.perf_counter() - started:.1f} s)")


# -- output ----------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table; ``align`` holds one ``l``/``r`` per column (default: first left)."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, widths, align, strict=True)
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in cols).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in text_rows)
    return "\n".join(out)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def environment_info(packages: Sequence[str] = (), source_dirs: Sequence[str] = ()) -> dict[str, Any]:
    """Interpreter, machine, package versions and the git state of ``source_dirs``, for the JSON report."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    commit: str | None = None
    dirty: bool | None = None
    root = Path(__file__).resolve().parent.parent
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        commit = head.stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--", *source_dirs], capture_output=True, text=True)
        dirty = bool(status.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": dirty,  # uncommitted changes under source_dirs
        "packages": versions,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- a private Redis -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (never Redis's default port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != DEFAULT_REDIS_PORT:
            return port


class PrivateRedis:
    """A throw-away ``redis-server`` (no persistence) on a free port, or ``REDIS_URL`` if set.

    Use as a context manager; the server started here is stopped on exit. A ``REDIS_URL``
    naming Redis's default port on this machine is refused, so a benchmark never pollutes
    (or is polluted by) a shared development Redis by accident.
    """

    def __init__(self, url: str | None = None, binary: str = "redis-server", extra_args: Sequence[str] = ()) -> None:
        self._given = url if url is not None else os.environ.get("REDIS_URL") or None
        self._binary = binary
        self._extra = list(extra_args)  # more redis-server options (a private server only)
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.private = self._given is None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        if self._given is not None:
            _refuse_default_port(self._given)
            self.url = self._given
            self._wait_ready()
            return self.url
        exe = shutil.which(self._binary)
        if exe is None:
            raise RuntimeError(f"{self._binary} not found on PATH; install Redis or set REDIS_URL")
        for _attempt in range(5):
            port = free_port()
            self._proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self._extra],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.url = f"redis://127.0.0.1:{port}/0"
            try:
                self._wait_ready()
                return self.url
            except RuntimeError:
                self.stop()  # most likely lost a race for the port; try another one
        raise RuntimeError("could not start a private redis-server")

    def _wait_ready(self, timeout: float = 5.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._proc.returncode}")
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis at {self.url} did not answer within {timeout} s") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def version(self) -> str:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()


def _refuse_default_port(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    local = parts.scheme in ("redis", "rediss") and parts.hostname in (None, "", "localhost", "127.0.0.1", "::1")
    if local and (parts.port or DEFAULT_REDIS_PORT) == DEFAULT_REDIS_PORT:
        raise RuntimeError(
            "REDIS_URL points at the default Redis on this machine; the benchmark refuses it. "
            "Unset REDIS_URL to use a private redis-server, or point it at another port."
        )


# -- Redis server-side counters --------------------------------------------------------


@dataclass(frozen=True)
class RedisCounters:
    """A snapshot of server-wide counters, taken with a single ``INFO`` call."""

    commands: int  # total_commands_processed: every command, including those run inside Lua
    reads: int  # total_reads_processed: socket read events, one per request/reply round trip here
    dirty: int  # rdb_changes_since_last_save: keyspace modifications
    per_command: dict[str, int]  # cmdstat_<name>.calls, INFO excluded

    def __sub__(self, other: RedisCounters) -> RedisCounters:
        names = set(self.per_command) | set(other.per_command)
        per = {n: self.per_command.get(n, 0) - other.per_command.get(n, 0) for n in names}
        return RedisCounters(
            self.commands - other.commands,
            self.reads - other.reads,
            self.dirty - other.dirty,
            {n: c for n, c in sorted(per.items()) if c},
        )


class RedisProbe:
    """Reads Redis's own statistics, so counting never changes what the clients do.

    ``measure(action)`` snapshots, runs ``action``, snapshots again, and corrects for the
    probe's own traffic: the earlier ``INFO`` shows up in ``total_commands_processed`` and the
    later one's read in ``total_reads_processed``; ``INFO`` is left out of the per-command
    counts. Only meaningful when nobody else uses the server (a private redis-server).
    """

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self.snapshot()  # open the connection now, so its handshake is not counted later

    def snapshot(self) -> RedisCounters:
        info: dict[str, Any] = self._client.info("stats", "persistence", "commandstats")
        per: dict[str, int] = {}
        for key, value in info.items():
            if key.startswith("cmdstat_") and key != "cmdstat_info":
                per[key[len("cmdstat_") :]] = int(value["calls"]) if isinstance(value, dict) else 0
        return RedisCounters(
            int(info["total_commands_processed"]),
            int(info.get("total_reads_processed", 0)),
            int(info["rdb_changes_since_last_save"]),
            per,
        )

    def measure(self, action: Callable[[], object]) -> RedisCounters:
        before = self.snapshot()
        action()
        diff = self.snapshot() - before
        return RedisCounters(diff.commands - 1, diff.reads - 1, diff.dirty, diff.per_command)

    def close(self) -> None:
        self._client.close()


def sqlite_url() -> str:
    """A SQLite store file of its own for this run (removed at exit), like the default store."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="session_mw-bench-")
    atexit.register(shutil.rmtree, folder, True)
    return f"sqlite:///{folder}/sessions.db"


# -- what both benchmarks measure and report -------------------------------------------

SCENARIOS = ("no-cookie", "read", "write")
PATHS = {"no-cookie": "/plain", "read": "/read", "write": "/write"}
#: Every path a bare app answers (with its session-free endpoint): PATHS and the login/logout routes.
BARE_PATHS = (*PATHS.values(), "/signin", "/signout")
CART = ["sku-1042", "sku-2077", "sku-3301"]  # what /login stores, three strings
OUR_PREFIX = "session_mw_bench:"
WRITE_COMMANDS = frozenset(
    {"set", "setex", "psetex", "getex", "getdel", "del", "unlink", "expire", "pexpire", "expireat", "pexpireat"}
    | {"persist", "hset", "hmset", "hsetnx", "hdel", "sadd", "srem", "zadd", "zrem", "rename"}
)

Target = tuple[str, str, bool | None]
"""(what is promised, what was measured, met: True/False, or None when not measured)."""


@dataclass(frozen=True)
class Benchmark:
    """What one benchmark compares; its analysis, tables and JSON follow from this."""

    name: str  # "asgi" or "wsgi": the module is benchmarks.bench_<name>, the JSON's "benchmark"
    contenders: tuple[str, ...]  # in the order of the tables
    baseline: Mapping[str, str]  # contender -> the contender its overhead is paired against
    ratios: tuple[tuple[str, str, str], ...]  # (label, numerator, denominator)
    redis_contenders: tuple[str, ...]  # those whose Redis work per request is counted
    packages: tuple[str, ...]  # whose versions go into the JSON
    results: Path  # the default JSON file
    record_baseline: bool = False  # each JSON row names its baseline
    overhead_note: str | None = None  # a line under the first table
    scenarios: tuple[str, ...] = SCENARIOS

    @property
    def baselines(self) -> frozenset[str]:
        return frozenset(c for c in self.contenders if self.baseline[c] == c)


def parse_args(
    bench: Benchmark,
    argv: Sequence[str] | None,
    *,
    description: str,
    quick_help: str,
    profile_help: str,
    quick_rounds: int,
    warmup_ms: tuple[float, float],  # (quick, default)
) -> argparse.Namespace:
    results = bench.results
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.bench_{bench.name}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--rounds", type=int, help=f"rounds of interleaved batches (default 40, quick {quick_rounds})")
    parser.add_argument("--batch-ms", type=float, help="target duration of one batch (default 25, quick 12)")
    parser.add_argument("--count-requests", type=int, default=500, help="requests per Redis command count")
    parser.add_argument("--json", type=Path, default=results, help=f"where to write results (default {results})")
    parser.add_argument("--no-json", action="store_true", help="don't write the JSON file")
    parser.add_argument("--profile", action="store_true", help=profile_help)
    parser.add_argument("--profile-requests", type=int, default=20_000)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (quick_rounds if args.quick else 40)
    args.batch_ms = args.batch_ms or (12.0 if args.quick else 25.0)
    args.warmup_ms = warmup_ms[0] if args.quick else warmup_ms[1]
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    return args


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def announce(server: PrivateRedis) -> None:
    progress(f"redis {server.version()} at {server.url} ({'private' if server.private else 'REDIS_URL'})")


def replay_cookie(contender: str, status: object, ok: bool, set_cookies: Sequence[str]) -> str:
    """The one non-empty ``name=value`` a ``/login`` response set, to replay; ``ok``: it answered 200."""
    cookies = [c.split(";", 1)[0].strip() for c in set_cookies]
    cookies = [c for c in cookies if "=" in c and c.split("=", 1)[1] not in ("", '""', "''")]
    if not ok or len(cookies) != 1:
        raise RuntimeError(f"{contender}: login gave status {status} and cookies {list(set_cookies)}")
    return cookies[0]


def check_reply(
    contender: str, scenario: str, status: object, ok: bool, body: bytes, set_cookies: Sequence[str]
) -> None:
    """A scenario's request must answer ``200 ok``, and without a cookie set none."""
    if not ok or body != b"ok":
        raise RuntimeError(f"{contender} {scenario}: status {status}, body {body!r}")
    if scenario == "no-cookie" and set_cookies:
        raise RuntimeError(f"{contender} no-cookie: unexpected Set-Cookie {list(set_cookies)}")


def analyse(bench: Benchmark, cases: Sequence[Case]) -> dict[str, Any]:
    """Per scenario and contender: statistics and the paired overhead; then the ratios."""
    by_key = {c.key: c for c in cases}
    out: dict[str, Any] = {"scenarios": {}, "ratios": {}}
    for scenario in bench.scenarios:
        rows: dict[str, Any] = {}
        for contender in bench.contenders:
            case = by_key[(scenario, contender)]
            base = by_key[(scenario, bench.baseline[contender])].samples
            row: dict[str, Any] = summarize(case.samples).as_dict()
            row["cpu_median_us"] = round(summarize(case.cpu_samples).median, 3)
            row["batch"] = case.batch
            if bench.record_baseline:
                row["baseline"] = bench.baseline[contender]
            row["overhead_us"] = round(paired_median(case.samples, base, lambda a, b: (a - b) / 1000), 3)
            rows[contender] = row
        out["scenarios"][scenario] = rows
        for label, num, den in bench.ratios:
            a, b = by_key[(scenario, num)].samples, by_key[(scenario, den)].samples
            over_num, over_den = rows[num]["overhead_us"], rows[den]["overhead_us"]
            out["ratios"].setdefault(label, {})[scenario] = {
                "total": round(paired_median(a, b, lambda x, y: x / y), 3),
                "overhead": round(over_num / over_den, 3) if over_den > 0.05 else None,
            }
    return out


def count_redis(bench: Benchmark, cases: Sequence[Case], probe: RedisProbe, requests: int) -> dict[str, Any]:
    """Redis work per request of each Redis contender's cases, from ``requests`` untimed requests."""
    out: dict[str, Any] = {}
    for case in cases:
        if case.contender not in bench.redis_contenders:
            continue
        diff = probe.measure(functools.partial(case.run, requests))
        out.setdefault(case.scenario, {})[case.contender] = {
            "requests": requests,
            "round_trips": round(diff.reads / requests, 3),
            "commands": round(diff.commands / requests, 3),
            "write_commands": round(sum(c for n, c in diff.per_command.items() if n in WRITE_COMMANDS) / requests, 3),
            "keyspace_changes": round(diff.dirty / requests, 3),
            "per_command": {name: round(calls / requests, 3) for name, calls in diff.per_command.items()},
        }
    return out


def ratio_target(results: Mapping[str, Any], label: str, limit: float) -> Target:
    """``read`` of the ratio ``label`` (``ours / peer``) at most ``limit`` (total µs per request)."""
    ratio = results["ratios"][label]["read"]
    over = ratio["overhead"]
    detail = f"{ratio['total']:.2f}x total" + (f", {over:.2f}x overhead" if over is not None else "")
    ours, peer = label.split(" / ")
    return (f"{ours} read <= {limit:.1f}x {peer} (total)", detail, ratio["total"] <= limit)


def round_trip_target(results: Mapping[str, Any]) -> Target:
    """ours+redis ``read``: one round trip and nothing written."""
    target = "ours+redis read: 1 round trip, no data write"
    read = results.get("redis_per_request", {}).get("read", {}).get("ours+redis")
    if read is None:
        return (target, "not measured", None)
    trips, writes, changes = read["round_trips"], read["write_commands"], read["keyspace_changes"]
    return (
        target,
        f"{trips:.2f} round trips, {writes:.2f} write cmds, {changes:.2f} changes",
        trips <= 1.0 and writes == 0 and changes == 0,
    )


def measure(
    bench: Benchmark,
    cases: Sequence[Case],
    args: argparse.Namespace,
    server: PrivateRedis,
    started: float,
    targets: Callable[[dict[str, Any]], list[Target]],
) -> dict[str, Any]:
    """Time ``cases``, count their Redis work, judge the ``targets``: the JSON report."""
    run_interleaved(
        cases,
        rounds=args.rounds,
        target_batch_ns=int(args.batch_ms * 1e6),
        warmup_ns=int(args.warmup_ms * 1e6),
        progress=progress,
    )
    results: dict[str, Any] = {
        "benchmark": bench.name,
        "settings": {
            "rounds": args.rounds,
            "batch_ms": args.batch_ms,
            "warmup_ms": args.warmup_ms,
            "redis": "private redis-server" if server.private else "REDIS_URL",
            "redis_version": server.version(),
        },
        "environment": environment_info(bench.packages, source_dirs=["session_mw"]),
    }
    results.update(analyse(bench, cases))
    probe = RedisProbe(server.url)
    try:
        results["redis_per_request"] = count_redis(bench, cases, probe, args.count_requests)
    finally:
        probe.close()
    results["targets"] = [{"target": t, "measured": m, "pass": ok} for t, m, ok in targets(results)]
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    return results


def render(bench: Benchmark, results: Mapping[str, Any]) -> str:
    """The tables: times and overheads, ratios, Redis work per request (if counted), targets."""
    lines: list[str] = []
    rows = []
    for scenario in bench.scenarios:
        for i, contender in enumerate(bench.contenders):
            r = results["scenarios"][scenario][contender]
            spread = (r["p75_us"] - r["p25_us"]) / 2 / r["median_us"] * 100 if r["median_us"] else 0.0
            overhead = "-" if contender in bench.baselines else f"{r['overhead_us']:+.2f}"
            cells = [f"{r['median_us']:.2f}", f"{spread:.1f}", overhead, f"{r['cpu_median_us']:.2f}", r["batch"]]
            rows.append([scenario if i == 0 else "", contender, *cells])
        rows.append([""] * 7)
    headers = ["scenario", "contender", "median us/req", "+-%", "overhead us", "cpu us/req", "batch"]
    lines.append(format_table(headers, rows[:-1], "llrrrrr"))
    if bench.overhead_note:
        lines.append(bench.overhead_note)
    lines.append("")
    ratio_rows = []
    for label, _num, _den in bench.ratios:
        for kind in ("total", "overhead"):
            values = (results["ratios"][label][scenario][kind] for scenario in bench.scenarios)
            ratio_rows.append([f"{label} ({kind})", *("n/a" if v is None else f"{v:.2f}x" for v in values)])
    lines.append(format_table(["ratio", *bench.scenarios], ratio_rows))
    counts = results.get("redis_per_request")
    if counts:
        lines.append("")
        count_rows = []
        for scenario in bench.scenarios:
            for contender in bench.redis_contenders:
                c = counts[scenario][contender]
                breakdown = " ".join(f"{k}={v:g}" for k, v in c["per_command"].items()) or "-"
                numbers = (c["round_trips"], c["commands"], c["write_commands"], c["keyspace_changes"])
                count_rows.append([scenario, contender, *(f"{n:.2f}" for n in numbers), breakdown])
        count_headers = ["scenario", "contender", "round trips", "commands", "write cmds", "keyspace changes"]
        lines.append(format_table([*count_headers, "per command (incl. inside Lua)"], count_rows, "llrrrrl"))
    lines.append("")
    target_rows = [
        [t["target"], t["measured"], "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")]
        for t in results["targets"]
    ]
    lines.append(format_table(["target", "measured", "status"], target_rows, "lll"))
    return "\n".join(lines)


def report(bench: Benchmark, args: argparse.Namespace, results: Mapping[str, Any]) -> None:
    """Print the tables; write the JSON unless ``--no-json``."""
    print(render(bench, results))
    if not args.no_json:
        path = write_json(args.json, results)
        print(f"\nwrote {path} ({results['elapsed_s']} s)")


def profile_cases(cases: Iterable[Case], requests: int, top: int) -> None:
    """cProfile of each case: top functions by own time, overall and in session_mw."""
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for case in cases:
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


def forget_keys(url: str, prefixes: Iterable[str]) -> None:
    """On a shared REDIS_URL, remove the sessions this run created."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=prefix + "*", count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
