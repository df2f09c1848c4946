"""Without an extra installed, importing what needs it names the extra; the core needs none.

Each case runs in a fresh interpreter where the framework is made unimportable
(``sys.modules[name] = None``), as if it had never been installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("flask", "fastapi", "starlette", "anyio", "redis", "orjson", "itsdangerous")


def without(modules: tuple[str, ...], code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SESSION_MW_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{blocked}{code}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("missing", "module", "message"),
    [
        ("flask", "session_mw.contrib.flask", "session_mw.contrib.flask needs Flask: pip install 'session_mw[flask]'"),
        (
            "flask",
            "session_mw.contrib.flask_serializer",
            "session_mw.contrib.flask_serializer needs Flask: pip install 'session_mw[flask]'",
        ),
        (
            "fastapi",
            "session_mw.contrib.fastapi",
            "session_mw.contrib.fastapi needs FastAPI: pip install 'session_mw[fastapi]'",
        ),
        ("redis", "session_mw.stores.redis", "the Redis store needs the redis extra: pip install 'session_mw[redis]'"),
    ],
)
def test_importing_without_the_extra_names_it(missing: str, module: str, message: str) -> None:
    result = without((missing,), f"import {module}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"ImportError: {message}"


def test_the_asgi_door_on_sqlite_without_anyio_fails_at_start_up_naming_it(tmp_path: Path) -> None:
    code = (
        "from session_mw import SessionConfig, SessionMiddleware\n"
        "async def app(scope, receive, send): pass\n"
        "SessionMiddleware(app, SessionConfig(store_url='sqlite:///s.db'))\n"
    )
    result = without(("anyio",), code, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: the ASGI door runs SQLiteStore in worker threads with anyio: "
        "pip install 'session_mw[fastapi]' (or just anyio)"
    )


def test_the_core_and_both_doors_need_no_extra(tmp_path: Path) -> None:
    code = (
        "import asyncio\n"
        "import session_mw, session_mw.asgi, session_mw.wsgi, session_mw.cli, session_mw.compat.starlette\n"
        "from session_mw import SessionConfig, SessionMiddleware\n"
        "from session_mw.wsgi import WSGISessionMiddleware\n"
        "async def app(scope, receive, send): pass\n"
        "SessionMiddleware(app, SessionConfig(store_url='memory://'))\n"
        "WSGISessionMiddleware(lambda environ, start_response: [], SessionConfig(store_url='sqlite:///s.db'))\n"
        "print('ok')\n"
    )
    result = without(EXTRAS, code, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
