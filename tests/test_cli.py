"""``python -m session_mw`` against a SQLite file and a real Redis: in-process (``main``), plus one real process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from session_mw import SessionConfig
from session_mw.cli import main
from session_mw.stores import open_store
from session_mw.stores.base import AcquireLock, Check, Close, Create, Lifetime, SessionsOf, Store
from session_mw.stores.redis import RedisStore
from session_mw.stores.sqlite import SQLiteStore
from session_mw.testing import meta
from session_mw.tokens import Digester, new_token
from session_mw.wsgi import WSGISessionMiddleware, session_of
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
LIFE = Lifetime(600.0, 3600.0, 60.0)


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """The CLI's ``main`` in this process, with its own environment, streams and working directory."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("SESSION_MW_")}
    environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):  # argparse writes there
            try:
                code = main(list(args), environ=environ, out=out, err=err)
            except SystemExit as exit:
                code = int(exit.code or 0)
    finally:
        os.chdir(here)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return Result(code, out.getvalue(), err.getvalue())


def cli_process(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """The CLI as a real ``python -m session_mw`` process."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("SESSION_MW_")}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "session_mw", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line_error(result: Result, code: int) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


@dataclass
class Population:
    """Who is in the store: digests by user; tokens are never kept."""

    alice: list[str]
    bob: str
    anonymous: str


def populate(store: Store) -> Population:
    digest = Digester()

    def add(user: str | None, agent: str) -> str:
        key = digest(new_token(32))
        store.execute(Create(key, meta(time.time(), user=user, user_agent=agent), {"cart": b"[1]"}, LIFE))
        return key

    return Population(
        alice=[add("alice", "Firefox/126"), add("alice", "Safari/17")],
        bob=add("bob", "curl/8"),
        anonymous=add(None, "Edge/120"),
    )


def unique_prefix(target: str, others: list[str], length: int = 12) -> str:
    prefix = target[:length]
    assert all(not o.startswith(prefix) for o in others)  # 48 random bits: never collides in practice
    return prefix


# -- SQLite -------------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[str, SQLiteStore, Population]]:
    path = tmp_path / "sessions.db"
    store = SQLiteStore(path)
    people = populate(store)
    yield f"sqlite:///{path}", store, people
    store.execute(Close())


def test_sqlite_stats(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, _, _ = sqlite_db
    result = cli("stats", "--store-url", url)
    assert result.code == 0, result
    assert "live sessions: 4" in result.out and "users: 2" in result.out and "bytes" in result.out
    data = json.loads(cli("--store-url", url, "stats", "--json").out)  # the option may come first too
    assert data["backend"] == "sqlite" and data["sessions"] == 4 and data["users"] == 2
    assert data["size_bytes"] > 0


def test_the_store_url_may_come_from_the_environment(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, _, _ = sqlite_db
    result = cli("stats", "--json", env={"SESSION_MW_STORE_URL": url})
    assert result.code == 0 and json.loads(result.out)["sessions"] == 4


def test_a_relative_sqlite_url_is_resolved_from_the_working_directory(
    sqlite_db: tuple[str, SQLiteStore, Population],
) -> None:
    _, store, _ = sqlite_db
    path = Path(store.path)
    result = cli("stats", "--json", "--store-url", f"sqlite:///{path.name}", cwd=path.parent)
    assert result.code == 0 and json.loads(result.out)["sessions"] == 4


def test_sqlite_list(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, _, people = sqlite_db
    result = cli("list", "--user", "alice", "--store-url", url)
    assert result.code == 0, result
    lines = result.out.strip().splitlines()
    assert lines[0].split()[:2] == ["DIGEST", "PREFIX"]
    assert len(lines) == 3
    for key in people.alice:
        assert key[:16] in result.out and key not in result.out  # prefixes only
    assert "Firefox/126" in result.out and "Safari/17" in result.out
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result.out)

    rows = json.loads(cli("list", "--user", "alice", "--json", "--store-url", url).out)
    assert sorted(r["digest_prefix"] for r in rows) == sorted(k[:16] for k in people.alice)
    assert {r["user_agent"] for r in rows} == {"Firefox/126", "Safari/17"}
    assert all(r["created_at"].endswith("Z") for r in rows)

    empty_json = cli("list", "--user", "nobody", "--json", "--store-url", url)
    assert empty_json.code == 1 and json.loads(empty_json.out) == []
    empty = cli("list", "--user", "nobody", "--store-url", url)
    assert empty.code == 1 and empty.out == "" and "no live sessions" in empty.err


def test_sqlite_revoke_user(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, store, people = sqlite_db
    result = cli("revoke", "--user", "alice", "--store-url", url)
    assert result.code == 0 and "revoked 2 sessions" in result.out
    assert store.execute(SessionsOf("alice", LIFE)) == []
    assert [k for k, _ in store.execute(SessionsOf("bob", LIFE))] == [people.bob]
    assert store.stats()["sessions"] == 2
    again = cli("revoke", "--user", "alice", "--store-url", url)
    assert again.code == 1 and again.out == "" and "no live sessions for user 'alice'" in again.err


def test_sqlite_revoke_by_digest_prefix(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, store, people = sqlite_db
    prefix = unique_prefix(people.bob, [*people.alice, people.anonymous])
    result = cli("revoke", "--session-digest", prefix.upper(), "--store-url", url)
    assert result.code == 0 and people.bob[:16] in result.out, result
    assert store.execute(SessionsOf("bob", LIFE)) == []
    assert store.stats()["sessions"] == 3

    full = cli("revoke", "--session-digest", people.anonymous, "--store-url", url)
    assert full.code == 0 and store.stats()["sessions"] == 2

    again = cli("revoke", "--session-digest", prefix, "--store-url", url)
    assert again.code == 1 and "no live session" in again.err


def test_sqlite_revoke_refuses_short_malformed_or_ambiguous_digests(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    for n in (1, 2):
        store.execute(Create(f"{n:064x}", meta(time.time()), {"a": b"1"}, LIFE))
    url = f"sqlite:///{tmp_path / 's.db'}"
    for bad in ("abc", "0" * 11, "z" * 64, "0" * 65):
        refused = cli("revoke", "--session-digest", bad, "--store-url", url)
        assert "64-character hex digest" in one_line_error(refused, 2)
    ambiguous = cli("revoke", "--session-digest", "0" * 12, "--store-url", url)
    assert "more than one session" in one_line_error(ambiguous, 2)
    assert store.stats()["sessions"] == 2
    store.execute(Close())


def test_sqlite_revoke_all_needs_yes_then_ends_every_session(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, store, _ = sqlite_db
    past = time.time() - 10
    with sqlite3.connect(store.path) as conn:  # expired rows go too, uncounted
        conn.execute(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen, absolute_deadline, expires_at, "
            "user_agent, remember, format, public_id) VALUES (?, 'ghost', ?, ?, ?, ?, '', 0, 2, '')",
            ("f" * 64, *[past] * 4),
        )
    conn.close()
    asked = cli("revoke", "--all", "--store-url", url)
    line = one_line_error(asked, 2)
    assert f"would end all 4 sessions in the SQLite store {store.path}: add --yes" in line
    assert store.stats()["sessions"] == 4

    result = cli("revoke", "--all", "--yes", "--store-url", url)
    assert result.code == 0, result
    assert result.out.strip() == f"revoked all 4 sessions in the SQLite store {store.path}"
    assert store.stats() | {"file_bytes": 0, "wal_bytes": 0} == {
        "path": store.path,
        "sessions": 0,
        "users": 0,
        "expired": 0,
        "file_bytes": 0,
        "wal_bytes": 0,
    }
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM session_values").fetchone() == (0,)
    conn.close()
    again = cli("revoke", "--all", "--yes", "--store-url", url)
    assert again.code == 1 and again.out == "" and "no live sessions in the SQLite store" in again.err


def test_sqlite_revoke_all_goes_in_batches_with_progress(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    now = time.time()
    with sqlite3.connect(store.path) as conn:
        store.execute(Check())
        conn.executemany(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen, absolute_deadline, expires_at, "
            "user_agent, remember, format, public_id) VALUES (?, NULL, ?, ?, ?, ?, '', 0, 2, '')",
            [(f"{n:064x}", now, now, now + 3600, now + 600) for n in range(1_100)],
        )
    conn.close()
    result = cli("revoke", "--all", "--yes", "--store-url", f"sqlite:///{store.path}")
    assert result.code == 0 and "revoked all 1100 sessions" in result.out, result
    assert result.err.splitlines() == [
        "revoked 500 sessions...",
        "revoked 1000 sessions...",
        "revoked 1100 sessions...",
    ]
    assert store.stats()["sessions"] == 0
    store.execute(Close())


def test_revoke_needs_exactly_one_target(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, _, people = sqlite_db
    assert cli("revoke", "--store-url", url).code == 2
    assert cli("revoke", "--user", "alice", "--session-digest", people.bob, "--store-url", url).code == 2
    assert cli("revoke", "--all", "--user", "alice", "--yes", "--store-url", url).code == 2
    assert cli("revoke", "--yes", "--store-url", url).code == 2


def test_sqlite_gc_reports_progress(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, store, _ = sqlite_db
    past = time.time() - 10
    with sqlite3.connect(store.path) as conn:
        conn.executemany(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen, absolute_deadline, expires_at, "
            "user_agent, remember, format, public_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 2, '')",
            [(f"{n:064x}", "ghost", past, past, past, past, "", 0) for n in range(1_200)],
        )
    conn.close()
    result = cli("gc", "--store-url", url)
    assert result.code == 0, result
    assert result.err.splitlines() == [
        "collected 500 sessions...",
        "collected 1000 sessions...",
        "collected 1200 sessions...",
    ]
    assert result.out.strip() == "removed 1200 expired sessions"
    assert store.stats()["sessions"] == 4 and store.stats()["expired"] == 0
    assert cli("gc", "--store-url", url).out.strip() == "removed 0 expired sessions"


def test_a_file_from_a_newer_version_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = path.read_bytes()
    line = one_line_error(cli("stats", "--store-url", f"sqlite:///{path}"), 2)
    assert "created by a newer session_mw" in line
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store-url", "postgres://db/sessions"], "store_url must start with"),
        (["--store-url", "sqlite://"], "every process shares"),
        (["--store-url", "sqlite:///:memory:"], "every process shares"),
        (["--store-url", "memory://"], "nothing to manage"),
    ],
)
def test_bad_store_urls_exit_2_with_one_line(args: list[str], message: str) -> None:
    assert message in one_line_error(cli("stats", *args), 2)


@pytest.mark.parametrize(
    "command", [["stats"], ["list", "--user", "alice"], ["revoke", "--user", "alice"], ["revoke", "--all"], ["gc"]]
)
def test_a_sqlite_file_that_does_not_exist_is_refused_not_created(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere" / "sessions.db"
    line = one_line_error(cli(*command, "--store-url", f"sqlite:///{missing}"), 2)
    assert f"no session store at {missing} (the file does not exist)" in line
    assert not missing.parent.exists()
    # the default store, resolved from the working directory as the app resolves it
    line = one_line_error(cli(*command, cwd=tmp_path), 2)
    assert f"no session store at {tmp_path / '.session_mw' / 'sessions.db'}" in line
    assert list(tmp_path.iterdir()) == []


def _app_that_logs_in(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    session_of(environ).user_id = "alice"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_without_store_url_the_cli_manages_the_apps_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    monkeypatch.chdir(app_dir)
    app = WSGISessionMiddleware(_app_that_logs_in, SessionConfig())  # the app's default store_url
    for agent in ("Firefox/126", "Safari/17"):
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="https://shop.test") as browser:
            assert browser.get("/", headers={"user-agent": agent}).status_code == 200
    app.store.execute(Close())
    monkeypatch.chdir(tmp_path)
    assert (app_dir / ".session_mw" / "sessions.db").is_file()

    stats = cli_process("stats", "--json", cwd=app_dir)
    assert stats.code == 0 and json.loads(stats.out)["sessions"] == 2, stats
    listing = cli_process("list", "--user", "alice", cwd=app_dir)
    assert listing.code == 0 and "Firefox/126" in listing.out and "Safari/17" in listing.out, listing
    assert cli_process("gc", cwd=app_dir).out.strip() == "removed 0 expired sessions"
    revoked = cli_process("revoke", "--user", "alice", cwd=app_dir)
    assert revoked.code == 0 and "revoked 2 sessions" in revoked.out, revoked
    assert cli_process("list", "--user", "alice", cwd=app_dir).code == 1
    # SESSION_MW_STORE_URL moves both the app and the CLI
    elsewhere = cli_process(
        "stats",
        "--json",
        cwd=tmp_path,
        env={"SESSION_MW_STORE_URL": f"sqlite:///{app_dir.name}/.session_mw/sessions.db"},
    )
    assert elsewhere.code == 0 and json.loads(elsewhere.out)["sessions"] == 0, elsewhere


def test_a_bad_setting_in_the_environment_exits_2(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, _, _ = sqlite_db
    line = one_line_error(cli("stats", "--store-url", url, env={"SESSION_MW_IDLE_TIMEOUT": "soon"}), 2)
    assert "SESSION_MW_IDLE_TIMEOUT" in line


def test_python_dash_m_runs_the_cli_as_a_process(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").execute(Check())
    result = cli_process("stats", "--store-url", f"sqlite:///{tmp_path / 's.db'}")
    assert result.code == 0 and "live sessions: 0" in result.out, result
    missing = cli_process("stats", "--store-url", f"sqlite:///{tmp_path / 'typo.db'}")
    assert missing.code == 2 and "no session store at" in missing.err and not (tmp_path / "typo.db").exists()
    assert cli_process("explode").code == 2


def test_usage_errors_exit_2() -> None:
    assert cli().code == 2
    assert cli("explode").code == 2
    assert cli("list").code == 2  # --user is required
    help_ = cli("--help")
    assert help_.code == 0 and "stats" in help_.out and "exit codes" in help_.out


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture
def redis_pop(deployment_url: str, key_prefix: str) -> Iterator[tuple[list[str], RedisStore, Population]]:
    """On one Redis node, a Sentinel service, a Cluster (scanned on every primary)."""
    url = deployment_url
    store = open_store(SessionConfig(store_url=url, key_prefix=key_prefix))
    assert isinstance(store, RedisStore)
    people = populate(store)
    yield ["--store-url", url, "--key-prefix", key_prefix], store, people
    store.execute(Close())


def test_redis_stats(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, _, _ = redis_pop
    result = cli("stats", *opts)
    assert result.code == 0, result
    assert "live sessions: 4" in result.out and "users: 2" in result.out
    data = json.loads(cli("stats", "--json", *opts).out)
    assert data["backend"] == "redis" and (data["sessions"], data["users"]) == (4, 2)
    assert data["size_bytes"] > 0


def test_redis_stats_escape_glob_characters_in_the_prefix(redis_url: str, key_prefix: str) -> None:
    prefix = key_prefix + "[a]*?"
    store = RedisStore(redis.Redis.from_url(redis_url), prefix)
    populate(store)
    sibling = RedisStore(redis.Redis.from_url(redis_url), key_prefix + "a!?")  # matched by the glob unescaped
    populate(sibling)
    data = json.loads(cli("stats", "--json", "--store-url", redis_url, "--key-prefix", prefix).out)
    assert (data["sessions"], data["users"]) == (4, 2)
    store.execute(Close())
    sibling.execute(Close())


def test_redis_prefix_from_the_environment(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, store, _ = redis_pop
    env = {"SESSION_MW_STORE_URL": opts[1], "SESSION_MW_KEY_PREFIX": store.prefix}
    assert json.loads(cli("stats", "--json", env=env).out)["sessions"] == 4


def test_redis_list(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, _, people = redis_pop
    result = cli("list", "--user", "alice", *opts)
    assert result.code == 0, result
    for key in people.alice:
        assert key[:16] in result.out and key not in result.out
    rows = json.loads(cli("list", "--user", "alice", "--json", *opts).out)
    assert sorted(r["digest_prefix"] for r in rows) == sorted(k[:16] for k in people.alice)


def test_redis_revoke_user_and_digest(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, store, people = redis_pop
    result = cli("revoke", "--user", "alice", *opts)
    assert result.code == 0 and "revoked 2 sessions" in result.out
    assert store.execute(SessionsOf("alice", LIFE)) == []

    prefix = unique_prefix(people.bob, [*people.alice, people.anonymous])
    result = cli("revoke", "--session-digest", prefix, *opts)
    assert result.code == 0 and people.bob[:16] in result.out, result
    assert store.execute(SessionsOf("bob", LIFE)) == []  # the per-user index went with it

    assert cli("revoke", "--session-digest", people.anonymous, *opts).code == 0
    assert json.loads(cli("stats", "--json", *opts).out)["sessions"] == 0
    assert cli("revoke", "--session-digest", people.anonymous, *opts).code == 1


def test_redis_revoke_all_deletes_only_the_stores_own_keys(redis_url: str, key_prefix: str) -> None:
    store = RedisStore(redis.Redis.from_url(redis_url), key_prefix + "[a]*")
    people = populate(store)
    assert store.execute(AcquireLock(people.bob, "worker", 60.0))
    sibling = RedisStore(redis.Redis.from_url(redis_url), key_prefix + "a!")  # the unescaped glob matches it
    populate(sibling)
    raw = redis.Redis.from_url(redis_url)
    raw.set(key_prefix + "[a]*cache", "another app's key under the same prefix")
    opts = ["--store-url", redis_url, "--key-prefix", store.prefix]
    try:
        line = one_line_error(cli("revoke", "--all", *opts), 2)
        assert "would end all 4 sessions in the Redis store at 127.0.0.1:" in line and "add --yes" in line
        assert len(list(raw.scan_iter(match=key_prefix + "*"))) == 2 * (4 + 2) + 1 + 1  # sessions, users, lock, other

        result = cli("revoke", "--all", "--yes", *opts)
        assert result.code == 0 and result.out.startswith("revoked all 4 sessions in the Redis store at"), result
        left = {k.decode() for k in raw.scan_iter(match=key_prefix + "*")}
        assert {k for k in left if not k.startswith(sibling.prefix)} == {key_prefix + "[a]*cache"}
        assert len([k for k in left if k.startswith(sibling.prefix)]) == 4 + 2  # the sibling is whole
        assert cli("revoke", "--all", "--yes", *opts).code == 1
    finally:
        raw.close()
        store.execute(Close())
        sibling.execute(Close())


def test_redis_gc_has_nothing_to_do(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, _, _ = redis_pop
    result = cli("gc", *opts)
    assert result.code == 0 and result.out.strip() == "nothing to do: Redis expires sessions itself"


@pytest.mark.parametrize("command", [["stats"], ["list", "--user", "alice"], ["revoke", "--user", "alice"]])
def test_unreachable_redis_exits_3(command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    line = one_line_error(cli(*command, "--store-url", url), 3)
    assert "store unavailable" in line and f"Redis at 127.0.0.1:{url.split(':')[2].split('/')[0]}" in line


# -- undecodable records: absent for the CLI too, never a traceback --------------------------


def test_sqlite_a_bad_record_never_breaks_list_revoke_or_gc(sqlite_db: tuple[str, SQLiteStore, Population]) -> None:
    url, store, people = sqlite_db
    bad, good = people.alice
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE sessions SET created_at = 'soon' WHERE digest = ?", (bad,))
    conn.close()
    rows = json.loads(cli("list", "--user", "alice", "--json", "--store-url", url).out)
    assert [r["digest_prefix"] for r in rows] == [good[:16]]
    result = cli("revoke", "--user", "alice", "--store-url", url)
    assert result.code == 0 and "revoked 1 session" in result.out
    assert cli("gc", "--store-url", url).code == 0
    assert store.execute(SessionsOf("alice", LIFE)) == []


def test_redis_a_bad_record_never_breaks_list_or_revoke(redis_pop: tuple[list[str], RedisStore, Population]) -> None:
    opts, store, people = redis_pop
    bad, good = people.alice
    raw = store.client  # the deployment's own client: a node, a Sentinel's primary, a Cluster
    raw.delete(f"{store.prefix}s:{bad}")
    raw.set(f"{store.prefix}s:{bad}", "not a hash")
    rows = json.loads(cli("list", "--user", "alice", "--json", *opts).out)
    assert [r["digest_prefix"] for r in rows] == [good[:16]]
    result = cli("revoke", "--user", "alice", *opts)
    assert result.code == 0 and "revoked 1 session" in result.out


def test_the_cli_works_on_a_store_encrypted_at_rest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sealed.db"
    secret = "s" * 32
    store = open_store(SessionConfig(store_url=url, encryption_keys=(secret,)))
    key = Digester()(new_token(32))
    store.execute(Create(key, meta(time.time(), "alice"), {"cart": b'["apple"]'}, LIFE))
    env = {"SESSION_MW_ENCRYPTION_KEYS": secret}
    listed = cli("list", "--user", "alice", "--store-url", url, env=env)
    assert listed.code == 0 and key[:16] in listed.out, listed
    revoked = cli("revoke", "--user", "alice", "--store-url", url, env=env)
    assert revoked.code == 0 and "revoked 1 session" in revoked.out, revoked
    assert store.execute(SessionsOf("alice", LIFE)) == []
    store.execute(Close())


def test_every_cli_revocation_is_a_security_event(
    sqlite_db: tuple[str, SQLiteStore, Population], caplog: pytest.LogCaptureFixture
) -> None:
    url, _, people = sqlite_db
    caplog.set_level("WARNING", logger="session_mw.security")
    assert cli("revoke", "--user", "alice", "--store-url", url).code == 0
    assert cli("revoke", "--session-digest", people.bob, "--store-url", url).code == 0
    assert cli("revoke", "--all", "--yes", "--store-url", url).code == 0
    events = [getattr(r, "session_mw") for r in caplog.records if hasattr(r, "session_mw")]
    kinds = [(e["event"], e["detail"]) for e in events]
    assert kinds.count(("revoked_by_admin", "revoked_all")) == 2  # alice's two sessions
    assert ("revoked_by_admin", "revoke --session-digest") in kinds
    assert any(kind == "revoked_by_admin" and detail.startswith("revoke --all") for kind, detail in kinds)
    shown = repr(caplog.records) + caplog.text
    assert all(key not in shown for key in [*people.alice, people.bob])
