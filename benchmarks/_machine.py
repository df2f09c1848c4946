"""Where a benchmark runs: CPU pinning, the event loop, the machine and who else is using it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The CPU the benchmark process, its private redis-server and the HTTP servers share.
SERVER_CPU = 0
#: The CPU of the HTTP load generator.
LOAD_CPU = 1

#: Processes that would compete for the CPUs if someone else left them running.
COMPETITORS = ("redis-server", "uvicorn", "gunicorn", "pytest", "wrk")


def pin(cpu: int = SERVER_CPU) -> list[int]:
    """Pin this process (and every process it starts from now on) to ``cpu``; the CPUs it now runs on."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    if cpu not in os.sched_getaffinity(0) and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    os.sched_setaffinity(0, {cpu})
    return sorted(os.sched_getaffinity(0))


def affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pinned_to(cpu: int) -> Callable[[], None]:
    """A ``preexec_fn`` that pins a child process to ``cpu`` (the load generator's)."""

    def preexec() -> None:
        os.sched_setaffinity(0, {cpu})

    return preexec


def new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop's loop when uvloop is installed (what uvicorn picks then), else asyncio's; and which."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio (stdlib; uvloop is not installed)"
    from importlib.metadata import version

    return uvloop.new_event_loop(), f"uvloop {version('uvloop')}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def competitors(mine: Sequence[int] = ()) -> list[str]:
    """``ps`` lines of competing processes that this run did not start (others' tests, stale servers)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    me = os.getpid()
    found = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, ppid = int(parts[0]), int(parts[1])
        if pid == me or ppid == me or pid in mine:
            continue
        if any(name in parts[3] for name in COMPETITORS) and "ps -eo" not in parts[3]:
            found.append(" ".join(parts[3].split())[:120] + f" (pid {pid}, {parts[2]} % CPU)")
    return found


def machine_info(loop_name: str | None = None) -> dict[str, Any]:
    """The machine, the pinning and the competition, for the JSON and the printed header."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "pinned_to_cpus": affinity(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "competing_processes": competitors(),
    }
    if loop_name is not None:
        info["event_loop"] = loop_name
    return info


def describe(info: dict[str, Any]) -> str:
    cpus = ",".join(map(str, info["pinned_to_cpus"])) or "?"
    lines = [
        f"machine: {info['nproc']} CPUs, {info['cpu_model']}; this process and its redis-server pinned to CPU {cpus}"
    ]
    if info.get("event_loop"):
        lines.append(f"event loop: {info['event_loop']}")
    others = info["competing_processes"]
    lines.append(
        f"load average {', '.join(f'{x:.2f}' for x in info['loadavg'] or [])}; "
        + (f"{len(others)} competing processes not started by this run" if others else "no competing processes")
    )
    return "\n".join(lines)
