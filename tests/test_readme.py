"""Every Python sample and every CLI line of the README runs, and does what the text around it says.

The samples are read from README.md itself, so the docs cannot rot: each ```python block is
preceded by ``<!-- sample: NAME -->``, and each NAME has a check here that imports the block as
a module (in a fresh directory, on the default store unless it names one) and drives it over
its real interface. A block without a marker, or a marker without a check, fails the suite.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_BLOCK = re.compile(r"(?:<!-- sample: ([a-z-]+) -->\n)?```python\n(.*?)```", re.S)


def samples() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(README.read_text(encoding="utf-8")):
        name, code = match.group(1), match.group(2)
        assert name, f"a README python block has no '<!-- sample: NAME -->' marker:\n{code[:200]}"
        assert name not in found, f"two README samples are named {name}"
        found[name] = code
    return found


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory, and an environment without our settings: the sample's defaults apply."""
    monkeypatch.chdir(tmp_path)
    import os

    for name in [n for n in os.environ if n.startswith(("SESSION_MW_", "FLASK_"))]:
        monkeypatch.delenv(name)
    yield tmp_path


def load(name: str, directory: Path) -> ModuleType:
    path = directory / f"readme_{name.replace('-', '_')}.py"
    path.write_text(samples()[name], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module


def _session_cookie(response: httpx.Response) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith("__Host-id="))


def check_fastapi(directory: Path) -> None:
    app = load("fastapi", directory).app
    with TestClient(app, base_url="https://testserver") as client:
        r = client.post("/cart", params={"item": "apple"})
        assert r.status_code == 200 and r.json() == {"cart": ["apple"]}
        anonymous = client.cookies["__Host-id"]
        r = client.post("/login")
        assert r.status_code == 200 and "Max-Age=" in _session_cookie(r)  # remember: a persistent cookie
        assert client.cookies["__Host-id"] != anonymous
        assert client.post("/elevate").status_code == 200
        assert client.post("/cart", params={"item": "pear"}).json() == {"cart": ["apple", "pear"]}
        assert client.post("/logout-everywhere").json() == {"revoked": 1}
        assert client.post("/cart", params={"item": "fig"}).json() == {"cart": ["fig"]}  # a new session
        r = client.post("/logout")
        assert r.status_code == 200 and "Max-Age=0" in _session_cookie(r)
    assert (directory / ".session_mw" / "sessions.db").exists()  # the embedded default store


def check_flask(directory: Path) -> None:
    app = load("flask", directory).app
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="https://testserver") as client:
        r = client.post("/cart")
        assert r.status_code == 200 and r.json() == {"cart": ["apple"]}
        r = client.post("/login")
        assert r.status_code == 200 and r.json() == {"user": "alice"} and "Max-Age=" in _session_cookie(r)
        assert client.post("/cart").json() == {"cart": ["apple", "apple"]}  # the cart survived the login
        assert client.post("/logout-everywhere").json() == {"revoked": 1}
        r = client.post("/logout")
        assert r.status_code == 200
    assert (directory / ".session_mw" / "sessions.db").exists()


def check_flask_store_from_environment(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Flask sample's store is whatever the environment says (here memory://), nothing hard-coded."""
    monkeypatch.setenv("SESSION_MW_STORE_URL", "memory://")
    app = load("flask", directory).app
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="https://testserver") as client:
        assert client.post("/cart").json() == {"cart": ["apple"]}
    assert not (directory / ".session_mw").exists()


def check_wsgi(directory: Path) -> None:
    app = load("wsgi", directory).app
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="https://testserver") as client:
        assert client.get("/").text == "visit 1"
        assert client.get("/").text == "visit 2"


def check_starlette_shim(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "readme-secret")
    app = load("starlette-shim", directory).app
    with TestClient(app, base_url="https://testserver") as client:
        r = client.get("/")
        assert r.json() == {"visits": 1}
        header = _session_cookie(r)
        assert "Max-Age=3600" in header and "SameSite=Strict" in header and "Secure" in header
        assert client.get("/").json() == {"visits": 2}


def check_flask_session(directory: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    module = load("flask-session", directory)
    client = redis.Redis.from_url(redis_url)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=module.app), base_url="https://testserver") as browser:
            first = browser.get("/")
            assert first.json() == {"visits": 1} and "Max-Age=" in _session_cookie(first)  # SESSION_PERMANENT
            assert browser.get("/").json() == {"visits": 2}
        assert client.keys("shop:*")  # in that Redis, under SESSION_KEY_PREFIX
        assert not (directory / ".session_mw").exists()
    finally:
        for key in client.scan_iter("shop:*"):
            client.delete(key)
        client.close()
        module.app.config["SESSION_REDIS"].close()


def check_store_contract(directory: Path) -> None:
    path = directory / "test_my_store.py"
    path.write_text(samples()["store-contract"], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout) and "skipped" not in done.stdout


def _session_middleware(app: Any) -> Any:
    """The SessionMiddleware inside a Starlette app's middleware stack (built by its first request)."""
    from session_mw import SessionMiddleware

    layer = app.middleware_stack
    while not isinstance(layer, SessionMiddleware):
        layer = layer.app
    return layer


def _later(engine: Any, seconds: float) -> None:
    """The engine's clock moved on: what a session reads of time (authenticated_at) ages by ``seconds``."""
    engine.clock = lambda: time.time() + seconds


def check_recent_auth_fastapi(directory: Path) -> None:
    module = load("recent-auth-fastapi", directory)
    app = module.app
    with (
        TestClient(app, base_url="https://testserver") as phone,
        TestClient(app, base_url="https://testserver") as laptop,
    ):
        r = phone.post("/password")
        assert r.status_code == 401 and r.json() == {"detail": "Sign in first."}
        assert phone.post("/login").status_code == 200 and laptop.post("/login").status_code == 200
        assert phone.post("/password").json() == {"revoked": 1}  # the laptop's session ended
        assert laptop.post("/password").status_code == 401
        _later(_session_middleware(app).engine, 301)  # the login is now over 5 minutes old
        r = phone.post("/password")
        assert r.status_code == 403 and "confirm your password" in r.text and r.headers["cache-control"] == "no-store"
        before = phone.cookies["__Host-id"]
        assert phone.post("/confirm-password").status_code == 200
        assert phone.cookies["__Host-id"] != before  # reauthenticated(): a new token
        assert phone.post("/password").json() == {"revoked": 0}
        assert module.alerts == []
        module.DISABLED.add("alice")  # the account is locked: its session ends on its next request
        assert phone.post("/password").status_code == 401
    [event] = module.alerts
    assert event.kind == "revoked_by_admin" and event.user_id == "alice"
    assert event.session is not None and re.fullmatch(r"[0-9a-f]{24}", event.session)  # a keyed hash, not the token
    assert before not in repr(event)


def check_recent_auth_flask(directory: Path) -> None:
    app = load("recent-auth-flask", directory).app
    transport = httpx.WSGITransport(app=app)
    with (
        httpx.Client(transport=transport, base_url="https://testserver") as phone,
        httpx.Client(transport=transport, base_url="https://testserver") as laptop,
    ):
        assert phone.post("/password").status_code == 401
        assert phone.post("/login").json() == {"user": "alice"} and laptop.post("/login").status_code == 200
        assert phone.post("/password").json() == {"revoked": 1}
        assert laptop.post("/password").status_code == 401
        _later(app.extensions["session_mw"].engine, 301)
        r = phone.post("/password")
        assert r.status_code == 403 and r.text == "This action needs you to confirm your password again.\n"
        assert r.headers["content-type"].startswith("text/plain") and r.headers["cache-control"] == "no-store"


def check_admin_sessions(directory: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = load("admin-sessions", directory).app
    with (
        TestClient(app, base_url="https://testserver") as root,
        TestClient(app, base_url="https://testserver") as phone,
        TestClient(app, base_url="https://testserver") as laptop,
    ):
        assert root.post("/login/root").status_code == 200
        assert phone.post("/login/alice").status_code == 200 and laptop.post("/login/alice").status_code == 200
        r = phone.get("/admin/users/alice/sessions")
        assert r.status_code == 403 and r.json() == {"detail": "Operators only."}  # the app's own gate
        assert phone.post("/admin/users/root/logout").status_code == 403
        listed = root.get("/admin/users/alice/sessions").json()
        assert len(listed) == 2 and not any(row["current"] for row in listed)  # alice's, not root's
        caplog.set_level("INFO", logger="session_mw.security")
        assert root.post("/admin/users/alice/logout").json() == {"revoked": 2}
        assert phone.get("/admin/users/alice/sessions").status_code == 403  # logged out: no user now
        assert root.get("/admin/users/alice/sessions").json() == []
        assert len(root.get("/admin/users/root/sessions").json()) == 1  # the operator's own is untouched
    ended = [r for r in caplog.records if getattr(r, "session_mw", {}).get("event") == "revoked_by_admin"]
    assert len(ended) == 2 and {r.session_mw["user_id"] for r in ended} == {"alice"}  # type: ignore[attr-defined]


CHECKS: dict[str, Callable[..., None]] = {
    "fastapi": check_fastapi,
    "flask": check_flask,
    "wsgi": check_wsgi,
    "starlette-shim": check_starlette_shim,
    "flask-session": check_flask_session,
    "store-contract": check_store_contract,
    "recent-auth-fastapi": check_recent_auth_fastapi,
    "recent-auth-flask": check_recent_auth_flask,
    "admin-sessions": check_admin_sessions,
}


def test_every_sample_has_a_check() -> None:
    assert sorted(samples()) == sorted(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_readme_sample_runs(name: str, workdir: Path, request: pytest.FixtureRequest) -> None:
    check = CHECKS[name]
    wanted: dict[str, Any] = {}
    for parameter in check.__code__.co_varnames[1 : check.__code__.co_argcount]:
        wanted[parameter] = request.getfixturevalue(parameter)
    check(workdir, **wanted)


def test_the_flask_sample_takes_its_store_from_the_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_flask_store_from_environment(workdir, monkeypatch)


def cli_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Operations") :]
    section = section[: section.index("\n## ", 1)]
    return [
        line.split("#", 1)[0].strip() for line in section.splitlines() if line.startswith("    python -m session_mw")
    ]


def test_every_cli_line_of_the_readme_runs_where_the_app_runs(workdir: Path, redis_url: str) -> None:
    """Each command of the Operations section, as written, in a directory where an app wrote its
    sessions to the default store (the Redis line on our own Redis): the exit codes the text gives."""
    import shlex

    from session_mw import SessionConfig
    from session_mw.stores import open_store
    from session_mw.stores.base import Close, Create, Lifetime
    from session_mw.testing import meta
    from session_mw.tokens import Digester, new_token
    from tests.test_cli import cli

    store = open_store(SessionConfig())  # the app's default: .session_mw/sessions.db here
    for user in ("alice", None):
        store.execute(
            Create(Digester()(new_token(32)), meta(time.time(), user), {"a": b"1"}, Lifetime(1800, 28800, 180))
        )
    store.execute(Close())
    expected = {
        "stats": 0,
        "list --user alice": 0,
        "revoke --user alice": 0,
        "revoke --session-digest 3f9a1c0b2e4d": 1,  # no such session
        "revoke --all --yes": 0,  # the anonymous one
        "gc": 0,
        "--store-url redis://10.0.0.5:6379/0 stats": 0,
    }
    lines = cli_lines()
    assert [line.removeprefix("python -m session_mw ") for line in lines] == list(expected)
    for line, code in zip(lines, expected.values(), strict=True):
        args = shlex.split(line)[3:]
        if "--store-url" in args:
            args[args.index("--store-url") + 1] = redis_url  # the example host, played by our Redis
        result = cli(*args, cwd=workdir)
        assert result.code == code, (line, result)
        assert "Traceback" not in result.out + result.err


def settings_rows() -> dict[str, str]:
    """Each setting named in a table row of the Settings section, with that row's default cell."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Settings") :]
    section = section[: section.index("\n## ", 1)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z0-9_]+)`", cells[0]):
            assert name not in rows, f"the setting {name} has two rows in the Settings section"
            rows[name] = cells[1]
    return rows


def _shown_defaults(value: object) -> set[str]:
    """How the Settings table may spell a default: `true`, `1800`, `2.0`, `X-CSRF-Token`."""
    if isinstance(value, bool):
        return {f"`{str(value).lower()}`"}
    if isinstance(value, float):
        return {f"`{value:g}`", f"`{value!r}`"}
    return {f"`{value}`"}


def test_every_setting_is_in_the_settings_section_with_its_default() -> None:
    import dataclasses

    from session_mw import SessionConfig

    rows = settings_rows()
    fields = {f.name: f for f in dataclasses.fields(SessionConfig)}
    assert sorted(set(fields) - set(rows)) == [], "settings missing from the README's Settings tables"
    assert sorted(set(rows) - set(fields)) == [], "the README's Settings tables name settings that do not exist"
    for name, f in fields.items():
        cell = rows[name]
        if f.default is None:
            assert cell in ("unset", "idle / 10"), (name, cell)
        elif f.default == ():
            assert cell == "none", (name, cell)
        else:
            assert any(shown in cell for shown in _shown_defaults(f.default)), (name, f.default, cell)
