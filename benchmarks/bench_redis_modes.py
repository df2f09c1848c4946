"""µs per store operation on one Redis node, a Sentinel service and a Cluster, and what
``replica_acks=1`` (WAIT for one replica) adds to a birth.

Run pinned, so that this process and every redis-server it starts share one CPU::

    taskset -c 0 python -m benchmarks.bench_redis_modes [--rounds 7] [--n 400]

Each deployment has one replica per primary (the Sentinel setup: one primary, one replica and
three sentinels; the Cluster: three primaries with a replica each). The rounds interleave the
deployments; each figure is the median over rounds of a round's median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from session_mw import SessionConfig
from session_mw.stores import open_store
from session_mw.stores.base import Close, Create, Lifetime, Load, Store, Update
from session_mw.testing import meta
from session_mw.tokens import Digester, new_token
from tests.deployments import Cluster, Node, Sentinels, free_ports

OPS = ("read (Load)", "write (Update)", "birth (Create, logged in)", "birth, replica_acks=1")


@dataclass
class Mode:
    name: str
    url: str
    stop: Callable[[], None]
    stores: dict[bool, Store] = field(default_factory=dict)
    results: dict[str, list[float]] = field(default_factory=dict)


def _single_node_with_replica() -> Mode:
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="session_mw-bench-"))
    p_port, r_port = free_ports(2)
    args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    primary = Node(p_port, root, ["--port", str(p_port), *args])
    primary.start()
    replica = Node(r_port, root, ["--port", str(r_port), *args, "--replicaof", "127.0.0.1", str(p_port)])
    replica.start()
    while "master_link_status:up" not in replica.cli("INFO", "replication"):
        time.sleep(0.05)

    def stop() -> None:
        replica.kill()
        primary.kill()

    return Mode("node", f"redis://127.0.0.1:{p_port}/0", stop)


def _timed(n: int, op: Callable[[int], Any]) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter_ns()
        op(i)
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def _round(mode: Mode, n: int) -> None:
    plain, waiting = mode.stores[False], mode.stores[True]
    idle = SessionConfig().idle_timeout
    lifetime = Lifetime(idle, 28800.0, idle / 10)
    digest = Digester()
    keys = [digest(new_token(32)) for _ in range(n)]
    now = time.time()
    for key in keys:
        plain.execute(Create(key, meta(now), {"cart": b'["apple"]'}, lifetime))
    figures = {
        OPS[0]: _timed(n, lambda i: plain.execute(Load(keys[i], lifetime))),
        OPS[1]: _timed(n, lambda i: plain.execute(Update(keys[i], lifetime, {"cart": b'["pear"]'}))),
        OPS[2]: _timed(
            n, lambda i: plain.execute(Create(digest(new_token(32)), meta(now, "alice"), {"a": b"1"}, lifetime))
        ),
        OPS[3]: _timed(
            n, lambda i: waiting.execute(Create(digest(new_token(32)), meta(now, "bob"), {"a": b"1"}, lifetime))
        ),
    }
    for name, value in figures.items():
        mode.results.setdefault(name, []).append(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=400)
    options = parser.parse_args()
    sentinels = Sentinels.start()
    cluster = Cluster.start(replicas=1)
    modes = [
        _single_node_with_replica(),
        Mode("sentinel", sentinels.url, sentinels.stop),
        Mode("cluster", cluster.url, cluster.stop),
    ]
    try:
        for mode in modes:
            for acks in (False, True):
                config = SessionConfig(store_url=mode.url, key_prefix="bench:", replica_acks=int(acks))
                mode.stores[acks] = open_store(config)
        for _ in range(options.rounds):
            for mode in modes:
                _round(mode, options.n)
        width = max(len(op) for op in OPS)
        print(f"{'µs, median of round medians':{width}}  " + "  ".join(f"{m.name:>9}" for m in modes))
        base = modes[0]
        for op in OPS:
            row = [statistics.median(m.results[op]) for m in modes]
            ratios = "  ".join(f"{v / statistics.median(base.results[op]):.2f}x" for v in row[1:])
            print(f"{op:{width}}  " + "  ".join(f"{v:9.1f}" for v in row) + f"   (vs node: {ratios})")
        for mode in modes:
            extra = statistics.median(mode.results[OPS[3]]) - statistics.median(mode.results[OPS[2]])
            print(f"replica_acks=1 adds {extra:.1f} µs to a birth on {mode.name}")
    finally:
        for mode in modes:
            for store in mode.stores.values():
                store.execute(Close())
            mode.stop()


if __name__ == "__main__":
    main()
