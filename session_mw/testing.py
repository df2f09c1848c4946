"""The store conformance suite, for session_mw's own stores and for third-party ones.

Subclass ``StoreContract`` in a pytest module and provide a ``store`` fixture that yields a
fresh, empty ``Store`` (or an ``AsyncStore`` wrapped in ``SyncFromAsync``)::

    from session_mw.testing import StoreContract

    class TestMyStore(StoreContract, LockContract):   # LockContract only if it has locks
        @pytest.fixture
        def store(self):
            s = MyStore(...)
            yield s
            s.close()

Every test uses real time only in small amounts (expiry tests sleep well under a second).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .stores.base import AsyncStore, Meta, Record, Store, Touch, Write

_T = TypeVar("_T")

try:
    import pytest
except ImportError as exc:  # pragma: no cover
    raise ImportError("session_mw.testing needs pytest installed") from exc


class SyncFromAsync:
    """Drive an ``AsyncStore`` from sync tests, on one event loop of its own."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()

    def _run(self, make: Callable[[], Awaitable[_T]]) -> _T:
        with self._lock:
            return self._loop.run_until_complete(make())

    def load(self, key: str, touch: Touch) -> Record | None:
        return self._run(lambda: self.store.load(key, touch))

    def write(self, op: Write) -> bool:
        return self._run(lambda: self.store.write(op))

    def delete(self, key: str) -> None:
        self._run(lambda: self.store.delete(key))

    def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        return self._run(lambda: self.store.user_sessions(user_id))

    def gc(self, now: float) -> int:
        return self._run(lambda: self.store.gc(now))

    def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        acquire: Any = self.store.acquire_lock  # type: ignore[attr-defined]
        return bool(self._run(lambda: acquire(key, owner, lease)))

    def release_lock(self, key: str, owner: str) -> None:
        release: Any = self.store.release_lock  # type: ignore[attr-defined]
        self._run(lambda: release(key, owner))

    def close(self) -> None:
        self._run(self.store.close)
        self._loop.close()


IDLE = 600.0
ABSOLUTE = 3600.0


def meta(now: float | None = None, user: str | None = None, **changes: Any) -> Meta:
    now = time.time() if now is None else now
    fields: dict[str, Any] = {
        "created_at": now,
        "last_seen": now,
        "absolute_deadline": now + ABSOLUTE,
        "user_id": user,
        "user_agent": "pytest/1.0",
        "remember": False,
    }
    fields.update(changes)
    return Meta(**fields)


def create(store: Store, key: str, data: dict[str, bytes], user: str | None = None, ttl: float = IDLE) -> Meta:
    m = meta(user=user)
    assert store.write(Write("create", key, m, ttl, set=data)) is True
    return m


def touch(now: float | None = None, interval: float = 60.0) -> Touch:
    return Touch(time.time() if now is None else now, interval, IDLE)


def _digest(n: int) -> str:
    return f"{n:064x}"


class StoreContract:
    """Behaviour every store must have. Needs a ``store`` fixture (a fresh, empty ``Store``)."""

    def test_missing_session_loads_as_none(self, store: Store) -> None:
        assert store.load(_digest(1), touch()) is None

    def test_create_then_load_round_trips_data_and_meta(self, store: Store) -> None:
        m = create(store, _digest(1), {"cart": b'["apple"]', "n": b"1"}, user="alice")
        record = store.load(_digest(1), touch(interval=IDLE - 1))
        assert record is not None
        assert record.data == {"cart": b'["apple"]', "n": b"1"}
        assert record.meta == m

    def test_update_writes_only_the_changed_keys(self, store: Store) -> None:
        m = create(store, _digest(1), {"a": b"1", "b": b"2", "c": b"3"})
        assert store.write(Write("update", _digest(1), m, IDLE, set={"b": b"20", "d": b"4"}, delete=("c",)))
        record = store.load(_digest(1), touch())
        assert record is not None and record.data == {"a": b"1", "b": b"20", "d": b"4"}

    def test_update_of_a_deleted_session_does_not_resurrect_it(self, store: Store) -> None:
        m = create(store, _digest(1), {"a": b"1"})
        store.delete(_digest(1))
        assert store.write(Write("update", _digest(1), m, IDLE, set={"a": b"2"})) is False
        assert store.load(_digest(1), touch()) is None

    def test_delete_is_idempotent(self, store: Store) -> None:
        create(store, _digest(1), {"a": b"1"})
        store.delete(_digest(1))
        store.delete(_digest(1))
        assert store.load(_digest(1), touch()) is None

    def test_rotate_moves_everything_and_kills_the_old_key(self, store: Store) -> None:
        old = create(store, _digest(1), {"cart": b"[1]"}, user="alice")
        new_meta = meta(user="alice", created_at=old.created_at)
        op = Write(
            "rotate",
            _digest(2),
            new_meta,
            IDLE,
            set={"cart": b"[1]", "x": b"2"},
            old_key=_digest(1),
            previous_user="alice",
        )
        assert store.write(op) is True
        assert store.load(_digest(1), touch()) is None
        record = store.load(_digest(2), touch())
        assert record is not None and record.data == {"cart": b"[1]", "x": b"2"}
        assert [k for k, _ in store.user_sessions("alice")] == [_digest(2)]

    def test_login_rotation_moves_the_session_into_the_users_index(self, store: Store) -> None:
        create(store, _digest(1), {"cart": b"[1]"})
        op = Write("rotate", _digest(2), meta(user="bob"), IDLE, set={"cart": b"[1]"}, old_key=_digest(1))
        assert store.write(op)
        assert [k for k, _ in store.user_sessions("bob")] == [_digest(2)]

    def test_touch_refreshes_last_seen_only_when_due(self, store: Store) -> None:
        m = create(store, _digest(1), {"a": b"1"})
        later = m.last_seen + 30
        record = store.load(_digest(1), touch(later, interval=60))
        assert record is not None and record.meta.last_seen == m.last_seen
        record = store.load(_digest(1), touch(m.last_seen + 90, interval=60))
        assert record is not None and record.meta.last_seen == m.last_seen  # returned as loaded
        record = store.load(_digest(1), touch(m.last_seen + 100, interval=60))
        assert record is not None and record.meta.last_seen == m.last_seen + 90  # the touch stuck
        assert record.data == {"a": b"1"}

    def test_an_expired_session_is_never_touched(self, store: Store) -> None:
        m = create(store, _digest(1), {"a": b"1"})
        store.load(_digest(1), touch(m.last_seen + IDLE + 5))
        record = store.load(_digest(1), touch(m.last_seen + 1))
        assert record is not None and record.meta.last_seen == m.last_seen

    def test_the_store_expires_a_session_after_its_ttl(self, store: Store) -> None:
        create(store, _digest(1), {"a": b"1"}, ttl=0.2)
        assert store.load(_digest(1), touch()) is not None
        time.sleep(0.4)
        assert store.load(_digest(1), touch()) is None

    def test_per_user_index_lists_and_forgets(self, store: Store) -> None:
        for n in (1, 2, 3):
            create(store, _digest(n), {"n": str(n).encode()}, user="alice")
        create(store, _digest(9), {}, user="bob")
        assert sorted(k for k, _ in store.user_sessions("alice")) == [_digest(1), _digest(2), _digest(3)]
        store.delete(_digest(2))
        assert sorted(k for k, _ in store.user_sessions("alice")) == [_digest(1), _digest(3)]
        assert [k for k, _ in store.user_sessions("bob")] == [_digest(9)]
        assert store.user_sessions("nobody") == []

    def test_stale_index_entries_are_never_returned(self, store: Store) -> None:
        create(store, _digest(1), {"a": b"1"}, user="alice", ttl=0.2)
        create(store, _digest(2), {"a": b"1"}, user="alice")
        time.sleep(0.4)
        assert [k for k, _ in store.user_sessions("alice")] == [_digest(2)]
        assert [k for k, _ in store.user_sessions("alice")] == [_digest(2)]

    def test_user_metadata_is_returned_by_the_index(self, store: Store) -> None:
        m = create(store, _digest(1), {}, user="alice")
        [(key, listed)] = store.user_sessions("alice")
        assert key == _digest(1) and listed == m

    def test_concurrent_writers_to_different_keys_all_survive(self, store: Store) -> None:
        m = create(store, _digest(1), {})
        errors: list[BaseException] = []

        def writer(name: str) -> None:
            try:
                for i in range(20):
                    store.write(Write("update", _digest(1), m, IDLE, set={name: str(i).encode()}))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        record = store.load(_digest(1), touch())
        assert record is not None
        assert record.data == {f"w{n}": b"19" for n in range(4)}

    def test_gc_reports_a_count_and_keeps_live_sessions(self, store: Store) -> None:
        create(store, _digest(1), {"a": b"1"}, ttl=0.2)
        create(store, _digest(2), {"a": b"1"})
        time.sleep(0.4)
        assert store.gc(time.time()) >= 0
        assert store.load(_digest(1), touch()) is None
        assert store.load(_digest(2), touch()) is not None

    def test_values_are_bytes_and_survive_any_content(self, store: Store) -> None:
        odd = {"k:with:colons": b"\x00\xff", "_c": b"not meta", "": b'""', "\u00e9": "\u00e9".encode()}
        create(store, _digest(1), odd)
        record = store.load(_digest(1), touch())
        assert record is not None and record.data == odd


class LockContract:
    """For stores that offer ``locking=True`` (``LockingStore``): the lease-based session lock."""

    def test_one_owner_at_a_time(self, store: Any) -> None:
        assert store.acquire_lock(_digest(1), "a", 5.0) is True
        assert store.acquire_lock(_digest(1), "b", 5.0) is False
        assert store.acquire_lock(_digest(2), "b", 5.0) is True  # another session is another lock
        assert store.acquire_lock(_digest(1), "a", 5.0) is True  # the owner may renew
        store.release_lock(_digest(1), "b")  # not the owner: nothing happens
        assert store.acquire_lock(_digest(1), "b", 5.0) is False
        store.release_lock(_digest(1), "a")
        assert store.acquire_lock(_digest(1), "b", 5.0) is True

    def test_a_lease_ends_by_itself(self, store: Any) -> None:
        assert store.acquire_lock(_digest(1), "crashed", 0.2) is True
        assert store.acquire_lock(_digest(1), "next", 5.0) is False
        time.sleep(0.35)
        assert store.acquire_lock(_digest(1), "next", 5.0) is True


__all__ = ["LockContract", "StoreContract", "SyncFromAsync", "meta", "pytest"]
