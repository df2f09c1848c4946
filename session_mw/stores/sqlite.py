"""SQLite store: one file shared by every process and thread of an app, stdlib ``sqlite3`` only.

Layout: a row per session in ``sessions`` (the metadata, the GC deadline ``expires_at`` and
the per-user index as the ``user_id`` column) and a row per app key in ``session_values``,
so an update writes only the keys that changed. The file runs in WAL mode, so readers never
wait for the writer; every write is one ``BEGIN IMMEDIATE`` transaction, so a
read-modify-write is atomic across processes.

``expires_at`` is on the store's clock (``time.time()`` unless one is injected), like a Redis
TTL: a row past it is treated as absent at once, and deleted later by ``gc`` or by the small
batch of collection that every few hundred writes pay for.

The old row of a rotate with a grace window is retired in place: ``retired_until`` set,
``expires_at`` cut to it, and the record format ``_RETIRED_FORMAT``, which every reader that
predates retirement refuses (and drops), so an older process never takes it for a live session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypedDict

from ..errors import ConfigError, StoreError, StoreUnavailable
from . import base
from .base import (
    RECORD_FORMAT,
    CorruptRecord,
    Lifetime,
    Meta,
    R,
    Record,
    WouldBlock,
    checked_meta,
    checked_name,
    checked_value,
)

log = logging.getLogger("session_mw.stores.sqlite")
security_log = logging.getLogger("session_mw.security")

#: The record format of a retired row (the old key of a grace rotate): one more than a live
#: row's, so that readers of ``RECORD_FORMAT`` 2, which know nothing of retirement, refuse it
#: instead of reading, touching or writing it as a live session. Live rows stay ``RECORD_FORMAT``
#: (the columns added since read as their defaults, so older readers read those rows right).
_RETIRED_FORMAT = RECORD_FORMAT + 1

#: The schema version this code writes (stored in ``PRAGMA user_version``).
SCHEMA_VERSION = 3

#: ``_MIGRATIONS[n]`` takes a file from version ``n - 1`` to version ``n``; version 0 is an
#: empty file. They run in one transaction, so a file is never left half-migrated.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE sessions (
            digest TEXT PRIMARY KEY NOT NULL,
            user_id TEXT,
            created_at REAL NOT NULL,
            last_seen REAL NOT NULL,
            absolute_deadline REAL NOT NULL,
            expires_at REAL NOT NULL,
            user_agent TEXT NOT NULL DEFAULT '',
            remember INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE session_values (
            digest TEXT NOT NULL REFERENCES sessions (digest) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (digest, name)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX sessions_user_id ON sessions (user_id)",
        "CREATE INDEX sessions_expires_at ON sessions (expires_at)",
        """
        CREATE TABLE session_locks (
            digest TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # the record format (1: values as the first release wrote them; 2: tagged values are marked)
    2: (
        "ALTER TABLE sessions ADD COLUMN format INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE sessions ADD COLUMN public_id TEXT NOT NULL DEFAULT ''",
    ),
    # the security fields of Meta; rows written before them read as never authenticated, issued
    # at creation at most, unbound and current
    3: (
        "ALTER TABLE sessions ADD COLUMN authenticated_at REAL NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN issued_at REAL NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN binding TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE sessions ADD COLUMN retired_until REAL NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN successor TEXT NOT NULL DEFAULT ''",
    ),
}
_TABLES = {
    "sessions": {
        "digest",
        "user_id",
        "created_at",
        "last_seen",
        "absolute_deadline",
        "expires_at",
        "user_agent",
        "remember",
    },
    "session_values": {"digest", "name", "value"},
    "session_locks": {"digest", "owner", "expires_at"},
}

# The metadata columns in ``checked_meta``'s order, then the record format: what ``_meta`` reads.
_META_COLUMNS = 13
#: SQLite's primary result codes of a lock held by another connection (SQLITE_BUSY, SQLITE_LOCKED).
_BUSY = frozenset({5, 6})


def _held_elsewhere(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF in _BUSY
    return "locked" in str(exc) or "busy" in str(exc)


class _NowOnly(threading.local):
    active = False


_LOAD = (
    "SELECT s.created_at, s.last_seen, s.absolute_deadline, s.user_id, s.user_agent, s.remember, s.public_id, "
    "s.authenticated_at, s.issued_at, s.binding, s.retired_until, s.successor, s.format, v.name, v.value "
    "FROM sessions s LEFT JOIN session_values v ON v.digest = s.digest WHERE s.digest = ? AND s.expires_at > ?"
)
_ENDED_META = (
    "SELECT created_at, last_seen, absolute_deadline, user_id, user_agent, remember, public_id, "
    "authenticated_at, issued_at, binding, retired_until, successor, format FROM sessions WHERE digest = ?"
)
_LIVE_META = (
    "SELECT created_at, last_seen, absolute_deadline, user_id, user_agent, remember, public_id, "
    "authenticated_at, issued_at, binding, retired_until, successor, format "
    "FROM sessions WHERE digest = ? AND expires_at > ?"
)
# only if nobody touched it since we read it: two touches racing leave one, never a stale last_seen
# and never a retired row (retired between the read and this touch)
_TOUCH = "UPDATE sessions SET last_seen = ?, expires_at = ? WHERE digest = ? AND last_seen = ? AND retired_until = 0"
_RETIRE = (
    "UPDATE sessions SET retired_until = ?, successor = ?, format = ?, expires_at = MIN(expires_at, ?) WHERE digest = ?"
)
_DELETE_VALUE = "DELETE FROM session_values WHERE digest = ? AND name = ?"
_UPSERT_VALUE = (
    "INSERT INTO session_values (digest, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (digest, name) DO UPDATE SET value = excluded.value"
)
_UPDATE_TOUCH = "UPDATE sessions SET last_seen = ?, expires_at = ?, remember = ? WHERE digest = ?"
_INSERT_SESSION = (
    "INSERT INTO sessions (user_id, created_at, last_seen, absolute_deadline, expires_at, user_agent, remember, "
    "public_id, authenticated_at, issued_at, binding, format, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_SESSION = "DELETE FROM sessions WHERE digest = ?"  # values go with it (ON DELETE CASCADE)
_USER_SESSIONS = (
    "SELECT digest, created_at, last_seen, absolute_deadline, user_id, user_agent, remember, public_id, "
    "authenticated_at, issued_at, binding, retired_until, successor, format "
    "FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at, digest"
)
_ITER_SESSIONS = (
    "SELECT digest, created_at, last_seen, absolute_deadline, user_id, user_agent, remember, public_id, "
    "authenticated_at, issued_at, binding, retired_until, successor, format "
    "FROM sessions WHERE digest > ? AND expires_at > ? ORDER BY digest LIMIT ?"
)
_LOCK = (
    "INSERT INTO session_locks (digest, owner, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (digest) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE session_locks.expires_at <= ? OR session_locks.owner = excluded.owner"
)
_UNLOCK = "DELETE FROM session_locks WHERE digest = ? AND owner = ?"
_COLLECT_LOCKS = "DELETE FROM session_locks WHERE expires_at <= ?"
_COLLECT = "DELETE FROM sessions WHERE digest IN (SELECT digest FROM sessions WHERE expires_at <= ? LIMIT ?)"


class SQLiteStats(TypedDict):
    """What ``SQLiteStore.stats`` reports (for the ops CLI)."""

    path: str
    sessions: int
    users: int
    expired: int
    file_bytes: int
    wal_bytes: int


def _meta(row: Any) -> Meta:
    """The metadata columns (``_META``) of a row, or ``CorruptRecord``."""
    *fields, fmt = row
    if not isinstance(fmt, int) or fmt > _RETIRED_FORMAT:
        raise CorruptRecord("a session row of an unknown record format")
    meta = checked_meta(*fields)
    if fmt > RECORD_FORMAT and not meta.retired_until:
        raise CorruptRecord("a session row of an unknown record format")
    return meta


def _escaped_text(data: bytes) -> str:
    """Text that is not UTF-8, surrogate-escaped: ``checked_meta``/``checked_name`` refuse it."""
    return data.decode("utf-8", "surrogateescape")


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """The rows of a read, text decoded by sqlite3 itself (in C, no Python call per value).

    A text value that is not UTF-8 makes that decoding fail (``OperationalError``); the read then
    runs once more with every text value surrogate-escaped, so the checks judge the bad row
    instead of the driver failing the whole operation. A real error fails that second read too.
    """
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        pass
    conn.text_factory = _escaped_text
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def _meta_params(meta: Meta, expires_at: float, digest: str) -> tuple[Any, ...]:
    return (
        meta.user_id,
        meta.created_at,
        meta.last_seen,
        meta.absolute_deadline,
        expires_at,
        meta.user_agent,
        int(meta.remember),
        meta.public_id,
        meta.authenticated_at,
        meta.issued_at,
        meta.binding,
        RECORD_FORMAT,
        digest,
    )


def path_from_url(url: str) -> str:
    """The file named by a SQLAlchemy-style URL: ``sqlite:///rel.db`` or ``sqlite:////abs.db``.

    In-memory databases are refused: sessions must live in a file every process can open.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ConfigError("a SQLite store_url must start with sqlite://")
    if "?" in rest or "#" in rest:
        raise ConfigError("a SQLite store_url takes no query string or fragment: use sqlite:///path/to/sessions.db")
    if rest and not rest.startswith("/"):
        raise ConfigError(
            "a SQLite store_url has no host: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if path in ("", ":memory:"):
        raise ConfigError(
            "a SQLite store_url must name a file that every process shares (in-memory databases are per "
            "process): use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return path


class SQLiteStore(base.Dispatching):
    """The sync store over one SQLite file; safe for many threads and processes at once.

    Connections come from a small pool (a connection is used by one thread at a time), so
    the store works the same from request threads and from anyio's worker threads. The file
    is checked (and created or migrated) on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        gc_every: int = 200,
        gc_interval: float = 60.0,
        gc_batch: int = 500,
        max_idle_connections: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise ConfigError("SQLiteStore needs a plain file path (not :memory: or a file: URI)")
        if busy_timeout <= 0 or gc_every < 1 or gc_interval < 0 or gc_batch < 1:
            raise ConfigError("busy_timeout and gc_batch/gc_every must be positive, gc_interval >= 0")
        # absolute now, so a later chdir never points the store at another file
        self.path = os.path.abspath(raw)
        if os.path.isdir(self.path):
            raise ConfigError(f"the SQLite session store path {self.path} is a directory, not a file")
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the directory {parent} for the SQLite session store: {exc.strerror or exc}"
            ) from None
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._now_only = _NowOnly()  # set on a thread by _not_waiting
        self._gc_every = gc_every
        self._gc_interval = gc_interval
        self._gc_batch = gc_batch
        self._max_idle = max_idle_connections
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._ready = False
        self._writes = 0
        self._last_gc = time.monotonic()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative/path.db`` (from the working directory) or ``sqlite:////absolute/path.db``."""
        return cls(path_from_url(url), **options)

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self.path!r})"

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False is safe: the pool hands a connection to one thread at a time
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError:
            conn.close()
            raise self._not_a_database() from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _not_a_database(self) -> ConfigError:
        return ConfigError(
            f"{self.path} is not a SQLite database (or it is corrupt); refusing to touch it: "
            "point store_url at a file of its own"
        )

    def _acquire(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the SQLite session store is closed")
            if os.getpid() != self._pid:
                # never use (or close) a connection across fork(): keep the parent's aside
                self._inherited.extend(self._idle)
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop()
        conn = self._connect()
        if not self._ready:
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                conn.close()
                return
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection, sqlite3 errors translated to ``StoreError``/``StoreUnavailable``;
        under ``_not_waiting`` it never waits for a lock, and a lock held elsewhere is ``WouldBlock``."""
        now_only = self._now_only.active
        try:
            conn = self._acquire()
            try:
                if now_only:
                    conn.execute("PRAGMA busy_timeout = 0")
                try:
                    yield conn
                finally:
                    if now_only:
                        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            finally:
                self._release(conn)
        except sqlite3.Error as exc:
            if now_only and isinstance(exc, sqlite3.OperationalError) and _held_elsewhere(exc):
                raise WouldBlock from None  # the statement (or its transaction) wrote nothing
            # sqlite's messages ("database is locked", "disk I/O error") never carry bound values
            raise StoreUnavailable(f"the SQLite session store at {self.path} is unavailable: {exc}") from None

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
        conn.execute(begin)
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # some errors (SQLITE_FULL, IOERR) already rolled it back
                with suppress(sqlite3.Error):  # the pool closes a connection still in a transaction
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------

    def _inspect(self, conn: sqlite3.Connection) -> tuple[int, dict[str, set[str]]]:
        """The file's schema version and its objects (tables with their columns); read only."""
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            objects: dict[str, set[str]] = {
                str(name): set()
                for (name,) in _rows(conn, "SELECT name FROM sqlite_master")
                if not str(name).startswith("sqlite_")
            }
            for table in _TABLES.keys() & objects.keys():
                columns = _rows(conn, "SELECT name FROM pragma_table_info(?)", (table,))
                objects[table] = {str(col) for (col,) in columns}
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError:
            raise self._not_a_database() from None
        return version, objects

    def _refuse_unless_ours(self, version: int, tables: dict[str, set[str]]) -> None:
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the SQLite session store {self.path} was created by a newer session_mw (schema version "
                f"{version}; this version knows up to {SCHEMA_VERSION}); upgrade session_mw or use another "
                "file. The file was left untouched."
            )
        if version == 0 and tables:
            raise ConfigError(
                f"{self.path} already holds tables or indexes that are not a session_mw store "
                f"({', '.join(sorted(tables))}); refusing to touch it: point store_url at a file of its own"
            )
        if version > 0 and any(not cols <= tables.get(name, set()) for name, cols in _TABLES.items()):
            raise ConfigError(
                f"{self.path} has schema version {version} but not the session_mw tables; it is not a "
                "session_mw store, refusing to touch it"
            )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is ours (before writing a byte), then enable WAL and migrate it."""
        with self._init_lock:
            if self._ready:
                return
            version, tables = self._inspect(conn)
            self._refuse_unless_ours(version, tables)
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":
                raise StoreUnavailable(
                    f"the SQLite session store at {self.path} cannot use WAL mode (journal_mode is {mode}); "
                    "is it on a network filesystem?"
                )
            if version < SCHEMA_VERSION:
                with self._transaction(conn):
                    # another process may have created or migrated it since we looked
                    version, tables = self._inspect(conn)
                    self._refuse_unless_ours(version, tables)
                    for target in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in _MIGRATIONS[target]:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._ready = True

    # -- the Store protocol ----------------------------------------------------------

    capabilities = frozenset({base.LOCKS, base.INLINE_LOADS, base.INLINE_WRITES})

    def execute_now(self, op: base.Op[R]) -> R:
        """A write (``INLINE_WRITES_OPS``) on this thread, if no other writer holds the file: the
        async face runs it on the event loop then (one short transaction, no fsync in WAL mode
        with ``synchronous=NORMAL``), and only hops to a worker thread on ``WouldBlock``."""
        if not self._ready or type(op) not in base.INLINE_WRITES_OPS:
            raise WouldBlock
        with self._not_waiting():
            return self.execute(op)

    @contextmanager
    def _not_waiting(self) -> Iterator[None]:
        """On this thread, until the block ends, no statement waits for a lock (``_connection``)."""
        before, self._now_only.active = self._now_only.active, True
        try:
            yield
        finally:
            self._now_only.active = before

    def on_check(self, op: base.Check) -> None:
        """Open (create or migrate) the file now, so a foreign or unwritable file fails at start-up."""
        try:
            with self._connection():
                pass
        except StoreUnavailable as exc:
            raise ConfigError(f"the SQLite session store cannot be used: {exc}") from None

    def on_load(self, op: base.Load) -> Record | None:
        """``wait=False`` raises ``WouldBlock`` instead of waiting for a lock (or a first-use migration).

        WAL readers never wait for writers, so that almost always succeeds at once: the async
        face loads on the event loop and only hops to a worker thread when it would block (a
        due touch meeting another process's write, or a bad row to drop).
        """
        if op.wait:
            with self._connection() as conn:
                return self._load(conn, op, wait=True)
        if not self._ready:
            raise WouldBlock
        with self._not_waiting(), self._connection() as conn:
            return self._load(conn, op, wait=False)

    def _load(self, conn: sqlite3.Connection, op: base.Load, *, wait: bool) -> Record | None:
        key, lifetime = op.key, op.lifetime
        now = self._clock()
        # one statement, so one consistent snapshot of the session row and its values
        rows = _rows(conn, _LOAD, (key, now))
        if not rows:
            if op.report is not None:  # only for events: was it there, and why is it dead?
                self._tell_ended(conn, op, now)
            return None
        try:
            meta = _meta(rows[0][:_META_COLUMNS])
            data = {
                checked_name(row[_META_COLUMNS]): checked_value(row[_META_COLUMNS + 1])
                for row in rows
                if row[_META_COLUMNS] is not None
            }
        except CorruptRecord as exc:
            if not wait:
                raise WouldBlock from None
            self._drop_corrupt(conn, key, exc)
            base.tell(op, "corrupt_record", str(exc))
            return None
        if not lifetime.alive(meta, now):
            base.tell(op, lifetime.ended(meta, now) or "expired_idle")
            return None  # expired by the current settings; gc collects the row
        if meta.retired_until:  # read-only: never touched; past its grace, expires_at hides it
            return Record(data, meta) if now < meta.retired_until else None
        if lifetime.touch_due(meta, now):
            touched = dataclasses.replace(meta, last_seen=now)
            # a single UPDATE is atomic by itself; one of a session deleted meanwhile changes nothing
            params = (now, now + lifetime.ttl(touched, now), key, meta.last_seen)
            conn.execute(_TOUCH, params)  # without waiting, a lock held elsewhere is WouldBlock
            meta = touched
        return Record(data, meta)

    @staticmethod
    def _tell_ended(conn: sqlite3.Connection, op: base.Load, now: float) -> None:
        rows = _rows(conn, _ENDED_META, (op.key,))
        if not rows:
            return
        try:
            meta = _meta(rows[0])
        except CorruptRecord:
            return
        if not meta.retired_until:
            base.tell(op, op.lifetime.ended(meta, now) or "expired_idle")

    @staticmethod
    def _drop_corrupt(conn: sqlite3.Connection, key: str, exc: CorruptRecord) -> None:
        security_log.warning("undecodable session record dropped (%s)", exc)
        conn.execute(_DELETE_SESSION, (key,))

    def _live_meta(self, conn: sqlite3.Connection, key: str, lifetime: Lifetime, now: float) -> Meta | None:
        rows = _rows(conn, _LIVE_META, (key, now))
        if not rows:
            return None
        row = rows[0]
        try:
            meta = _meta(row)
        except CorruptRecord as exc:
            self._drop_corrupt(conn, key, exc)
            return None
        return meta if lifetime.alive(meta, now) and not meta.retired_until else None

    def _insert(self, conn: sqlite3.Connection, key: str, meta: Meta, data: Any, lifetime: Lifetime) -> None:
        now = self._clock()
        conn.execute(_DELETE_SESSION, (key,))
        conn.execute(_INSERT_SESSION, _meta_params(meta, now + lifetime.ttl(meta, now), key))
        if data:
            conn.executemany(_UPSERT_VALUE, [(key, name, value) for name, value in data.items()])

    def on_create(self, op: base.Create) -> None:
        with self._connection() as conn, self._transaction(conn):
            self._insert(conn, op.key, op.meta, op.data, op.lifetime)
        self._amortised_gc()

    def on_update(self, op: base.Update) -> bool:
        with self._connection() as conn, self._transaction(conn):
            now = self._clock()  # read after the write lock is held
            meta = self._live_meta(conn, op.key, op.lifetime, now)
            if meta is None:
                return False  # deleted, expired or rotated away: never resurrect it
            if op.delete:
                conn.executemany(_DELETE_VALUE, [(op.key, name) for name in op.delete])
            if op.set:
                conn.executemany(_UPSERT_VALUE, [(op.key, name, value) for name, value in op.set.items()])
            remember = meta.remember if op.remember is None else op.remember
            touched = dataclasses.replace(meta, last_seen=now, remember=remember)
            conn.execute(_UPDATE_TOUCH, (now, now + op.lifetime.ttl(touched, now), int(remember), op.key))
        self._amortised_gc()
        return True

    def on_rotate(self, op: base.Rotate) -> bool:
        with self._connection() as conn, self._transaction(conn):
            now = self._clock()
            if self._live_meta(conn, op.old_key, op.lifetime, now) is None:
                return False  # dead, or retired by another rotate
            if op.grace > 0:
                until = now + op.grace
                conn.execute(_RETIRE, (until, op.key, _RETIRED_FORMAT, until, op.old_key))
            else:
                conn.execute(_DELETE_SESSION, (op.old_key,))
            self._insert(conn, op.key, op.meta, op.data, op.lifetime)
        self._amortised_gc()
        return True

    def on_delete(self, op: base.Delete) -> None:
        with self._connection() as conn:
            conn.execute(_DELETE_SESSION, (op.key,))  # one statement: atomic with its cascade

    def on_revoke_all(self, op: base.RevokeAll) -> list[str]:
        """One transaction: the listing and the deletes, so no rotate can slip between them."""
        with self._connection() as conn, self._transaction(conn):
            now = self._clock()
            doomed = []
            for row in conn.execute(_USER_SESSIONS, (op.user_id, now)).fetchall():
                key = str(row[0])
                if key == op.keep:
                    continue
                try:
                    meta = _meta(row[1:])
                except CorruptRecord as exc:
                    self._drop_corrupt(conn, key, exc)
                    continue
                conn.execute(_DELETE_SESSION, (key,))
                if op.lifetime.alive(meta, now) and not meta.retired_until:  # a retired key ends uncounted
                    doomed.append(key)
        return doomed

    def on_sessions_of(self, op: base.SessionsOf) -> list[tuple[str, Meta]]:
        with self._connection() as conn:
            now = self._clock()
            rows = _rows(conn, _USER_SESSIONS, (op.user_id, now))
            out = []
            for row in rows:
                try:
                    meta = _meta(row[1:])
                except CorruptRecord as exc:
                    self._drop_corrupt(conn, str(row[0]), exc)
                    continue
                if op.lifetime.alive(meta, now) and not meta.retired_until:
                    out.append((str(row[0]), meta))
        return out

    def on_acquire_lock(self, op: base.AcquireLock) -> bool:
        with self._connection() as conn, self._transaction(conn):
            now = self._clock()
            return int(conn.execute(_LOCK, (op.key, op.owner, now + op.lease, now)).rowcount) == 1

    def on_release_lock(self, op: base.ReleaseLock) -> None:
        with self._connection() as conn:
            conn.execute(_UNLOCK, (op.key, op.owner))

    def on_collect(self, op: base.Collect) -> int:
        """Delete every expired row, a batch per transaction."""
        return sum(self.gc_batches())

    def on_close(self, op: base.Close) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- garbage collection ------------------------------------------------------------

    def gc_batches(self, batch: int | None = None) -> Iterator[int]:
        """Collect expired rows ``batch`` at a time, yielding each batch's count (for progress).

        Each batch is its own short transaction, so writers from other processes interleave.
        """
        size = batch or self._gc_batch
        while True:
            removed = self._collect(size)
            yield removed
            if removed < size:
                return

    def _collect(self, size: int) -> int:
        with self._connection() as conn, self._transaction(conn):
            # the subquery walks the expires_at index: never a full-table scan
            now = self._clock()
            conn.execute(_COLLECT_LOCKS, (now,))  # leases of crashed workers (a handful of rows)
            return int(conn.execute(_COLLECT, (now, size)).rowcount)

    def _amortised_gc(self) -> None:
        """Every ``gc_every`` writes (or ``gc_interval`` seconds), one batch; no sweeper needed."""
        with self._lock:
            self._writes += 1
            now = time.monotonic()
            if self._writes < self._gc_every and now - self._last_gc < self._gc_interval:
                return
            self._writes = 0
            self._last_gc = now
        try:
            removed = self._collect(self._gc_batch)
        except WouldBlock:  # on the event loop, another writer holds the file: the next write tries
            with self._lock:
                self._writes = self._gc_every
            return
        except StoreError as exc:  # the write itself succeeded; the next batch will catch up
            log.warning("SQLite session store: amortised gc skipped: %s", exc)
            return
        if removed:
            log.debug("SQLite session store: collected %d expired sessions", removed)

    # -- ops helpers (the CLI) -----------------------------------------------------------

    def stats(self) -> SQLiteStats:
        """Live sessions, distinct users, rows awaiting gc, and the size on disk."""
        with self._connection() as conn, self._transaction(conn, "BEGIN"):
            now = self._clock()
            sessions = int(conn.execute("SELECT COUNT(*) FROM sessions WHERE expires_at > ?", (now,)).fetchone()[0])
            users = int(
                conn.execute(
                    "SELECT COUNT(DISTINCT user_id) FROM sessions WHERE expires_at > ? AND user_id IS NOT NULL",
                    (now,),
                ).fetchone()[0]
            )
            expired = int(conn.execute("SELECT COUNT(*) FROM sessions WHERE expires_at <= ?", (now,)).fetchone()[0])
        return SQLiteStats(
            path=self.path,
            sessions=sessions,
            users=users,
            expired=expired,
            file_bytes=_size(self.path),
            wal_bytes=_size(self.path + "-wal"),
        )

    def digests_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Live sessions whose digest starts with ``prefix`` (lowercase hex), at most ``limit``."""
        with self._connection() as conn:
            rows = _rows(
                conn,
                "SELECT digest FROM sessions WHERE digest >= ? AND digest < ? AND expires_at > ? "
                "ORDER BY digest LIMIT ?",
                (prefix, prefix + "\U0010ffff", self._clock(), limit),
            )
        return [str(row[0]) for row in rows]

    def delete_all_batches(self, batch: int | None = None) -> Iterator[int]:
        """Delete every session (an incident: everyone logged out), ``batch`` rows per transaction.

        Yields each batch's count of *live* sessions (expired rows go too, uncounted), so the
        app's writers interleave between batches instead of waiting behind one long delete.
        """
        size = batch or self._gc_batch
        while True:
            with self._connection() as conn, self._transaction(conn):
                now = self._clock()
                rows = _rows(conn, "SELECT digest, expires_at > ? FROM sessions LIMIT ?", (now, size))
                conn.executemany(_DELETE_SESSION, [(row[0],) for row in rows])
            yield sum(int(row[1]) for row in rows)
            if len(rows) < size:
                return

    def iter_sessions(self, batch: int = 500) -> Iterator[tuple[str, Meta]]:
        """Every live session, in digest order, read ``batch`` rows per query (no long read lock)."""
        after = ""
        while True:
            with self._connection() as conn:
                rows = _rows(conn, _ITER_SESSIONS, (after, self._clock(), batch))
            for row in rows:
                try:
                    meta = _meta(row[1:])
                except CorruptRecord:
                    continue  # never listed; load and gc drop it
                if not meta.retired_until:  # a retired key is not a session of its own
                    yield str(row[0]), meta
            if len(rows) < batch:
                return
            after = str(rows[-1][0])


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
