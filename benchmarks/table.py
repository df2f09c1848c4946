"""Markdown tables for the READMEs, from the JSON of ``benchmarks.run`` and ``benchmarks.scale``.

python -m benchmarks.table [benchmarks/results/run-latest.json] [scale-latest.json] [staleness-latest.json]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = {"starlette": "Starlette", "flask": "Flask"}


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    env = results.get("environment", {})
    others = m.get("competing_processes", [])
    return (
        f"Machine: {m['nproc']} vCPUs ({m['cpu_model']}), Python {env.get('python', '?')}, "
        f"redis-server {results.get('settings', {}).get('redis_version', '?')}; pinned to CPU "
        f"{','.join(map(str, m['pinned_to_cpus']))}"
        + (f", event loop {m['event_loop']}" if m.get("event_loop") else "")
        + f"; load average at start {m['loadavg'][0]:.2f}"
        + (f", {len(others)} processes of others' test runs competing" if others else ", no competing processes")
        + f"; commit {env.get('git_commit', '?')}."
    )


def run_tables(results: dict[str, Any]) -> str:
    floor = results["floor"]
    lines = [machine_line(results), ""]
    lines.append(
        "Floor (raw redis-py `GET`, same run): "
        + ", ".join(f"{k} {v['median_us']:.0f} µs" for k, v in floor.items())
        + "."
    )
    lines.append("")
    lines.append(
        "| door | path | ours | peer | ours µs | peer µs | ours/peer | "
        "round trips (ours/peer) | ours µs beyond floor | peer µs beyond floor |"
    )
    lines.append("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for h in results["headline"]:
        lines.append(
            f"| {NAMES[h['framework']]} | {h['scenario']} | {h['ours']} | {h['peer']} | {h['ours_us']:.0f} | "
            f"{h['peer_us']:.0f} | {h['ratio']:.2f}x | {h['ours_round_trips']}/{h['peer_round_trips']} | "
            f"{h['ours_beyond_floor_us']:.0f} | {h['peer_beyond_floor_us']:.0f} |"
        )
    http = results.get("http")
    if http:
        lines.append("")
        lines.append(
            "| HTTP server | path | ours | peer | ours req/s | "
            "peer req/s | ours/peer | p50 ms (ours/peer) | p99 ms (ours/peer) |"
        )
        lines.append("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        from .bench_http import PAIRS, PATHS

        for kind, ours, peer in PAIRS:
            for path in PATHS:
                a, b = http["cases"][kind][path][ours], http["cases"][kind][path][peer]
                lines.append(
                    f"| {kind} (1 worker) | {path} | {ours} | {peer} | {a['rps']:.0f} | {b['rps']:.0f} | "
                    f"{http['ratios'][kind][f'{path} {ours} / {peer}']:.2f}x | {a['p50_ms']:.2f}/{b['p50_ms']:.2f} | "
                    f"{a['p99_ms']:.2f}/{b['p99_ms']:.2f} |"
                )
        lines.append("")
        lines.append(
            f"HTTP: {http['load_generator']} on CPU {http['load_cpu']}, server and redis-server on CPU "
            f"{http['server_cpu']}, {http['rounds']} rounds of {http['seconds_per_case']:g} s per case, median req/s."
        )
    return "\n".join(lines)


def scale_tables(results: dict[str, Any]) -> str:
    lines = [machine_line(results), ""]
    lines.append(
        "| store | live sessions | Load µs | Update µs | Load/Update µs beyond the GET floor | space per session |"
    )
    lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for kind in ("redis", "sqlite"):
        r = results.get(kind)
        if not r:
            continue
        for row in r["sizes"]:
            space = (
                f"{row['used_memory_per_session']} B (`used_memory` growth)"
                if kind == "redis"
                else f"{row['file_bytes_per_session']} B (file)"
            )
            beyond = (
                f"{row['load_beyond_floor_us']:.0f} / {row['update_beyond_floor_us']:.0f}" if kind == "redis" else "-"
            )
            lines.append(
                f"| {kind} | {row['sessions']:,} | {row['load_us']:.0f} | {row['update_us']:.0f} | {beyond} | {space} |"
            )
        lf, uf = r["load_flatness"], r["update_flatness"]
        flat = "yes" if lf["flat_within_10pct"] and uf["flat_within_10pct"] else "**no**"
        lines.append(
            f"| {kind} | largest change vs 1k | "
            f"{lf['worst_change'] * 100:.0f} % | {uf['worst_change'] * 100:.0f} % | | flat within ±10 %: {flat} |"
        )
    redis_r = results.get("redis")
    if redis_r:
        h = redis_r["session_hash"]
        lines.append("")
        lines.append(
            f"Redis, one session (logged in, a cart of 3 items and a CSRF token: {h['payload_bytes']} B of values, "
            f"{h['fields']} hash fields, encoding {h['encoding']}): `MEMORY USAGE` {h['memory_usage_bytes']} B; "
            f"a user index holding one session: {redis_r.get('user_index_bytes_one_session', '?')} B."
        )
    lines.append("")
    lines.append(
        "| store | user's sessions | SessionsOf ms | RevokeAll ms | "
        "longest Redis command: list / revoke | commands over 1 ms |"
    )
    lines.append("| --- | ---: | ---: | ---: | --- | ---: |")
    for kind in ("redis", "sqlite"):
        r = results.get(kind)
        if not r:
            continue
        for row in r["per_user"]:
            if "revoke_all_redis" in row:
                a, b = row["sessions_of_redis"], row["revoke_all_redis"]
                slow = f"{a['max_us']} µs ({a['max_command']}) / {b['max_us']} µs ({b['max_command']})"
                over = str(a["over_1ms"] + b["over_1ms"])
            else:
                slow, over = "-", "-"
            lines.append(
                f"| {kind} | {row['sessions']:,} | {row['sessions_of_ms']:.2f} | "
                f"{row['revoke_all_ms']:.1f} | {slow} | {over} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or [
        RESULTS / "run-latest.json",
        RESULTS / "scale-latest.json",
        RESULTS / "staleness-latest.json",
    ]
    for path in paths:
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        kind = results.get("benchmark")
        if kind == "staleness":
            from .staleness import render

            print(render(results))
        else:
            print(run_tables(results) if kind == "run" else scale_tables(results))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
