"""Requests per second over HTTP on loopback: uvicorn (one worker) with ours vs starsessions, and
gunicorn (one sync worker) with ours vs Flask-Session, on one private Redis; ``/read`` and ``/write``.

    python -m benchmarks.bench_http [--seconds 5] [--rounds 3]     # normally run by benchmarks.run

The server and its redis-server run on CPU 0, the load generator on CPU 1: ``wrk`` when it is
installed (``apt-get install wrk``), else a small Python client (one persistent HTTP/1.1
connection). Every case runs for a fixed time; the rounds interleave the cases.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _harness as harness
from . import _machine as machine
from .http_apps import APPS

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("/read", "/write")
#: (server, ours, peer)
PAIRS = (
    ("uvicorn", "ours+redis", "starsessions+redis"),
    ("uvicorn", "ours+redis-cached", "starsessions+redis"),
    ("uvicorn", "ours+redis-cached", "starlette-cookie"),
    ("gunicorn", "ours+redis", "flask-session+redis"),
    ("gunicorn", "ours+redis-cached", "flask-session+redis"),
    ("gunicorn", "ours+redis-cached", "flask-cookie"),
)
CONNECTIONS = 4


@dataclass
class Server:
    kind: str
    contender: str
    port: int
    proc: subprocess.Popen[bytes]
    cookie: str = ""
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def command(kind: str, contender: str, port: int) -> list[str]:
    target = f"benchmarks.http_apps:{APPS[(kind, contender)]}"
    quiet = ["--log-level", "warning"]
    if kind == "uvicorn":  # one process; uvloop and httptools when installed (uvicorn's own choice)
        where = ["--host", "127.0.0.1", "--port", str(port)]
        return [sys.executable, "-m", "uvicorn", "--factory", target, *where, *quiet, "--no-access-log"]
    return [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}", *quiet, f"{target}()"]


def _get(port: int, path: str, cookie: str | None = None) -> tuple[int, bytes, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers.get_all("Set-Cookie") or []
    finally:
        conn.close()


def start(kind: str, contender: str, redis_url: str) -> Server:
    port = harness.free_port()
    env = dict(os.environ, SESSION_MW_BENCH_REDIS_URL=redis_url)
    proc = subprocess.Popen(
        command(kind, contender, port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        preexec_fn=machine.pinned_to(machine.SERVER_CPU),  # with its redis-server
    )
    server = Server(kind, contender, port, proc)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} {contender} exited with status {proc.returncode}")
        try:
            if _get(port, "/plain")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise RuntimeError(f"{kind} {contender} did not answer on port {port}")
        time.sleep(0.1)
    status, _body, cookies = _get(port, "/login")
    server.cookie = harness.replay_cookie(f"{kind} {contender}", status, status == 200, cookies)
    for path in PATHS:
        status, body, _ = _get(port, path, server.cookie)
        if status != 200 or body != b"ok":
            raise RuntimeError(f"{kind} {contender} {path}: status {status}, body {body!r}")
    return server


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# -- load generators -----------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, cookie: str, seconds: float, connections: int) -> dict[str, Any]:
    """``wrk`` on CPU 1: requests per second, median and 99th percentile latency (ms)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-H", f"Cookie: {cookie}"]
    out = subprocess.run(
        [*args, url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=machine.pinned_to(machine.LOAD_CPU),
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad is not None:
        raise RuntimeError(f"{url}: {bad.group(1)} responses were not 2xx\n{out}")
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)) if p50 else float("nan"),
        "p99_ms": _ms(p99.group(1)) if p99 else float("nan"),
        "socket_errors": errors.group(1) if errors else "",
    }


def python_load(url: str, cookie: str, seconds: float, connections: int) -> dict[str, Any]:
    """The fallback: one persistent HTTP/1.1 connection (reopened when the server closes it), in a
    child process on CPU 1; ``connections`` is ignored."""
    code = f"from benchmarks.bench_http import _python_client; _python_client({url!r}, {cookie!r}, {seconds!r})"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=machine.pinned_to(machine.LOAD_CPU),
    ).stdout
    rps, p50, p99 = (float(x) for x in out.split())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "socket_errors": ""}


def _python_client(url: str, cookie: str, seconds: float) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
    sock: socket.socket | None = None
    buffer = b""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if sock is None:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = b""
        began = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode("latin-1"))
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        latencies.append(time.perf_counter() - began)
        if re.search(rb"(?i)connection:\s*close", head):
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    latencies.sort()
    print(len(latencies) / seconds, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3)


def generator() -> tuple[str, Callable[[str, str, float, int], dict[str, Any]]]:
    if shutil.which("wrk"):
        banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
        version = re.search(r"wrk \S*?([\d.]+)", banner)
        return f"wrk {version.group(1) if version else ''}, 1 thread, {CONNECTIONS} connections".replace("  ", " "), wrk
    return "python client, 1 persistent connection", python_load


# -- the run ------------------------------------------------------------------------------------


def run_all(
    redis_url: str, *, seconds: float, rounds: int, progress: Callable[[str], None] = harness.progress
) -> dict[str, Any]:
    """Start the four servers, run every (server, path) case ``rounds`` times interleaved, stop them."""
    name, load = generator()
    servers: list[Server] = []
    try:
        for kind, contender in dict.fromkeys((kind, c) for kind, ours, peer in PAIRS for c in (ours, peer)):
            servers.append(start(kind, contender, redis_url))
            progress(f"{kind} {contender} on port {servers[-1].port}")
        cases = [(s, path) for s in servers for path in PATHS]
        for server in servers:  # warm up: connection pools, script caches, the kernel's buffers
            load(server.base + "/read", server.cookie, 1.0, CONNECTIONS)
        for r in range(rounds):
            for i in range(len(cases)):
                server, path = cases[(r + i) % len(cases)]
                figures = load(server.base + path, server.cookie, seconds, CONNECTIONS)
                server.results.setdefault(path, []).append(figures)
            progress(f"http round {r + 1}/{rounds}")
    finally:
        for server in servers:
            stop(server)
    out: dict[str, Any] = {
        "load_generator": name,
        "seconds_per_case": seconds,
        "rounds": rounds,
        "server_cpu": machine.SERVER_CPU,
        "load_cpu": machine.LOAD_CPU,
        "servers": {
            "uvicorn": "uvicorn, 1 process (loop and HTTP parser: uvicorn's auto choice)",
            "gunicorn": "gunicorn -w 1 -k sync (no keep-alive: one connection per request)",
        },
        "cases": {},
        "ratios": {},
    }
    for server in servers:
        for path, runs in server.results.items():
            out["cases"].setdefault(server.kind, {}).setdefault(path, {})[server.contender] = {
                "rps": round(statistics.median(x["rps"] for x in runs), 1),
                "p50_ms": round(statistics.median(x["p50_ms"] for x in runs), 3),
                "p99_ms": round(statistics.median(x["p99_ms"] for x in runs), 3),
                "rounds_rps": [x["rps"] for x in runs],
            }
    by = {(s.kind, s.contender): s for s in servers}
    for kind, ours, peer in PAIRS:
        for path in PATHS:
            a, b = by[(kind, ours)].results[path], by[(kind, peer)].results[path]
            ratio = statistics.median(x["rps"] / y["rps"] for x, y in zip(a, b, strict=True))
            out["ratios"].setdefault(kind, {})[f"{path} {ours} / {peer}"] = round(ratio, 3)
    return out


def render(http: dict[str, Any]) -> str:
    rows = []
    for kind, ours, peer in PAIRS:
        for path in PATHS:
            a = http["cases"][kind][path][ours]
            b = http["cases"][kind][path][peer]
            rows.append(
                [
                    kind,
                    path,
                    f"{ours} vs {peer}",
                    f"{a['rps']:.0f}",
                    f"{b['rps']:.0f}",
                    f"{http['ratios'][kind][f'{path} {ours} / {peer}']:.2f}x",
                    f"{a['p50_ms']:.2f}/{b['p50_ms']:.2f}",
                    f"{a['p99_ms']:.2f}/{b['p99_ms']:.2f}",
                ]
            )
    headers = ["server", "path", "ours vs peer", "ours req/s", "peer req/s", "ratio", "p50 ms", "p99 ms"]
    table = harness.format_table(headers, rows, "lllrrrrr")
    note = (
        f"(HTTP on loopback: server and redis-server on CPU {http['server_cpu']}, load generator on CPU "
        f"{http['load_cpu']} ({http['load_generator']}); {http['rounds']} rounds of {http['seconds_per_case']} s "
        "per case; median req/s; ratio: ours/peer, higher is better)"
    )
    return table + "\n" + note


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_http", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    machine.pin(machine.SERVER_CPU)
    with harness.PrivateRedis() as server:
        http = run_all(server.url, seconds=args.seconds, rounds=args.rounds)
    print(render(http))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
