"""How long a change made by one worker takes to reach another worker's client-side cache.

    python -m benchmarks.staleness            # 300 writes and 300 revokes, about 20 s
    python -m benchmarks.staleness --quick    # 30 of each

Two processes on one private redis-server, each with ``client_cache`` on: the writer (pinned
to CPU 0, with the redis-server) changes a session and notes when Redis's reply reached it; the
reader (pinned to CPU 1) reads the session in a loop from its cache and notes when it first
sees the change. Both clocks are ``CLOCK_MONOTONIC``, one clock for the whole machine. The
window is "seen" minus "written": negative when the reader saw the change before the writer
had its reply. Also timed: a cached read (a hit), on the reader.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from session_mw.stores.base import Close, Create, Delete, Lifetime, Load, Meta, Update
from session_mw.stores.redis import RedisStore

from . import _machine as machine
from ._harness import OUR_PREFIX, PrivateRedis

RESULTS = Path(__file__).resolve().parent / "results" / "staleness-latest.json"
LIFE = Lifetime(1800.0, 28800.0, 3600.0)  # no touch falls due during the run


def _tracked(url: str) -> RedisStore:
    store = RedisStore.from_url(url, OUR_PREFIX, client_cache=True)
    assert store.cache is not None
    deadline = time.monotonic() + 10
    while not store.cache.tracking:
        if time.monotonic() > deadline:
            raise RuntimeError("Redis tracking did not come up")
        time.sleep(0.005)
    return store


def _reader(url: str, keys: list[str], orders: Any, answers: Any) -> None:
    """For each order (a key and the value to wait for, None: gone), spin on reads until it is seen."""
    machine.pin(machine.LOAD_CPU)
    store = _tracked(url)
    hits: list[float] = []
    for key in keys:  # warm every copy, and time hits
        store.execute(Load(key, LIFE))
        for _ in range(200):
            started = time.perf_counter_ns()
            store.execute(Load(key, LIFE))
            hits.append((time.perf_counter_ns() - started) / 1000)
    answers.send("ready")
    while True:
        order = orders.recv()
        if order is None:
            break
        key, want = order
        answers.send("armed")
        while True:
            record = store.execute(Load(key, LIFE))
            value = None if record is None else record.data.get("v")
            if value == want:
                answers.send(time.monotonic_ns())
                break
    assert store.cache is not None
    answers.send({"hit_us_median": statistics.median(hits), "stats": dict(store.cache.stats)})
    store.execute(Close())


def measure(url: str, changes: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    orders, their_orders = context.Pipe()
    their_answers, answers = context.Pipe()
    writer = RedisStore.from_url(url, OUR_PREFIX, client_cache=True)
    now = time.time()
    keys = [f"{n:064x}" for n in range(1, changes + 1)]
    for key in keys:
        writer.execute(Create(key, Meta(now, now, now + 28800, public_id=key[:8]), {"v": b"0"}, LIFE))
    reader = context.Process(target=_reader, args=(url, keys, their_orders, their_answers), daemon=True)
    reader.start()
    windows: dict[str, list[float]] = {"write": [], "revoke": []}
    try:
        if answers.recv() != "ready":
            raise RuntimeError("the reader did not start")
        for n, key in enumerate(keys):
            kind = "write" if n % 2 == 0 else "revoke"
            want = b"1" if kind == "write" else None
            orders.send((key, want))
            answers.recv()  # armed: spinning on its copy
            time.sleep(0.002)
            if kind == "write":
                writer.execute(Update(key, LIFE, {"v": b"1"}))
            else:
                writer.execute(Delete(key))
            written = time.monotonic_ns()
            seen = answers.recv()
            windows[kind].append((seen - written) / 1000)
        orders.send(None)
        reader_figures = answers.recv()
    finally:
        reader.join(10)
        writer.execute(Close())

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "n": len(ordered),
            "median_us": round(statistics.median(ordered), 1),
            "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
            "max_us": round(ordered[-1], 1),
        }

    return {
        "benchmark": "staleness",
        "window": {kind: summary(values) for kind, values in windows.items()},
        "reader": {"hit_us_median": round(reader_figures["hit_us_median"], 2), "cache": reader_figures["stats"]},
        "writer_cpu": machine.SERVER_CPU,
        "reader_cpu": machine.LOAD_CPU,
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        "| change | n | median µs | p99 µs | max µs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in results["window"].items():
        lines.append(f"| {kind} | {row['n']} | {row['median_us']:.0f} | {row['p99_us']:.0f} | {row['max_us']:.0f} |")
    lines.append("")
    lines.append(
        f"From the writer's reply to the reader's first read that saw the change (writer and redis-server on "
        f"CPU {results['writer_cpu']}, reader on CPU {results['reader_cpu']}); a cached read costs "
        f"{results['reader']['hit_us_median']:.1f} µs in the store."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.staleness", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 changes instead of 600")
    parser.add_argument("--changes", type=int, default=0, help="this many changes (half writes, half revokes)")
    parser.add_argument("--no-json", action="store_true", help="print only; keep the committed results")
    args = parser.parse_args(argv)
    machine.pin(machine.SERVER_CPU)
    with PrivateRedis() as server:
        results = measure(server.url, args.changes or (60 if args.quick else 600))
    if not args.no_json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
