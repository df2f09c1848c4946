"""Shared pieces of the benchmarks: interleaved timing, statistics, tables, a private Redis, JSON.

Nothing here knows about ASGI or WSGI. A benchmark hands ``run_interleaved`` a list of
``Case`` objects whose ``run(n)`` performs ``n`` requests and returns the elapsed
nanoseconds (measured with ``time.perf_counter_ns`` around the request loop only); the
runner calibrates a batch size per case, warms every case up, then times one batch of
every case per round, rotating the order each round, with the garbage collector off
during batches and a ``gc.collect()`` between them.
"""

from __future__ import annotations

import gc
import json
import os
import platform
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

    def __init__(self, url: str | None = None, binary: str = "redis-server") -> None:
        self._given = url if url is not None else os.environ.get("REDIS_URL") or None
        self._binary = binary
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
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
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
