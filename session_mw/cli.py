"""``python -m session_mw``: look at and clean a session store from a shell.

The store holds digests of tokens, never tokens, so nothing printed here can log anyone in;
listings show only the first 16 hex characters of a digest.

Exit codes: 0 done, 1 no session matched, 2 bad usage or configuration, 3 store unavailable.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .config import DEFAULT_STORE_URL, ENV_PREFIX, SessionConfig
from .drivers import SessionManager, SyncDriver
from .errors import ConfigError, StoreError, StoreUnavailable
from .events import SecurityEvents
from .manage import Sessions
from .stores import Store, open_store
from .stores.base import UNBOUNDED, Close, Delete, Meta, SessionsOf
from .stores.redis_target import SCHEMES as REDIS_SCHEMES

if TYPE_CHECKING:
    from .stores.redis import RedisStore
    from .stores.sqlite import SQLiteStore

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
PROG = "python -m session_mw"
_DIGEST = re.compile(r"^[0-9a-f]{12,64}$")
_REDIS_SCHEMES = tuple(REDIS_SCHEMES)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _printable(text: str) -> str:
    """User agents come from request headers: never let one drive the operator's terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- backends: what each store can report beyond the Store protocol --------------------------


class Ops(Protocol):
    """The ops a backend supports; ``store`` is the plain sync ``Store``."""

    @property
    def store(self) -> Store: ...

    def stats(self) -> dict[str, Any]: ...

    def matching(self, prefix: str) -> list[str]: ...

    def gc(self, progress: Callable[[int], None]) -> int | None: ...

    def delete_all(self, progress: Callable[[int], None]) -> int: ...

    def where(self) -> str: ...

    def describe(self, stats: dict[str, Any]) -> list[str]: ...


class SQLiteOps:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def stats(self) -> dict[str, Any]:
        s = self.store.stats()
        return {
            "backend": "sqlite",
            "path": s["path"],
            "sessions": s["sessions"],
            "users": s["users"],
            "expired_awaiting_gc": s["expired"],
            "size_bytes": s["file_bytes"] + s["wal_bytes"],
            "file_bytes": s["file_bytes"],
            "wal_bytes": s["wal_bytes"],
        }

    def describe(self, stats: dict[str, Any]) -> list[str]:
        return [
            f"store: sqlite ({stats['path']})",
            f"live sessions: {stats['sessions']}",
            f"users: {stats['users']}",
            f"expired, awaiting gc: {stats['expired_awaiting_gc']}",
            f"size: {stats['size_bytes']} bytes ({stats['file_bytes']} file + {stats['wal_bytes']} WAL)",
        ]

    def matching(self, prefix: str) -> list[str]:
        return self.store.digests_with_prefix(prefix, limit=2)

    def gc(self, progress: Callable[[int], None]) -> int | None:
        return _counted(self.store.gc_batches(), progress)

    def delete_all(self, progress: Callable[[int], None]) -> int:
        return _counted(self.store.delete_all_batches(), progress)

    def where(self) -> str:
        return f"the SQLite store {self.store.path}"


def _take(items: Iterator[Any], count: int) -> list[Any]:
    return list(itertools.islice(items, count))


def _counted(batches: Iterable[int], progress: Callable[[int], None]) -> int:
    total = 0
    for count in batches:
        total += count
        if count:
            progress(total)
    return total


class RedisOps:
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def _pattern(self, rest: str) -> str:
        return re.sub(r"([\\*?\[\]])", r"\\\1", self.store.prefix) + rest

    def _call(self, fn: Callable[[], Any]) -> Any:
        from .stores.redis import BACKEND_ERRORS

        try:
            return fn()
        except BACKEND_ERRORS as exc:
            raise self.store.unavailable(exc) from None

    def _count(self, pattern: str) -> int:
        return sum(1 for _ in self.store.client.scan_iter(match=pattern, count=1000))

    def stats(self) -> dict[str, Any]:
        sessions = self._call(lambda: self._count(self._pattern("s:*")))
        users = self._call(lambda: self._count(self._pattern("u:*")))
        memory = self._call(lambda: self.store.client.info("memory"))
        return {
            "backend": "redis",
            "key_prefix": self.store.prefix,
            "sessions": sessions,
            "users": users,
            "size_bytes": int(memory.get("used_memory", 0)),
        }

    def describe(self, stats: dict[str, Any]) -> list[str]:
        return [
            f"store: redis (key prefix {stats['key_prefix']!r})",
            f"live sessions: {stats['sessions']}",
            f"users: {stats['users']} (per-user indexes; may include users whose sessions just expired)",
            f"size: {stats['size_bytes']} bytes (used_memory of the whole Redis server)",
        ]

    def matching(self, prefix: str) -> list[str]:
        client, cut = self.store.client, len(self.store.prefix) + 2
        if len(prefix) == 64:
            return [prefix] if self._call(lambda: client.exists(self.store.session_key(prefix))) else []
        keys = self._call(lambda: list(client.scan_iter(match=self._pattern(f"s:{prefix}*"), count=1000)))
        return sorted(k.decode()[cut:] if isinstance(k, bytes) else str(k)[cut:] for k in keys)

    def gc(self, progress: Callable[[int], None]) -> int | None:
        return None  # Redis expires sessions itself (a TTL on every session key)

    def delete_all(self, progress: Callable[[int], None]) -> int:
        """UNLINK the store's own keys (sessions, user indexes, locks) in chunks; never FLUSHDB.

        Only the three namespaces the store writes are matched, so another app's keys that merely
        start with the same prefix are left alone.
        """
        return _counted(self._unlink_batches(), progress)

    def _unlink_batches(self, chunk: int = 500) -> Iterator[int]:
        client = self.store.client
        for namespace in ("s:", "u:", "l:"):  # sessions first: the count is theirs
            keys: Iterator[Any] = client.scan_iter(match=self._pattern(f"{namespace}*"), count=1000)
            while batch := self._call(partial(_take, keys, chunk)):
                removed = int(self._call(partial(client.unlink, *batch)))
                yield removed if namespace == "s:" else 0

    def where(self) -> str:
        return f"the Redis store {self.store.where} (key prefix {self.store.prefix!r})"


def _refuse_missing_sqlite_file(url: str) -> None:
    """Managing a store that was never written would create an empty one and report on that."""
    from .stores.sqlite import path_from_url

    path = os.path.abspath(path_from_url(url))  # relative to the working directory, as the app resolves it
    if not os.path.exists(path):
        raise ConfigError(
            f"no session store at {path} (the file does not exist): run this from the app's directory, "
            f"or pass --store-url (or set {ENV_PREFIX}STORE_URL) as the app has it"
        )


def _open(config: SessionConfig) -> Ops:
    scheme = _scheme(config.store_url)
    if scheme == "memory":
        raise ConfigError(
            "memory:// lives inside one process: there is nothing to manage from another one; "
            "pass --store-url with a sqlite:// or redis:// URL"
        )
    if scheme == "sqlite":
        _refuse_missing_sqlite_file(config.store_url)
    # the CLI reads and ends sessions by their metadata, which encryption at rest leaves readable
    store = open_store(config.replace(encryption_keys=()))
    if scheme in _REDIS_SCHEMES:
        from .stores.redis import RedisStore

        if isinstance(store, RedisStore):
            return RedisOps(store)
    from .stores.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteOps(store)
    store.execute(Close())
    raise ConfigError(f"the CLI does not support {scheme}:// stores")


def _config(args: argparse.Namespace, environ: dict[str, str]) -> SessionConfig:
    """The app's settings as ``SessionConfig.from_env`` reads them, the command line on top."""
    overrides: dict[str, Any] = {}
    if args.store_url is not None:
        overrides["store_url"] = args.store_url
    if args.key_prefix is not None:
        overrides["key_prefix"] = args.key_prefix
    return SessionConfig.from_env(environ=environ, **overrides)


# -- commands ------------------------------------------------------------------------------


def _manager(ops: Ops, events: SecurityEvents) -> SessionManager:
    # unbounded: the store's own expiry already reflects the app's idle timeout, which this
    # process may not know; the absolute deadline (stored in each session) still applies
    return SessionManager(SyncDriver(ops.store), Sessions(UNBOUNDED, events=events))


def cmd_stats(ops: Ops, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    stats = ops.stats()
    if args.json:
        print(json.dumps(stats, sort_keys=True), file=out)
    else:
        print("\n".join(ops.describe(stats)), file=out)
    return EXIT_OK


def _row(key: str, meta: Meta) -> dict[str, Any]:
    return {
        "digest_prefix": key[:16],
        "user_id": meta.user_id,
        "created_at": _iso(datetime.fromtimestamp(meta.created_at, tz=timezone.utc)),
        "last_seen": _iso(datetime.fromtimestamp(meta.last_seen, tz=timezone.utc)),
        "user_agent": meta.user_agent,
        "remember": meta.remember,
    }


def cmd_list(ops: Ops, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    found = ops.store.execute(SessionsOf(args.user, UNBOUNDED))
    found.sort(key=lambda row: row[1].last_seen, reverse=True)
    rows = [_row(key, meta) for key, meta in found]
    if args.json:
        print(json.dumps(rows), file=out)
        return EXIT_OK if rows else EXIT_NO_MATCH
    if not rows:
        print(f"no live sessions for user {_printable(args.user)!r}", file=err)
        return EXIT_NO_MATCH
    print(f"{'DIGEST PREFIX':<18}{'CREATED (UTC)':<22}{'LAST SEEN (UTC)':<22}USER AGENT", file=out)
    for row in rows:
        agent = _printable(row["user_agent"]) or "-"
        print(f"{row['digest_prefix']:<18}{row['created_at']:<22}{row['last_seen']:<22}{agent}", file=out)
    return EXIT_OK


def _sessions(count: int) -> str:
    return f"{count} session{'s' * (count != 1)}"


def cmd_revoke(ops: Ops, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.all:
        return _revoke_everything(ops, args, out, err)
    if args.user is not None:
        count = _manager(ops, args.events).revoke_all(args.user)
        if not count:
            print(f"no live sessions for user {_printable(args.user)!r}", file=err)
            return EXIT_NO_MATCH
        print(f"revoked {_sessions(count)} of user {_printable(args.user)!r}", file=out)
        return EXIT_OK
    prefix = args.session_digest.strip().lower()
    if not _DIGEST.match(prefix):
        raise ConfigError("--session-digest takes a 64-character hex digest or a unique prefix of at least 12")
    found = ops.matching(prefix)
    if not found:
        print(f"no live session has a digest starting with {prefix}", file=err)
        return EXIT_NO_MATCH
    if len(found) > 1:
        raise ConfigError(f"the prefix {prefix} matches more than one session; give more characters")
    ops.store.execute(Delete(found[0]))
    args.events.emit("revoked_by_admin", found[0], detail="revoke --session-digest")
    print(f"revoked session {found[0][:16]}", file=out)
    return EXIT_OK


def _revoke_everything(ops: Ops, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Everyone logged out; without ``--yes`` it only says what it would end (no prompt: scripts run it too)."""
    if not args.yes:
        live = ops.stats()["sessions"]
        raise ConfigError(f"revoke --all would end all {_sessions(live)} in {ops.where()}: add --yes to do it")
    count = ops.delete_all(lambda n: print(f"revoked {n} sessions...", file=err, flush=True))
    if not count:
        print(f"no live sessions in {ops.where()}", file=err)
        return EXIT_NO_MATCH
    args.events.emit("revoked_by_admin", detail=f"revoke --all: {_sessions(count)}")
    print(f"revoked all {_sessions(count)} in {ops.where()}", file=out)
    return EXIT_OK


def cmd_gc(ops: Ops, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    total = ops.gc(lambda n: print(f"collected {n} sessions...", file=err, flush=True))
    if total is None:
        print("nothing to do: Redis expires sessions itself", file=out)
    else:
        print(f"removed {total} expired session{'s' * (total != 1)}", file=out)
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------


def _common(default: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store-url",
        default=default,
        help=f"the app's store URL (default: ${ENV_PREFIX}STORE_URL, else the app's default {DEFAULT_STORE_URL})",
    )
    common.add_argument(
        "--key-prefix", default=default, help=f"Redis key prefix (default: ${ENV_PREFIX}KEY_PREFIX or session_mw:)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and clean a session_mw store (SQLite or Redis).",
        epilog="exit codes: 0 done, 1 no session matched, 2 bad usage or configuration, 3 store unavailable",
        parents=[_common(None)],
    )
    # SUPPRESS: an option given before the subcommand is not reset by the subcommand's default
    sub_common = _common(argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser("stats", parents=[sub_common], help="live sessions, users and store size")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(run=cmd_stats)

    listing = commands.add_parser("list", parents=[sub_common], help="a user's live sessions")
    listing.add_argument("--user", required=True, help="the user id the app logged in")
    listing.add_argument("--json", action="store_true", help="a JSON array")
    listing.set_defaults(run=cmd_list)

    revoke = commands.add_parser("revoke", parents=[sub_common], help="end sessions now")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="every session of this user (log out everywhere)")
    which.add_argument(
        "--session-digest", metavar="DIGEST", help="one session: its 64-hex digest or a unique prefix (>= 12)"
    )
    which.add_argument("--all", action="store_true", help="every session in the store (an incident); needs --yes")
    revoke.add_argument("--yes", action="store_true", help="confirm --all (without it, --all says what it would end)")
    revoke.set_defaults(run=cmd_revoke)

    gc = commands.add_parser("gc", parents=[sub_common], help="delete expired sessions (SQLite)")
    gc.set_defaults(run=cmd_gc)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code (usage errors exit 2 from argparse)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    try:
        config = _config(args, dict(os.environ) if environ is None else environ)
        # events keyed like the app's (with its digest_key), so an operator's revocation matches them
        args.events = SecurityEvents(config.digest_key)
        ops = _open(config)
        try:
            code: int = args.run(ops, args, out, err)
            return code
        finally:
            ops.store.execute(Close())
    except ConfigError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=err)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"{PROG}: store unavailable: {_one_line(exc)}", file=err)
        return EXIT_UNAVAILABLE
    except StoreError as exc:
        print(f"{PROG}: store error: {_one_line(exc)}", file=err)
        return EXIT_UNAVAILABLE
