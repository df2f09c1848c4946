"""The SQLite store: the conformance suite on both faces, plus what only a file can get wrong."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_mw.errors import ConfigError, StoreError, StoreUnavailable
from session_mw.stores import Store
from session_mw.stores.base import Meta, Touch, Write
from session_mw.stores.sqlite import SCHEMA_VERSION, SQLiteStore, path_from_url
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import LockContract, StoreContract, SyncFromAsync, meta

IDLE = 600.0


def digest(n: int) -> str:
    return f"{n:064x}"


def touch(now: float | None = None, interval: float = 60.0) -> Touch:
    return Touch(time.time() if now is None else now, interval, IDLE)


def create(store: SQLiteStore, n: int, *, user: str | None = None, ttl: float = IDLE, **data: bytes) -> Meta:
    m = meta(user=user)
    assert store.write(Write("create", digest(n), m, ttl, set=data or {"a": b"1"}))
    return m


def raw_count(path: Path, table: str = "sessions") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


class TestSQLiteStore(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = SQLiteStore(tmp_path / "sessions.db")
        yield s
        s.close()


class TestSQLiteStoreAsyncFace(StoreContract, LockContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = SyncFromAsync(AsyncFromSync(SQLiteStore(tmp_path / "sessions.db"), offload=True))
        yield s
        s.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db)
    yield s
    s.close()


# -- URLs ---------------------------------------------------------------------------------


def test_relative_url_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_from_url("sqlite:///var/sessions.db") == "var/sessions.db"
    s = SQLiteStore.from_url("sqlite:///var/sessions.db")
    assert s.path == str(tmp_path / "var" / "sessions.db")
    assert (tmp_path / "var").is_dir()  # parent directories are created
    monkeypatch.chdir("/")
    create(s, 1)  # a later chdir does not move the store
    s.close()
    assert (tmp_path / "var" / "sessions.db").is_file()


def test_absolute_url_has_four_slashes(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "s.db"
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    assert path_from_url(url) == str(target)
    s = SQLiteStore.from_url(url)
    assert s.path == str(target)
    s.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite://localhost/x.db",
        "sqlite:///x.db?mode=ro",
        "redis://localhost/0",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="sqlite"):
        SQLiteStore.from_url(url)


def test_memory_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="plain file path"):
        SQLiteStore(":memory:")


# -- schema -------------------------------------------------------------------------------


def test_a_new_file_gets_the_schema_wal_and_its_version(store: SQLiteStore, db: Path) -> None:
    create(store, 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"sessions", "session_values", "sessions_user_id", "sessions_expires_at"} <= names


def test_connections_use_the_documented_pragmas(store: SQLiteStore) -> None:
    with store._connection() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_file_from_a_newer_version_is_refused_and_left_untouched(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sessions (digest TEXT PRIMARY KEY, future_column BLOB)")
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = db.read_bytes()
    siblings = sorted(p.name for p in db.parent.iterdir())
    s = SQLiteStore(db)
    for _ in range(2):  # refused on every use, not just the first
        with pytest.raises(ConfigError, match=r"created by a newer session_mw \(schema version 99"):
            s.load(digest(1), touch())
    with pytest.raises(ConfigError, match="newer"):
        create(s, 1)
    s.close()
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == siblings  # no -wal, no -journal left behind


def test_a_file_with_someone_elses_tables_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.close()
    before = db.read_bytes()
    s = SQLiteStore(db)
    with pytest.raises(ConfigError, match=r"not a session_mw store \(invoices\)"):
        create(s, 1)
    s.close()
    assert db.read_bytes() == before


def test_a_versioned_file_without_our_tables_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY)")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    s = SQLiteStore(db)
    with pytest.raises(ConfigError, match="not the session_mw tables"):
        s.user_sessions("alice")
    s.close()


def test_a_file_that_is_not_a_database_is_refused(db: Path) -> None:
    db.write_bytes(b"this is a text file, not a database\n" * 200)
    before = db.read_bytes()
    s = SQLiteStore(db)
    with pytest.raises(ConfigError, match="is not a SQLite database"):
        create(s, 1)
    s.close()
    assert db.read_bytes() == before


def test_data_survives_reopening_the_file(db: Path) -> None:
    first = SQLiteStore(db)
    create(first, 1, user="alice", cart=b"[1,2]", theme=b'"dark"')
    first.close()
    second = SQLiteStore(db)
    record = second.load(digest(1), touch())
    assert record is not None and record.data == {"cart": b"[1,2]", "theme": b'"dark"'}
    assert [k for k, _ in second.user_sessions("alice")] == [digest(1)]
    second.close()


def test_two_store_objects_on_one_file_see_each_other(db: Path) -> None:
    a, b = SQLiteStore(db), SQLiteStore(db)
    create(a, 1, user="alice")
    assert b.load(digest(1), touch()) is not None
    b.delete(digest(1))
    assert a.load(digest(1), touch()) is None
    a.close()
    b.close()


# -- errors -------------------------------------------------------------------------------


def test_a_location_that_cannot_be_a_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot create the directory .*not-a-dir"):
        SQLiteStore(blocker / "sub" / "s.db")


def test_a_directory_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        SQLiteStore(tmp_path)


def test_a_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "gone" / "s.db")
    os.rmdir(tmp_path / "gone")  # the directory vanished after start-up (unmounted volume)
    with pytest.raises(StoreUnavailable, match=r"is unavailable: unable to open database file") as info:
        s.load(digest(7), touch())
    assert digest(7) not in str(info.value)
    s.close()


def test_a_locked_database_is_unavailable_and_names_no_digest(db: Path) -> None:
    s = SQLiteStore(db, busy_timeout=0.1)
    create(s, 1)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked") as info:
            s.write(Write("update", digest(1), meta(), IDLE, set={"a": b"2"}))
        assert digest(1) not in str(info.value)
        # reads go on while another process writes (WAL)
        record = s.load(digest(1), touch())
        assert record is not None and record.data == {"a": b"1"}
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.write(Write("update", digest(1), meta(), IDLE, set={"a": b"2"}))
    s.close()


def test_a_due_touch_waits_for_a_concurrent_writer(db: Path) -> None:
    """The read never waits (WAL); the touch that follows waits for the writer's lock, then applies."""
    s = SQLiteStore(db)
    m = create(s, 1)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        record = s.load(digest(1), touch(m.last_seen + 90))
    finally:
        release.join()
        blocker.close()
    assert time.monotonic() - started >= 0.25  # it waited for the lock instead of failing
    assert record is not None and record.meta.last_seen == m.last_seen
    record = s.load(digest(1), touch(m.last_seen + 95))
    assert record is not None and record.meta.last_seen == m.last_seen + 90
    s.close()


def test_a_closed_store_refuses_work(store: SQLiteStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load(digest(1), touch())


def test_an_unknown_write_mode_is_a_bug(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="unknown write mode"):
        store.write(Write("upsert", digest(1), meta(), IDLE))


# -- semantics beyond the contract ----------------------------------------------------------


def test_update_of_an_expired_row_returns_false_and_does_not_revive_it(store: SQLiteStore) -> None:
    create(store, 1, ttl=0.05)
    time.sleep(0.1)
    assert store.write(Write("update", digest(1), meta(), IDLE, set={"a": b"2"})) is False
    assert store.load(digest(1), touch()) is None


def test_create_over_an_expired_row_replaces_it_entirely(store: SQLiteStore) -> None:
    create(store, 1, ttl=0.05, old=b"1")
    time.sleep(0.1)
    create(store, 1, new=b"2")
    record = store.load(digest(1), touch())
    assert record is not None and record.data == {"new": b"2"}


def test_deleting_a_session_deletes_its_values(store: SQLiteStore, db: Path) -> None:
    create(store, 1, a=b"1", b=b"2")
    create(store, 2, c=b"3")
    assert raw_count(db, "session_values") == 3
    store.delete(digest(1))
    assert raw_count(db, "session_values") == 1


def test_rotation_leaves_no_values_behind(store: SQLiteStore, db: Path) -> None:
    create(store, 1, a=b"1", b=b"2")
    op = Write("rotate", digest(2), meta(), IDLE, set={"a": b"1", "b": b"2"}, old_key=digest(1))
    assert store.write(op)
    assert raw_count(db) == 1 and raw_count(db, "session_values") == 2


def test_expires_at_follows_the_wall_clock_not_touch_now(store: SQLiteStore, db: Path) -> None:
    m = meta(now=1_000.0, absolute_deadline=10**10)  # the engine's clock is fake
    store.write(Write("create", digest(1), m, IDLE, set={"a": b"1"}))
    store.load(digest(1), touch(1_100.0))  # touch due by the fake clock
    with sqlite3.connect(db) as conn:
        last_seen, expires_at = conn.execute("SELECT last_seen, expires_at FROM sessions").fetchone()
    assert last_seen == 1_100.0
    assert time.time() + IDLE - 5 < expires_at <= time.time() + IDLE


# -- gc -------------------------------------------------------------------------------------


def _insert_expired(db: Path, count: int, start: int = 1_000) -> None:
    """Expired rows written straight into the file (the store would take a transaction each)."""
    past = time.time() - 10
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(digest(n), "old", past, past, past, past, "", 0) for n in range(start, start + count)],
        )
        conn.executemany(
            "INSERT INTO session_values VALUES (?, ?, ?)", [(digest(n), "k", b"v") for n in range(start, start + count)]
        )
    conn.close()


def test_gc_removes_only_expired_rows_in_batches(store: SQLiteStore, db: Path) -> None:
    create(store, 1, user="old")
    create(store, 2)
    _insert_expired(db, 1_200)
    assert store.stats()["expired"] == 1_200
    assert [k for k, _ in store.user_sessions("old")] == [digest(1)]  # expired rows are invisible
    assert list(store.gc_batches(500)) == [500, 500, 200]
    assert raw_count(db) == 2 and raw_count(db, "session_values") == 2
    assert store.gc(time.time()) == 0
    assert store.load(digest(1), touch()) is not None and store.load(digest(2), touch()) is not None


def test_gc_counts_what_it_removed(store: SQLiteStore, db: Path) -> None:
    create(store, 1)
    _insert_expired(db, 30)
    assert store.gc(0.0) == 30  # `now` is ignored: expiry is on the wall clock


def test_amortised_gc_runs_every_n_writes(db: Path) -> None:
    s = SQLiteStore(db, gc_every=10, gc_interval=3600, gc_batch=25)
    create(s, 1)
    _insert_expired(db, 40)
    for _ in range(8):
        create(s, 2)
    assert raw_count(db) == 42  # nine writes so far: nothing collected yet
    create(s, 3)
    assert raw_count(db) == 43 - 25  # the tenth write paid for one batch, and only one
    for _ in range(10):
        create(s, 3)
    assert raw_count(db) == 3
    s.close()


def test_amortised_gc_runs_after_the_interval(db: Path) -> None:
    s = SQLiteStore(db, gc_every=10**6, gc_interval=0.2)
    create(s, 1)
    _insert_expired(db, 5)
    create(s, 2)
    assert raw_count(db) == 7
    time.sleep(0.25)
    create(s, 3)
    assert raw_count(db) == 3
    s.close()


def test_stats(store: SQLiteStore, db: Path) -> None:
    create(store, 1, user="alice")
    create(store, 2, user="alice")
    create(store, 3, user="bob")
    create(store, 4)
    _insert_expired(db, 3)
    stats = store.stats()
    assert (stats["sessions"], stats["users"], stats["expired"]) == (4, 2, 3)
    assert stats["file_bytes"] > 0 and stats["path"] == str(db)


def test_prefix_lookup_and_iteration(store: SQLiteStore) -> None:
    for n in (0xAB0001, 0xAB0002, 0xCD0001):
        create(store, n)
    assert store.digests_with_prefix("0" * 58 + "ab", limit=5) == [digest(0xAB0001), digest(0xAB0002)]
    assert store.digests_with_prefix(digest(0xCD0001)) == [digest(0xCD0001)]
    assert store.digests_with_prefix("f" * 12) == []
    assert [d for d, _ in store.iter_sessions(batch=2)] == [digest(0xAB0001), digest(0xAB0002), digest(0xCD0001)]


def test_many_threads_share_a_bounded_pool(db: Path) -> None:
    s = SQLiteStore(db, max_idle_connections=2)
    create(s, 1)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert s.load(digest(1), touch()) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(s._idle) <= 2
    s.close()


def test_reads_do_not_wait_for_a_writer_and_contended_touches_fall_back(tmp_path: Path) -> None:
    import asyncio
    import sqlite3
    import threading

    from session_mw.stores.base import Touch, Write
    from session_mw.stores.sqlite import WouldBlock

    store = SQLiteStore(str(tmp_path / "s.db"))
    m = meta()
    store.write(Write("create", "a" * 64, m, 600, set={"x": b"1"}))
    writer = sqlite3.connect(str(tmp_path / "s.db"), isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        not_due = Touch(m.last_seen + 1, 60, 600)
        record = store.load_without_waiting("a" * 64, not_due)  # WAL: a reader never waits
        assert record is not None and record.data == {"x": b"1"}
        due = Touch(m.last_seen + 120, 60, 600)
        with pytest.raises(WouldBlock):
            store.load_without_waiting("a" * 64, due)  # the touch needs the write lock
        threading.Timer(0.3, writer.execute, ("COMMIT",)).start()
        face = AsyncFromSync(store, offload=True)
        record = asyncio.run(face.load("a" * 64, due))  # so the async face waits in a worker thread
        assert record is not None and record.data == {"x": b"1"}
        again = store.load("a" * 64, Touch(m.last_seen + 121, 60, 600))
        assert again is not None and again.meta.last_seen == m.last_seen + 120  # the touch was applied
    finally:
        writer.close()
        store.close()
