"""The SQLite store: what only a file can get wrong (the contract suite runs in test_contract.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from session_mw.errors import ConfigError, StoreError, StoreUnavailable
from session_mw.stores.base import (
    Check,
    Collect,
    Create,
    Delete,
    Load,
    Meta,
    RevokeAll,
    Rotate,
    Update,
    WouldBlock,
)
from session_mw.stores.sqlite import SCHEMA_VERSION, SQLiteStore, path_from_url
from session_mw.stores.threaded import AsyncFromSync
from session_mw.testing import LIFE, FakeClock, digest, listed, load, meta

IDLE = LIFE.idle_timeout
START = 1_700_000_000.0


def create(store: SQLiteStore, n: int, *, user: str | None = None, **data: bytes) -> Meta:
    m = meta(store._clock(), user)
    store.execute(Create(digest(n), m, data or {"a": b"1"}, LIFE))
    return m


def raw_count(path: Path, table: str = "sessions") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(db: Path, clock: FakeClock) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db, clock=clock)
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
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
            load(s, 1)
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
        listed(s, "alice")
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
    record = load(second, 1)
    assert record is not None and record.data == {"cart": b"[1,2]", "theme": b'"dark"'}
    assert listed(second, "alice") == [digest(1)]
    second.close()


def test_two_store_objects_on_one_file_see_each_other(db: Path) -> None:
    a, b = SQLiteStore(db), SQLiteStore(db)
    create(a, 1, user="alice")
    assert load(b, 1) is not None
    b.execute(Delete(digest(1)))
    assert load(a, 1) is None
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
        load(s, 7)
    assert digest(7) not in str(info.value)
    s.close()


def test_a_locked_database_is_unavailable_and_names_no_digest(db: Path) -> None:
    s = SQLiteStore(db, busy_timeout=0.1)
    create(s, 1)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked") as info:
            s.execute(Update(digest(1), LIFE, {"a": b"2"}))
        assert digest(1) not in str(info.value)
        # reads go on while another process writes (WAL)
        record = load(s, 1)
        assert record is not None and record.data == {"a": b"1"}
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.execute(Update(digest(1), LIFE, {"a": b"2"}))
    s.close()


def test_a_due_touch_waits_for_a_concurrent_writer(db: Path, clock: FakeClock) -> None:
    """The read never waits (WAL); the touch that follows waits for the writer's lock, then applies."""
    s = SQLiteStore(db, clock=clock)
    m = create(s, 1)
    clock.advance(90)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    release = threading.Timer(0.3, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        record = load(s, 1)
    finally:
        release.join()
        blocker.close()
    assert time.monotonic() - started >= 0.25  # it waited for the lock instead of failing
    assert record is not None and record.meta.last_seen == m.last_seen + 90
    clock.advance(5)
    record = load(s, 1)
    assert record is not None and record.meta.last_seen == m.last_seen + 90
    s.close()


def test_a_closed_store_refuses_work(store: SQLiteStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        load(store, 1)


def test_an_unknown_operation_is_a_bug(store: SQLiteStore) -> None:
    with pytest.raises(NotImplementedError, match="does not support"):
        store.execute(object())  # type: ignore[arg-type]


# -- semantics beyond the contract ----------------------------------------------------------


def test_create_over_an_expired_row_replaces_it_entirely(store: SQLiteStore, clock: FakeClock) -> None:
    create(store, 1, old=b"1")
    clock.advance(IDLE + 1)
    create(store, 1, new=b"2")
    record = load(store, 1)
    assert record is not None and record.data == {"new": b"2"}


def test_deleting_a_session_deletes_its_values(store: SQLiteStore, db: Path) -> None:
    create(store, 1, a=b"1", b=b"2")
    create(store, 2, c=b"3")
    assert raw_count(db, "session_values") == 3
    store.execute(Delete(digest(1)))
    assert raw_count(db, "session_values") == 1


def test_rotation_leaves_no_values_behind(store: SQLiteStore, db: Path) -> None:
    create(store, 1, a=b"1", b=b"2")
    op = Rotate(digest(1), digest(2), meta(START), {"a": b"1", "b": b"2"}, LIFE)
    assert store.execute(op)
    assert raw_count(db) == 1 and raw_count(db, "session_values") == 2


def test_expires_at_follows_the_stores_clock(store: SQLiteStore, db: Path, clock: FakeClock) -> None:
    create(store, 1)
    clock.advance(100)
    load(store, 1)  # a due touch
    with sqlite3.connect(db) as conn:
        last_seen, expires_at, fmt = conn.execute("SELECT last_seen, expires_at, format FROM sessions").fetchone()
    assert last_seen == START + 100 and expires_at == START + 100 + IDLE and fmt == 2


# -- gc -------------------------------------------------------------------------------------


def _insert_expired(db: Path, count: int, start: int = 1_000) -> None:
    """Expired rows written straight into the file (the store would take a transaction each)."""
    past = START - 10
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen, absolute_deadline, expires_at, "
            "user_agent, remember, format, public_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 2, '')",
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
    assert listed(store, "old") == [digest(1)]  # expired rows are invisible
    assert list(store.gc_batches(500)) == [500, 500, 200]
    assert raw_count(db) == 2 and raw_count(db, "session_values") == 2
    assert store.execute(Collect()) == 0
    assert load(store, 1) is not None and load(store, 2) is not None


def test_gc_counts_what_it_removed(store: SQLiteStore, db: Path) -> None:
    create(store, 1)
    _insert_expired(db, 30)
    assert store.execute(Collect()) == 30


def test_amortised_gc_runs_every_n_writes(db: Path, clock: FakeClock) -> None:
    s = SQLiteStore(db, gc_every=10, gc_interval=3600, gc_batch=25, clock=clock)
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


def test_amortised_gc_runs_after_the_interval(db: Path, clock: FakeClock) -> None:
    s = SQLiteStore(db, gc_every=10**6, gc_interval=0.2, clock=clock)
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


def test_many_threads_share_a_bounded_pool(db: Path, clock: FakeClock) -> None:
    s = SQLiteStore(db, max_idle_connections=2, clock=clock)
    create(s, 1)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert load(s, 1) is not None
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


def test_reads_do_not_wait_for_a_writer_and_contended_touches_fall_back(db: Path, clock: FakeClock) -> None:
    store = SQLiteStore(db, clock=clock)
    m = create(store, 1, x=b"1")
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        clock.advance(1)
        record = store.execute(Load(digest(1), LIFE, wait=False))  # WAL: a reader never waits
        assert record is not None and record.data == {"x": b"1"}
        clock.advance(119)
        with pytest.raises(WouldBlock):
            store.execute(Load(digest(1), LIFE, wait=False))  # the touch needs the write lock
        threading.Timer(0.3, writer.execute, ("COMMIT",)).start()
        face = AsyncFromSync(store, offload=True)
        record = asyncio.run(face.execute(Load(digest(1), LIFE)))  # so the async face waits in a worker thread
        assert record is not None and record.data == {"x": b"1"}
        clock.advance(1)
        again = load(store, 1)
        assert again is not None and again.meta.last_seen == m.last_seen + 120  # the touch was applied
    finally:
        writer.close()
        store.close()


class ThreadHops:
    """Counts the async face's hops to a worker thread (each still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import anyio.to_thread

        self.count = 0
        real = anyio.to_thread.run_sync

        async def run_sync(*args: object, **kwargs: object) -> object:
            self.count += 1
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)


def test_writes_run_on_the_event_loop_when_no_other_writer_holds_the_file(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db, clock=clock)
    create(store, 0)  # the file is created and migrated (on a thread, the first time)
    face, hops = AsyncFromSync(store, offload=True), ThreadHops(monkeypatch)

    async def writes() -> None:
        await face.execute(Create(digest(1), meta(clock(), "ann"), {"x": b"1"}, LIFE))
        assert await face.execute(Update(digest(1), LIFE, {"x": b"2"}))
        assert await face.execute(Rotate(digest(1), digest(2), meta(clock(), "ann"), {"x": b"2"}, LIFE))
        await face.execute(Delete(digest(2), "ann"))
        await face.execute(RevokeAll("ann", LIFE))  # not a short write: a worker thread

    asyncio.run(writes())
    assert hops.count == 1
    assert load(store, 1) is None and load(store, 2) is None
    store.close()


def test_a_write_that_meets_another_writer_waits_on_a_thread_and_is_done_once(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db, clock=clock)
    create(store, 1, x=b"1")
    face, hops = AsyncFromSync(store, offload=True), ThreadHops(monkeypatch)
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(WouldBlock):
            store.execute_now(Update(digest(1), LIFE, {"x": b"2"}))
        assert load(store, 1).data == {"x": b"1"}  # type: ignore[union-attr]  # nothing was written
        threading.Timer(0.3, writer.execute, ("COMMIT",)).start()
        rotated = asyncio.run(face.execute(Rotate(digest(1), digest(2), meta(clock()), {"x": b"2"}, LIFE)))
        assert rotated is True and hops.count == 1  # a rotate that ran twice would say False
        assert load(store, 1) is None and load(store, 2) is not None
        with pytest.raises(WouldBlock):
            store.execute_now(Load(digest(2), LIFE))  # only the short writes
    finally:
        writer.close()
        store.close()


# -- undecodable rows: treated as absent everywhere, dropped, never an error ------------------


def _corrupt(db: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement, params)
    conn.close()


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE sessions SET created_at = 'soon'", ()),
        ("UPDATE sessions SET absolute_deadline = ?", (float("inf"),)),
        ("UPDATE sessions SET last_seen = 'nan'", ()),
        ("UPDATE sessions SET remember = 7", ()),
        ("UPDATE sessions SET user_agent = x'ff'", ()),
        ("UPDATE sessions SET user_agent = CAST(x'ff' AS TEXT)", ()),
        ("UPDATE sessions SET format = 'two'", ()),
        ("UPDATE session_values SET value = 'text, not bytes'", ()),
        ("UPDATE session_values SET name = CAST(x'ff' AS TEXT)", ()),
    ],
)
def test_an_undecodable_row_is_absent_and_dropped(
    store: SQLiteStore, db: Path, statement: str, params: tuple[object, ...], caplog: pytest.LogCaptureFixture
) -> None:
    create(store, 1, user="alice")
    create(store, 2, user="alice")
    _corrupt(db, statement + " WHERE digest = ?", *params, digest(1))
    with caplog.at_level("WARNING", logger="session_mw.security"):
        assert load(store, 1) is None
    assert "undecodable session record dropped" in caplog.text and digest(1) not in caplog.text
    assert listed(store, "alice") == [digest(2)]
    assert raw_count(db) == 1  # dropped, not just skipped
    assert not store.execute(Update(digest(1), LIFE, {"a": b"2"}))
    assert not store.execute(Rotate(digest(1), digest(3), meta(START, "alice"), {}, LIFE, "alice"))


def test_text_that_is_not_utf8_never_fails_a_read_and_the_fast_decoder_comes_back(store: SQLiteStore, db: Path) -> None:
    """sqlite3 decodes text itself; a row it cannot decode is read again, escaped, and judged."""
    for n in (1, 2, 3):
        create(store, n, user="alice")
    _corrupt(db, "UPDATE sessions SET user_agent = CAST(x'ff' AS TEXT) WHERE digest = ?", digest(2))
    assert [key for key, _ in store.iter_sessions()] == [digest(1), digest(3)]  # skipped, as every bad row
    assert store.digests_with_prefix(digest(2)) == [digest(2)]  # the digest itself is fine
    assert load(store, 2) is None and load(store, 1) is not None
    assert all(conn.text_factory is str for conn in store._idle)
    assert [key for key, _ in store.iter_sessions()] == [digest(1), digest(3)]


def test_an_undecodable_row_is_dropped_by_the_listing_too(store: SQLiteStore, db: Path) -> None:
    create(store, 1, user="alice")
    _corrupt(db, "UPDATE sessions SET created_at = 'soon' WHERE digest = ?", digest(1))
    assert listed(store, "alice") == []
    assert raw_count(db) == 0


@pytest.mark.parametrize("fmt", [3, 4])
def test_a_row_of_a_newer_record_format_is_not_read(store: SQLiteStore, db: Path, fmt: int) -> None:
    create(store, 1)
    _corrupt(db, f"UPDATE sessions SET format = {fmt} WHERE digest = ?", digest(1))
    assert load(store, 1) is None


def test_a_retired_row_is_cut_to_its_grace_and_of_a_format_older_readers_refuse(
    store: SQLiteStore, db: Path, clock: FakeClock
) -> None:
    """The old row of a grace rotate: ``retired_until`` and ``expires_at`` at the grace's end, and
    record format 3, which a reader of format 2 (that knows nothing of retirement) refuses as
    unknown, rather than reading it as live, touching it back to life or writing to it."""
    create(store, 1, user="alice")
    now = clock()
    assert store.execute(Rotate(digest(1), digest(2), meta(now, "alice"), {"a": b"1"}, LIFE, "alice", grace=5.0))
    with sqlite3.connect(db) as conn:
        rows = dict(
            (d, (until, expires, fmt))
            for d, until, expires, fmt in conn.execute("SELECT digest, retired_until, expires_at, format FROM sessions")
        )
    conn.close()
    assert rows == {digest(1): (now + 5.0, now + 5.0, 3), digest(2): (0.0, now + IDLE, 2)}
    assert store.execute(Collect()) == 0
    clock.advance(5.0)
    assert load(store, 1) is None and store.execute(Collect()) == 1 and raw_count(db) == 1


def test_a_first_release_file_is_migrated_in_place(db: Path, clock: FakeClock) -> None:
    """Schema 1 (the first release) gains the record format and the public id; its rows stay readable."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in __import__("session_mw.stores.sqlite", fromlist=["_MIGRATIONS"])._MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO sessions VALUES (?, 'alice', ?, ?, ?, ?, 'UA', 0)",
            (digest(1), START, START, START + 3600, START + 600),
        )
        conn.execute("INSERT INTO session_values VALUES (?, 'cart', ?)", (digest(1), b'["apple"]'))
    conn.close()
    s = SQLiteStore(db, clock=clock)
    record = load(s, 1)
    assert record is not None and record.data == {"cart": b'["apple"]'} and record.meta.user_id == "alice"
    s.close()


def test_a_version_2_file_is_migrated_in_place_and_its_live_sessions_still_load(db: Path, clock: FakeClock) -> None:
    """Schema 2 gains the security fields of Meta (migration 3); a session live before it is
    live after it, with the fields' defaults, and takes the writes of this version."""
    from session_mw.stores.sqlite import _MIGRATIONS

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for version in (1, 2):
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO sessions (digest, user_id, created_at, last_seen, absolute_deadline, expires_at, user_agent, "
            "remember, format, public_id) VALUES (?, 'alice', ?, ?, ?, ?, 'UA', 1, 2, 'pub123')",
            (digest(1), START, START, START + 3600, START + 600),
        )
        conn.execute("INSERT INTO session_values VALUES (?, 'cart', ?)", (digest(1), b'["apple"]'))
    conn.close()
    clock.advance(10)
    s = SQLiteStore(db, clock=clock)
    record = load(s, 1)
    assert record is not None and record.data == {"cart": b'["apple"]'}
    assert record.meta == Meta(START, START, START + 3600, "alice", "UA", True, "pub123", 0.0, 0.0, "", 0.0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    conn.close()
    assert {"authenticated_at", "issued_at", "binding", "retired_until"} <= columns
    assert s.execute(Update(digest(1), LIFE, {"cart": b'["apple","pear"]'}))
    assert listed(s, "alice") == [digest(1)]
    s.close()
    reopened = SQLiteStore(db, clock=clock)  # a migrated file is not migrated twice
    record = load(reopened, 1)
    assert record is not None and record.data == {"cart": b'["apple","pear"]'}
    new = meta(clock(), "alice", authenticated_at=clock(), issued_at=clock(), binding="b1")
    assert reopened.execute(Rotate(digest(1), digest(2), new, dict(record.data), LIFE, "alice", grace=10.0))
    retired = load(reopened, 1)
    assert retired is not None and retired.meta.retired_until == clock() + 10.0 and retired.meta.public_id == "pub123"
    fresh = load(reopened, 2)
    assert fresh is not None and fresh.meta == new and listed(reopened, "alice") == [digest(2)]
    reopened.close()


def test_the_start_up_check_refuses_a_foreign_file(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(ConfigError, match="not a session_mw store"):
        SQLiteStore(db).execute(Check())


def test_the_start_up_check_refuses_an_unwritable_place(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: make the file a directory's name instead
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro" / "s.db").mkdir()
        with pytest.raises(ConfigError):
            SQLiteStore(tmp_path / "ro" / "s.db").execute(Check())
        return
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="cannot be used"):
        SQLiteStore(tmp_path / "ro" / "s.db").execute(Check())
