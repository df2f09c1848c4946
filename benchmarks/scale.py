"""Scale: read and write cost at 1k, 100k and 1M live sessions on Redis and SQLite, the bytes a
session takes, and the per-user operations for a user holding 1, 100 and 10k sessions.

Run from the repository root::

    python -m benchmarks.scale                 # up to 1M sessions per store, a few minutes
    python -m benchmarks.scale --max 100000    # stop at 100k
    python -m benchmarks.scale --quick         # 1k and 10k sessions, users of 1/100/1k sessions, ~20 s

Store operations only (``session_mw.stores.open_store`` and the ops of ``session_mw.stores.base``),
no HTTP and no middleware. The process and its private redis-server are pinned to CPU 0; the
redis-server runs with ``slowlog-log-slower-than 1000`` (µs). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from session_mw import SessionConfig
from session_mw.serializers import JSONSerializer
from session_mw.stores import open_store
from session_mw.stores.base import Close, Create, Lifetime, Load, Meta, RevokeAll, SessionsOf, Store, Update

from . import _harness as harness
from . import _machine as machine

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "scale:"
SLOW_US = 1000
#: The typical payload: a cart of three items; the session is logged in (its user id is in the metadata).
CART = [
    {"sku": "sku-1042", "name": "Espresso beans, 1 kg", "qty": 1, "price": 2490},
    {"sku": "sku-2077", "name": "Milk jug", "qty": 2, "price": 1290},
    {"sku": "sku-3301", "name": "Descaler", "qty": 1, "price": 790},
]
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def hexkey(i: int) -> str:
    """The store key (a digest) of population session ``i``: 64 hex digits, like a SHA-256 digest."""
    return f"{i:064x}"


def new_meta(now: float, user: str | None) -> Meta:
    return Meta(
        created_at=now,
        last_seen=now,
        absolute_deadline=now + 28800.0,
        user_id=user,
        user_agent=USER_AGENT,
        public_id=secrets.token_hex(8),
        authenticated_at=now if user else 0.0,
        issued_at=now,
    )


def payload() -> dict[str, bytes]:
    dumps = JSONSerializer().dumps
    return {"cart": dumps(CART), "csrf": dumps(secrets.token_urlsafe(24))}


# -- populating fast -----------------------------------------------------------------------------


class RedisPopulation:
    """Copies of one real session (born through ``Create``), written with pipelined ``RESTORE``."""

    def __init__(self, store: Store, url: str, lifetime: Lifetime) -> None:
        self.store, self.client, self.lifetime = store, redis.Redis.from_url(url), lifetime
        self.count = 0
        template = hexkey(0)
        store.execute(Create(template, new_meta(time.time(), "scale-template-user"), payload(), lifetime))
        self.template_key = self.key(template)
        dump = self.client.dump(self.template_key)
        if not isinstance(dump, bytes):
            raise RuntimeError("DUMP of the template session returned nothing")
        self.dump = dump
        self.count = 1

    def key(self, digest: str) -> str:
        session_key: Callable[[str], str] | None = getattr(self.store, "session_key", None)
        return session_key(digest) if session_key else f"{PREFIX}s:{digest}"

    def grow(self, total: int, batch: int = 5000) -> None:
        ttl = int(self.client.pttl(self.template_key))
        while self.count < total:
            pipe = self.client.pipeline(transaction=False)
            end = min(total, self.count + batch)
            for i in range(self.count, end):
                pipe.restore(self.key(hexkey(i)), ttl, self.dump, replace=True)
            pipe.execute()
            self.count = end

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def memory_usage(self, key: str) -> int:
        return int(self.client.memory_usage(key, samples=0) or 0)

    def close(self) -> None:
        self.client.close()


class SQLitePopulation:
    """Copies of one real session (born through ``Create``), inserted by SQL from that row."""

    def __init__(self, store: Store, path: str, lifetime: Lifetime) -> None:
        self.store, self.path, self.lifetime = store, path, lifetime
        store.execute(Create(hexkey(0), new_meta(time.time(), "scale-template-user"), payload(), lifetime))
        self.count = 1
        self.conn = sqlite3.connect(path, isolation_level=None)

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")]

    def grow(self, total: int, batch: int = 100_000) -> None:
        """Whatever the columns are, each copy is the template's row with another digest."""
        template = hexkey(0)
        for table in ("sessions", "session_values"):
            if table not in {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}:
                raise RuntimeError(f"the SQLite store has no {table} table: update benchmarks/scale.py")
        while self.count < total:
            end = min(total, self.count + batch)
            self.conn.execute("BEGIN IMMEDIATE")
            for table in ("sessions", "session_values"):
                cols = self._columns(table)
                picked = ", ".join("printf('%064x', c.i)" if col == "digest" else f"t.{col}" for col in cols)
                self.conn.execute(
                    f"WITH RECURSIVE c(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
                    f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} FROM c, "
                    f"(SELECT * FROM {table} WHERE digest = ?) t",
                    (self.count, end - 1, template),
                )
            self.conn.execute("COMMIT")
            self.count = end

    def file_bytes(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(p.stat().st_size for p in Path(self.path).parent.glob(Path(self.path).name + "*"))

    def close(self) -> None:
        self.conn.close()


# -- timing --------------------------------------------------------------------------------------


def timed(ops: Sequence[Any], run: Callable[[Any], Any]) -> list[float]:
    """µs of each call."""
    out = []
    for op in ops:
        started = time.perf_counter_ns()
        run(op)
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def measure(
    store: Store, population: int, lifetime: Lifetime, n: int, reps: int, floor: Callable[[], Any] | None
) -> dict[str, Any]:
    """Load and Update of random live sessions (and the floor), ``reps`` interleaved chunks of ``n``."""
    rng = random.Random(population)
    dumps = JSONSerializer().dumps
    new_cart = {"cart": dumps([*CART, {"sku": "sku-4410", "name": "Tamper", "qty": 1, "price": 3490}])}
    loads: list[float] = []
    updates: list[float] = []
    floors: list[float] = []
    warm = [hexkey(rng.randrange(1, population)) for _ in range(n)]  # untimed: connections, scripts, caches
    timed([Load(k, lifetime) for k in warm], store.execute)
    timed([Update(k, lifetime, new_cart) for k in warm], store.execute)
    for _ in range(reps):
        keys = [hexkey(rng.randrange(1, population)) for _ in range(n)]
        got = timed([Load(k, lifetime) for k in keys], store.execute)
        loads.append(statistics.median(got))
        done = timed([Update(k, lifetime, new_cart) for k in keys], store.execute)
        updates.append(statistics.median(done))
        if floor is not None:
            floors.append(statistics.median(timed(range(n), lambda _i: floor())))
    for k in keys[:20]:  # what was timed did what it claims
        record = store.execute(Load(k, lifetime))
        if record is None or record.data.get("cart") != new_cart["cart"]:
            raise RuntimeError(f"population session {k[:8]}... did not load or was not updated")
    out: dict[str, Any] = {
        "sessions": population,
        "load_us": round(statistics.median(loads), 1),
        "update_us": round(statistics.median(updates), 1),
        "ops_per_rep": n,
        "reps": reps,
    }
    if floors:
        f = statistics.median(floors)
        out["floor_us"] = round(f, 1)
        out["load_beyond_floor_us"] = round(out["load_us"] - f, 1)
        out["update_beyond_floor_us"] = round(out["update_us"] - f, 1)
    return out


def flatness(rows: list[dict[str, Any]], field: str) -> dict[str, Any]:
    base = rows[0][field]
    ratios = {str(r["sessions"]): round(r[field] / base, 3) for r in rows}
    worst = max(abs(v - 1) for v in ratios.values())
    return {"vs_smallest": ratios, "worst_change": round(worst, 3), "flat_within_10pct": worst <= 0.10}


# -- per-user operations -------------------------------------------------------------------------


class SlowLog:
    """Redis's own per-command timing: with a threshold of 0 it records every command's µs."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def record_all(self) -> None:
        self.client.config_set("slowlog-max-len", 1_000_000)
        self.client.config_set("slowlog-log-slower-than", 0)
        self.client.slowlog_reset()

    def collect(self) -> dict[str, Any]:
        self.client.config_set("slowlog-log-slower-than", SLOW_US)
        entries = self.client.slowlog_get(1_000_000)
        self.client.slowlog_reset()
        mine = [e for e in entries if _name(e) not in ("slowlog", "config")]
        if not mine:
            return {"commands": 0, "max_us": 0, "max_command": "", "over_1ms": 0}
        worst = max(mine, key=lambda e: int(e["duration"]))
        return {
            "commands": len(mine),
            "max_us": int(worst["duration"]),
            "max_command": _name(worst),
            "over_1ms": sum(1 for e in mine if int(e["duration"]) > SLOW_US),
        }

    def since_start(self) -> list[dict[str, Any]]:
        return [{"command": _name(e), "us": int(e["duration"])} for e in self.client.slowlog_get(128)]

    def close(self) -> None:
        self.client.close()


def _name(entry: dict[str, Any]) -> str:
    command = entry.get("command", b"")
    text = command.decode("latin-1") if isinstance(command, bytes) else str(command)
    return text.split(" ", 1)[0].lower()


def per_user(store: Store, lifetime: Lifetime, sizes: Sequence[int], slowlog: SlowLog | None) -> list[dict[str, Any]]:
    """A user with ``k`` sessions (each born through ``Create``): list them, then revoke them all."""
    rows = []
    data = payload()
    for k in sizes:
        user = f"scale-user-{k}"
        now = time.time()
        keys = [secrets.token_hex(32) for _ in range(k)]
        started = time.perf_counter()
        for key in keys:
            store.execute(Create(key, new_meta(now, user), data, lifetime))
        create_s = time.perf_counter() - started
        row: dict[str, Any] = {"sessions": k, "create_each_us": round(create_s / k * 1e6, 1)}
        listing = []
        for _ in range(3):
            if slowlog:
                slowlog.record_all()
            started = time.perf_counter()
            listed = store.execute(SessionsOf(user, lifetime))
            listing.append((time.perf_counter() - started) * 1000)
            if len(listed) != k:
                raise RuntimeError(f"SessionsOf listed {len(listed)} of {k} sessions")
            if slowlog:
                row["sessions_of_redis"] = slowlog.collect()
        row["sessions_of_ms"] = round(statistics.median(listing), 3)
        if slowlog:
            slowlog.record_all()
        started = time.perf_counter()
        revoked = store.execute(RevokeAll(user, lifetime))
        row["revoke_all_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if slowlog:
            row["revoke_all_redis"] = slowlog.collect()
        if len(revoked) != k or store.execute(SessionsOf(user, lifetime)):
            raise RuntimeError(f"RevokeAll ended {len(revoked)} of {k} sessions")
        rows.append(row)
    return rows


# -- main ----------------------------------------------------------------------------------------


def sizes_up_to(limit: int, quick: bool) -> list[int]:
    ladder = [1_000, 10_000] if quick else [1_000, 100_000, 1_000_000]
    return [s for s in ladder if s <= limit] or [limit]


def run_store(
    kind: str, url: str, sizes: Sequence[int], users: Sequence[int], n: int, reps: int, redis_url: str | None
) -> dict[str, Any]:
    config = SessionConfig(store_url=url, key_prefix=PREFIX)
    lifetime = Lifetime(config.idle_timeout, config.absolute_timeout, config.effective_touch_interval)
    store = open_store(config)
    out: dict[str, Any] = {"sizes": [], "populate_s": {}}
    population: RedisPopulation | SQLitePopulation
    floor_client = redis.Redis.from_url(redis_url) if redis_url else None
    floor: Callable[[], Any] | None = None
    if floor_client is not None:
        floor_client.set(PREFIX + "floor", b"x" * 64)
        floor = lambda: floor_client.get(PREFIX + "floor")  # noqa: E731
    try:
        if kind == "redis":
            population = RedisPopulation(store, url, lifetime)
            key = population.template_key
            out["session_hash"] = {
                "memory_usage_bytes": population.memory_usage(key),
                "fields": int(population.client.hlen(key)),
                "encoding": str(population.client.object("ENCODING", key)),
                "payload_bytes": sum(len(v) for v in payload().values()),
            }
        else:
            population = SQLitePopulation(store, url.split("sqlite:///", 1)[1], lifetime)
        before = (1, population.used_memory() if isinstance(population, RedisPopulation) else population.file_bytes())
        for size in sizes:
            started = time.perf_counter()
            population.grow(size)
            out["populate_s"][str(size)] = round(time.perf_counter() - started, 1)
            harness.progress(f"{kind}: {size} sessions ({out['populate_s'][str(size)]} s to populate)")
            row = measure(store, size, lifetime, n, reps, floor)
            if isinstance(population, RedisPopulation):
                used = population.used_memory()
                row["used_memory_bytes"] = used
                row["used_memory_per_session"] = round((used - before[1]) / max(1, size - before[0]))
                before = (size, used)
            else:
                size_bytes = population.file_bytes()
                row["file_bytes"] = size_bytes
                row["file_bytes_per_session"] = round(size_bytes / size)
            out["sizes"].append(row)
        out["load_flatness"] = flatness(out["sizes"], "load_us")
        out["update_flatness"] = flatness(out["sizes"], "update_us")
        harness.progress(f"{kind}: per-user operations")
        slowlog = SlowLog(url) if kind == "redis" else None
        if slowlog is not None:  # commands over 1 ms while populating and timing Load/Update
            out["slowlog_over_1ms_populate_and_measure"] = slowlog.since_start()
        try:
            out["per_user"] = per_user(store, lifetime, users, slowlog)
            if slowlog is not None:
                index = slowlog.client  # one user with one session: what its index costs
                store.execute(Create(secrets.token_hex(32), new_meta(time.time(), "scale-one"), payload(), lifetime))
                out["user_index_bytes_one_session"] = int(index.memory_usage(f"{PREFIX}u:scale-one", samples=0) or 0)
        finally:
            if slowlog is not None:
                slowlog.close()
        population.close()
    finally:
        store.execute(Close())
        if floor_client is not None:
            floor_client.close()
    return out


def render(results: dict[str, Any]) -> str:
    lines = [machine.describe(results["machine"]), ""]
    rows = []
    for kind in ("redis", "sqlite"):
        r = results.get(kind)
        if not r:
            continue
        for row in r["sizes"]:
            space = (
                f"{row['used_memory_per_session']} B/session (used_memory)"
                if kind == "redis"
                else f"{row['file_bytes_per_session']} B/session (file)"
            )
            beyond = (
                f"{row['load_beyond_floor_us']:.0f}/{row['update_beyond_floor_us']:.0f}"
                if "floor_us" in row and kind == "redis"
                else "-"
            )
            rows.append(
                [kind, f"{row['sessions']:,}", f"{row['load_us']:.0f}", f"{row['update_us']:.0f}", beyond, space]
            )
        lf, uf = r["load_flatness"], r["update_flatness"]
        rows.append(
            [
                "",
                "worst change",
                f"{lf['worst_change'] * 100:+.0f} %",
                f"{uf['worst_change'] * 100:+.0f} %",
                "",
                "flat within 10 %: " + ("yes" if lf["flat_within_10pct"] and uf["flat_within_10pct"] else "NO"),
            ]
        )
    lines.append(
        harness.format_table(["store", "live sessions", "Load us", "Update us", ">floor us", "space"], rows, "lrrrrl")
    )
    redis_r = results.get("redis")
    if redis_r:
        h = redis_r["session_hash"]
        lines.append(
            f"\nRedis: one session hash (cart of 3 items, logged in; {h['payload_bytes']} B of values, {h['fields']} "
            f"fields, {h['encoding']}): MEMORY USAGE {h['memory_usage_bytes']} B; a one-session user index: "
            f"{redis_r.get('user_index_bytes_one_session', '?')} B"
        )
    rows = []
    for kind in ("redis", "sqlite"):
        r = results.get(kind)
        if not r:
            continue
        for row in r["per_user"]:
            slow = "-"
            if "revoke_all_redis" in row:
                a, b = row["sessions_of_redis"], row["revoke_all_redis"]
                slow = (
                    f"{a['max_us']} us ({a['max_command']}) / {b['max_us']} us ({b['max_command']}); "
                    f">1ms: {a['over_1ms'] + b['over_1ms']}"
                )
            rows.append(
                [kind, f"{row['sessions']:,}", f"{row['sessions_of_ms']:.2f}", f"{row['revoke_all_ms']:.2f}", slow]
            )
    lines.append("")
    lines.append(
        harness.format_table(
            ["store", "user's sessions", "SessionsOf ms", "RevokeAll ms", "longest Redis command (list / revoke)"],
            rows,
            "lrrrl",
        )
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=1_000_000, help="largest population (default 1,000,000)")
    parser.add_argument("--max-user", type=int, default=10_000, help="largest per-user count (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1k and 10k sessions; users of 1, 100, 1k sessions")
    parser.add_argument("--ops", type=int, help="timed operations per chunk (default 1000, quick 300)")
    parser.add_argument("--reps", type=int, help="interleaved chunks per size (default 5, quick 3)")
    parser.add_argument("--stores", default="redis,sqlite")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    sizes = sizes_up_to(args.max, args.quick)
    users = [u for u in ((1, 100, 1_000) if args.quick else (1, 100, 10_000)) if u <= args.max_user]
    n, reps = args.ops or (300 if args.quick else 1000), args.reps or (3 if args.quick else 5)
    started = time.perf_counter()
    machine.pin(machine.SERVER_CPU)
    results: dict[str, Any] = {"benchmark": "scale", "machine": machine.machine_info()}
    results["settings"] = {"sizes": sizes, "user_sizes": users, "ops_per_chunk": n, "reps": reps}
    extra = ["--slowlog-log-slower-than", str(SLOW_US), "--maxmemory", "0"]
    with harness.PrivateRedis(extra_args=extra) as server, tempfile.TemporaryDirectory(prefix="scale-") as folder:
        if not server.private:
            raise SystemExit("benchmarks.scale needs its private redis-server: unset REDIS_URL")
        harness.announce(server)
        wanted = args.stores.split(",")
        if "redis" in wanted:
            results["redis"] = run_store("redis", server.url, sizes, users, n, reps, server.url)
        if "sqlite" in wanted:
            url = f"sqlite:///{folder}/sessions.db"
            results["sqlite"] = run_store("sqlite", url, sizes, users, n, reps, None)
        results["settings"]["redis_version"] = server.version()
    results["environment"] = harness.environment_info(("session_mw", "redis", "hiredis"), source_dirs=["session_mw"])
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(render(results))
    if not args.no_json:
        path = harness.write_json(
            args.json or RESULTS / ("scale-quick.json" if args.quick else "scale-latest.json"), results
        )
        print(f"\nwrote {path} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
