"""The benchmark commands still run end to end (tiny settings, no timing claims)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")


def _run(*args: str) -> str:
    # a child process: the benchmarks pin themselves to one CPU, which must not stick to pytest
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=None)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_run_in_process_paths() -> None:
    args = ("--quick", "--rounds", "3", "--batch-ms", "1", "--count-requests", "5", "--no-http", "--no-json")
    out = _run("benchmarks.run", *args)
    assert "login" in out and "floor" in out


def test_scale() -> None:
    args = ("--quick", "--max", "1000", "--max-user", "10", "--ops", "20", "--reps", "1", "--no-json")
    out = _run("benchmarks.scale", *args)
    assert "SessionsOf" in out


def test_staleness() -> None:
    out = _run("benchmarks.staleness", "--changes", "6", "--no-json")
    assert "revoke" in out and "cached read" in out
