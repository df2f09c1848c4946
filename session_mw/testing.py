"""The store conformance suite, for session_mw's own stores and for third-party ones.

Subclass ``StoreContract`` in a pytest module and provide a ``store`` fixture that yields a
fresh, empty ``Store`` running on the suite's ``clock`` (an ``AsyncStore`` goes through
``SyncFromAsync``)::

    from session_mw.testing import LockContract, StoreContract

    class TestMyStore(StoreContract, LockContract):   # LockContract only if it has locks
        @pytest.fixture
        def store(self, clock):
            s = MyStore(..., clock=clock)
            yield s
            s.execute(Close())

Each test states one precondition of ``session_mw.stores.base``; time moves only by the
clock, so no test sleeps (but the lease test, which must also wait for a server's own TTL).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any

from .stores.base import (
    LOCKS,
    AcquireLock,
    AsyncStore,
    Collect,
    Create,
    Delete,
    Lifetime,
    Load,
    Meta,
    Op,
    R,
    Record,
    ReleaseLock,
    RevokeAll,
    Rotate,
    SessionsOf,
    Store,
    Update,
)

try:
    import pytest
except ImportError as exc:  # pragma: no cover
    raise ImportError("session_mw.testing needs pytest installed") from exc


class SyncFromAsync:
    """Drive an ``AsyncStore`` from sync tests, on one event loop of its own."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.capabilities = store.capabilities
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SyncFromAsync({self.store!r})"

    def execute(self, op: Op[R]) -> R:
        with self._lock:
            return self._loop.run_until_complete(self.store.execute(op))

    def close_loop(self) -> None:
        self._loop.close()


class FakeClock:
    """A clock the tests move by hand; stores and engines take it as ``clock``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


IDLE = 600.0
ABSOLUTE = 3600.0
LIFE = Lifetime(IDLE, ABSOLUTE, 60.0)


def meta(now: float, user: str | None = None, **changes: Any) -> Meta:
    fields: dict[str, Any] = {
        "created_at": now,
        "last_seen": now,
        "absolute_deadline": now + ABSOLUTE,
        "user_id": user,
        "user_agent": "pytest/1.0",
        "remember": False,
        "public_id": f"p{int(now) % 10**6:06d}",
    }
    fields.update(changes)
    return Meta(**fields)


def digest(n: int) -> str:
    return f"{n:064x}"


def create(store: Store, clock: FakeClock, n: int, data: dict[str, bytes], user: str | None = None) -> Meta:
    m = meta(clock(), user)
    store.execute(Create(digest(n), m, data, LIFE))
    return m


def load(store: Store, n: int, lifetime: Lifetime = LIFE) -> Record | None:
    return store.execute(Load(digest(n), lifetime))


GRACE = 30.0


def retire(store: Store, clock: FakeClock, user: str = "alice") -> tuple[Meta, Meta, float]:
    """Session ``digest(1)`` of ``user`` rotated to ``digest(2)`` with a ``GRACE`` window, once a
    touch of it was due: its meta before the rotate, the new key's meta, when it rotated."""
    old = create(store, clock, 1, {"cart": b"[1]"}, user=user)
    clock.advance(61)
    new = meta(clock(), user, created_at=old.created_at, authenticated_at=clock(), issued_at=clock(), binding="b")
    op = Rotate(digest(1), digest(2), new, {"cart": b"[1]", "x": b"2"}, LIFE, old_user_id=user, grace=GRACE)
    assert store.execute(op) is True
    return old, new, clock()


def listed(store: Store, user: str, lifetime: Lifetime = LIFE) -> list[str]:
    return [key for key, _ in store.execute(SessionsOf(user, lifetime))]


class StoreContract:
    """Behaviour every store must have. Needs a ``store`` fixture on the ``clock`` fixture."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    # -- load and create -------------------------------------------------------------------

    def test_missing_session_loads_as_none(self, store: Store) -> None:
        assert load(store, 1) is None

    def test_create_then_load_round_trips_data_and_meta(self, store: Store, clock: FakeClock) -> None:
        m = create(store, clock, 1, {"cart": b'["apple"]', "n": b"1"}, user="alice")
        record = load(store, 1)
        assert record is not None
        assert dict(record.data) == {"cart": b'["apple"]', "n": b"1"}
        assert record.meta == m

    def test_values_are_bytes_and_survive_any_content(self, store: Store, clock: FakeClock) -> None:
        odd = {"k:with:colons": b"\x00\xff", "_c": b"not meta", "": b'""', "\u00e9": "\u00e9".encode()}
        create(store, clock, 1, odd)
        record = load(store, 1)
        assert record is not None and dict(record.data) == odd

    def test_a_session_with_thousands_of_keys_round_trips(self, store: Store, clock: FakeClock) -> None:
        data = {f"key{i}": b"1" for i in range(5000)}
        create(store, clock, 1, data)
        assert store.execute(Update(digest(1), LIFE, {f"key{i}": b"2" for i in range(1, 5000)}, ("key0",)))
        record = load(store, 1)
        assert record is not None and len(record.data) == 4999 and record.data["key1"] == b"2"

    def test_the_security_fields_of_meta_round_trip(self, store: Store, clock: FakeClock) -> None:
        """authenticated_at, issued_at and binding are stored as given by Create and Rotate, and
        an Update (a touch, remember) leaves them as they were."""
        now = clock()
        m = meta(now, "alice", authenticated_at=now - 7.25, issued_at=now, binding="b1:0123abcd")
        store.execute(Create(digest(1), m, {"a": b"1"}, LIFE))
        record = load(store, 1)
        assert record is not None and record.meta == m
        clock.advance(5)
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"}, remember=True))
        record = load(store, 1)
        assert record is not None and record.meta == replace(m, last_seen=clock(), remember=True)
        new = meta(clock(), "alice", created_at=now, authenticated_at=clock(), issued_at=clock(), binding="b2:\u00e9")
        assert store.execute(Rotate(digest(1), digest(2), new, {"a": b"2"}, LIFE, old_user_id="alice"))
        record = load(store, 2)
        assert record is not None and record.meta == new
        assert store.execute(SessionsOf("alice", LIFE)) == [(digest(2), new)]

    # -- the touch ---------------------------------------------------------------------------

    def test_load_returns_the_meta_after_its_touch(self, store: Store, clock: FakeClock) -> None:
        m = create(store, clock, 1, {"a": b"1"})
        clock.advance(30)  # inside the touch interval: nothing changes
        record = load(store, 1)
        assert record is not None and record.meta.last_seen == m.last_seen
        clock.advance(40)  # now due: the record comes back touched, and the touch stuck
        record = load(store, 1)
        assert record is not None and record.meta.last_seen == m.last_seen + 70
        clock.advance(1)
        record = load(store, 1)
        assert record is not None and record.meta.last_seen == m.last_seen + 70
        assert dict(record.data) == {"a": b"1"}

    def test_the_touch_keeps_a_session_alive_past_its_first_idle_deadline(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"})
        for _ in range(5):
            clock.advance(IDLE * 0.9)
            assert load(store, 1) is not None

    def test_an_idle_session_is_gone_and_never_touched(self, store: Store, clock: FakeClock) -> None:
        m = create(store, clock, 1, {"a": b"1"})
        clock.advance(IDLE)
        assert load(store, 1) is None
        clock.advance(-IDLE + 1)  # had the expired load touched it, last_seen would have moved
        record = load(store, 1)
        assert record is None or record.meta.last_seen == m.last_seen

    def test_the_absolute_deadline_ends_even_an_active_session(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"})
        while clock() + IDLE * 0.5 < 1_700_000_000.0 + ABSOLUTE:
            clock.advance(IDLE * 0.5)
            assert load(store, 1) is not None
        clock.advance(IDLE * 0.5)
        assert load(store, 1) is None

    def test_a_lowered_absolute_timeout_binds_live_sessions(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"})
        clock.advance(100)
        assert load(store, 1, Lifetime(IDLE, 101, 60)) is not None
        clock.advance(1)
        assert load(store, 1, Lifetime(IDLE, 101, 60)) is None
        assert listed(store, "nobody", Lifetime(IDLE, 101, 60)) == []

    def test_a_lowered_idle_timeout_binds_live_sessions(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        clock.advance(50)
        short = Lifetime(50, ABSOLUTE, 5)
        assert load(store, 1, short) is None
        assert listed(store, "alice", short) == []
        assert not store.execute(Update(digest(1), short, {"a": b"2"}))

    # -- update -----------------------------------------------------------------------------

    def test_update_writes_only_the_changed_keys_and_touches(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1", "b": b"2", "c": b"3"})
        clock.advance(5)
        assert store.execute(Update(digest(1), LIFE, {"b": b"20", "d": b"4"}, ("c",), remember=True)) is True
        record = load(store, 1)
        assert record is not None and dict(record.data) == {"a": b"1", "b": b"20", "d": b"4"}
        assert record.meta.remember is True and record.meta.last_seen == clock()

    def test_update_of_a_deleted_session_does_not_resurrect_it(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        store.execute(Delete(digest(1)))
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"})) is False
        assert load(store, 1) is None and listed(store, "alice") == []

    def test_update_of_an_expired_session_does_not_resurrect_it(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"})
        clock.advance(IDLE)
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"})) is False
        clock.advance(-IDLE + 1)
        record = load(store, 1)
        assert record is None or record.data["a"] == b"1"

    # -- rotate -----------------------------------------------------------------------------

    def test_rotate_moves_everything_and_kills_the_old_key(self, store: Store, clock: FakeClock) -> None:
        old = create(store, clock, 1, {"cart": b"[1]"}, user="alice")
        new = meta(clock(), "alice", created_at=old.created_at)
        op = Rotate(digest(1), digest(2), new, {"cart": b"[1]", "x": b"2"}, LIFE, old_user_id="alice")
        assert store.execute(op) is True
        assert load(store, 1) is None
        record = load(store, 2)
        assert record is not None and dict(record.data) == {"cart": b"[1]", "x": b"2"} and record.meta == new
        assert listed(store, "alice") == [digest(2)]

    def test_rotate_of_a_dead_key_writes_nothing(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"cart": b"[1]"}, user="alice")
        store.execute(Delete(digest(1), "alice"))
        op = Rotate(digest(1), digest(2), meta(clock(), "alice"), {"cart": b"[1]"}, LIFE, "alice")
        assert store.execute(op) is False
        assert load(store, 2) is None and listed(store, "alice") == []

    def test_rotate_of_an_expired_key_writes_nothing(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"cart": b"[1]"}, user="alice")
        clock.advance(IDLE)
        op = Rotate(digest(1), digest(2), meta(clock(), "alice"), {"cart": b"[1]"}, LIFE, "alice")
        assert store.execute(op) is False
        assert load(store, 2) is None and listed(store, "alice") == []

    def test_two_rotates_of_one_key_leave_one_live_session(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        first = Rotate(digest(1), digest(2), meta(clock(), "alice"), {"a": b"1"}, LIFE, "alice")
        second = Rotate(digest(1), digest(3), meta(clock(), "alice"), {"a": b"1"}, LIFE, "alice")
        assert store.execute(first) is True
        assert store.execute(second) is False
        assert load(store, 3) is None and listed(store, "alice") == [digest(2)]

    def test_a_login_rotation_moves_the_session_between_indexes(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"cart": b"[1]"})
        assert store.execute(Rotate(digest(1), digest(2), meta(clock(), "bob"), {"cart": b"[1]"}, LIFE))
        assert listed(store, "bob") == [digest(2)]
        assert store.execute(Rotate(digest(2), digest(3), meta(clock(), "carol"), {}, LIFE, old_user_id="bob"))
        assert listed(store, "bob") == [] and listed(store, "carol") == [digest(3)]

    # -- rotate with a grace window ------------------------------------------------------------
    #
    # The old key of a grace rotate is retired: read-only, untouched, unlisted, for GRACE seconds.
    # RevokeAll ends a retired key but does not return it: it is not a live session of its own
    # (its successor is the live one, and is counted), so "revoked N sessions" counts no session twice.

    def test_a_grace_rotate_leaves_the_old_key_readable_as_it_was(self, store: Store, clock: FakeClock) -> None:
        old, new, rotated_at = retire(store, clock)
        clock.advance(10)
        record = load(store, 1)
        assert record is not None and dict(record.data) == {"cart": b"[1]"}
        # a touch was due: none happened
        assert record.meta == replace(old, retired_until=rotated_at + GRACE, successor=digest(2))
        clock.advance(GRACE - 10.5)
        record = load(store, 1)
        assert record is not None and record.meta == replace(old, retired_until=rotated_at + GRACE, successor=digest(2))
        record = load(store, 2)
        assert record is not None and dict(record.data) == {"cart": b"[1]", "x": b"2"} and record.meta == new

    def test_a_retired_key_is_gone_after_its_grace(self, store: Store, clock: FakeClock) -> None:
        retire(store, clock)
        clock.advance(GRACE)
        assert load(store, 1) is None
        assert load(store, 1) is None
        assert store.execute(Update(digest(1), LIFE, {"cart": b"[9]"})) is False
        assert load(store, 2) is not None and listed(store, "alice") == [digest(2)]
        store.execute(Collect())
        assert load(store, 1) is None and load(store, 2) is not None

    def test_a_retired_key_still_obeys_the_lifetime(self, store: Store, clock: FakeClock) -> None:
        old, _, rotated_at = retire(store, clock)
        elapsed = rotated_at - old.created_at
        assert load(store, 1, Lifetime(IDLE, elapsed, 60)) is None  # past the absolute timeout
        assert load(store, 1, Lifetime(elapsed, ABSOLUTE, 6)) is None  # idle since its last touch
        assert load(store, 2, Lifetime(elapsed, ABSOLUTE, 6)) is not None

    def test_a_retired_key_takes_no_write(self, store: Store, clock: FakeClock) -> None:
        old, new, rotated_at = retire(store, clock)
        assert store.execute(Update(digest(1), LIFE, {"cart": b"[9]"}, ("x",), remember=True)) is False
        assert store.execute(Rotate(digest(1), digest(3), meta(clock(), "alice"), {}, LIFE, "alice")) is False
        assert store.execute(Rotate(digest(1), digest(4), meta(clock(), "alice"), {}, LIFE, "alice", GRACE)) is False
        record = load(store, 1)
        assert record is not None and dict(record.data) == {"cart": b"[1]"}
        assert record.meta == replace(old, retired_until=rotated_at + GRACE, successor=digest(2))
        assert load(store, 3) is None and load(store, 4) is None
        assert store.execute(SessionsOf("alice", LIFE)) == [(digest(2), new)]

    def test_delete_ends_a_retired_key(self, store: Store, clock: FakeClock) -> None:
        retire(store, clock)
        store.execute(Delete(digest(1), "alice"))
        assert load(store, 1) is None
        assert load(store, 2) is not None and listed(store, "alice") == [digest(2)]
        create(store, clock, 5, {"a": b"1"}, user="bob")
        assert store.execute(Rotate(digest(5), digest(6), meta(clock(), "bob"), {}, LIFE, "bob", GRACE))
        store.execute(Delete(digest(5)))  # without the user
        assert load(store, 5) is None and listed(store, "bob") == [digest(6)]

    def test_revoke_all_ends_a_retired_key_and_does_not_count_it(self, store: Store, clock: FakeClock) -> None:
        retire(store, clock)
        assert store.execute(RevokeAll("alice", LIFE, keep=digest(2))) == []
        assert load(store, 1) is None and load(store, 2) is not None
        assert store.execute(Rotate(digest(2), digest(3), meta(clock(), "alice"), {}, LIFE, "alice", GRACE))
        assert load(store, 2) is not None
        assert store.execute(RevokeAll("alice", LIFE)) == [digest(3)]
        assert load(store, 2) is None and load(store, 3) is None and listed(store, "alice") == []

    def test_the_listing_never_shows_a_retired_key(self, store: Store, clock: FakeClock) -> None:
        _, new, _ = retire(store, clock)
        assert store.execute(SessionsOf("alice", LIFE)) == [(digest(2), new)]
        clock.advance(GRACE)
        assert store.execute(SessionsOf("alice", LIFE)) == [(digest(2), new)]

    def test_the_new_key_of_a_grace_rotate_is_a_normal_session(self, store: Store, clock: FakeClock) -> None:
        _, new, _ = retire(store, clock)
        assert store.execute(Update(digest(2), LIFE, {"x": b"3"}))
        clock.advance(61)  # past the grace, and a touch is due
        record = load(store, 2)
        assert record is not None and record.meta == replace(new, last_seen=clock()) and record.data["x"] == b"3"
        assert store.execute(Rotate(digest(2), digest(3), meta(clock(), "alice"), {"y": b"1"}, LIFE, "alice"))
        assert load(store, 2) is None and load(store, 1) is None
        record = load(store, 3)
        assert record is not None and dict(record.data) == {"y": b"1"} and listed(store, "alice") == [digest(3)]

    def test_a_rotate_without_grace_ends_the_old_key_at_once(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        assert store.execute(Rotate(digest(1), digest(2), meta(clock(), "alice"), {}, LIFE, "alice", grace=0.0))
        assert load(store, 1) is None
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"})) is False
        assert store.execute(RevokeAll("alice", LIFE, keep=digest(2))) == []

    def test_retirement_is_the_stores_a_new_session_is_never_retired(self, store: Store, clock: FakeClock) -> None:
        """``retired_until`` is set by the store on the old key of a grace rotate only: a Create or
        the new key of a Rotate that carries one is a current session."""
        m = meta(clock(), "alice", retired_until=clock() + 100, successor=digest(9))
        store.execute(Create(digest(1), m, {"a": b"1"}, LIFE))
        record = load(store, 1)
        assert record is not None and record.meta == replace(m, retired_until=0.0, successor="")
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"}))
        assert store.execute(Rotate(digest(1), digest(2), m, {"a": b"2"}, LIFE, "alice", GRACE))
        record = load(store, 2)
        assert record is not None and record.meta == replace(m, retired_until=0.0, successor="")
        assert listed(store, "alice") == [digest(2)]

    # -- delete and the index -----------------------------------------------------------------

    def test_delete_is_idempotent(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        store.execute(Delete(digest(1), "alice"))
        store.execute(Delete(digest(1), "alice"))
        store.execute(Delete(digest(9)))
        assert load(store, 1) is None and listed(store, "alice") == []

    def test_per_user_index_lists_oldest_first_and_forgets(self, store: Store, clock: FakeClock) -> None:
        for n in (3, 1, 2):
            create(store, clock, n, {"n": str(n).encode()}, user="alice")
            clock.advance(1)
        create(store, clock, 9, {}, user="bob")
        assert listed(store, "alice") == [digest(3), digest(1), digest(2)]
        store.execute(Delete(digest(1)))  # without the user: the index tolerates the stale entry
        assert listed(store, "alice") == [digest(3), digest(2)]
        assert listed(store, "bob") == [digest(9)] and listed(store, "nobody") == []

    def test_revoke_all_ends_every_live_session_of_the_user_but_the_kept_one(
        self, store: Store, clock: FakeClock
    ) -> None:
        for n in (1, 2, 3):
            create(store, clock, n, {"n": b"1"}, user="alice")
        create(store, clock, 9, {"n": b"1"}, user="bob")
        revoked: list[str] = store.execute(RevokeAll("alice", LIFE, keep=digest(2)))
        assert sorted(revoked) == [digest(1), digest(3)]
        assert load(store, 1) is None and load(store, 3) is None and load(store, 2) is not None
        assert listed(store, "alice") == [digest(2)] and listed(store, "bob") == [digest(9)]
        assert store.execute(RevokeAll("alice", LIFE)) == [digest(2)]
        assert store.execute(RevokeAll("alice", LIFE)) == [] and listed(store, "alice") == []
        assert store.execute(RevokeAll("nobody", LIFE)) == []

    def test_revoke_all_counts_no_expired_session_and_no_rotated_away_one(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        clock.advance(IDLE - 1)
        create(store, clock, 2, {"a": b"1"}, user="alice")
        assert store.execute(Rotate(digest(2), digest(3), meta(clock(), "alice"), {}, LIFE, old_user_id="alice"))
        clock.advance(1)  # digest(1) idled out
        assert store.execute(RevokeAll("alice", LIFE)) == [digest(3)]
        assert load(store, 3) is None
        assert not store.execute(Rotate(digest(3), digest(4), meta(clock(), "alice"), {}, LIFE, old_user_id="alice"))
        assert load(store, 4) is None and listed(store, "alice") == []

    def test_the_index_never_returns_an_expired_session(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"}, user="alice")
        clock.advance(IDLE - 1)
        create(store, clock, 2, {"a": b"1"}, user="alice")
        clock.advance(1)
        assert listed(store, "alice") == [digest(2)]
        assert listed(store, "alice") == [digest(2)]

    def test_the_index_returns_the_stored_meta(self, store: Store, clock: FakeClock) -> None:
        m = create(store, clock, 1, {}, user="alice")
        [(key, listed_meta)] = store.execute(SessionsOf("alice", LIFE))
        assert key == digest(1) and listed_meta == m

    # -- many writers, garbage ----------------------------------------------------------------

    def test_concurrent_writers_to_different_keys_all_survive(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {})
        errors: list[BaseException] = []

        def writer(name: str) -> None:
            try:
                for i in range(20):
                    assert store.execute(Update(digest(1), LIFE, {name: str(i).encode()}))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        record = load(store, 1)
        assert record is not None and dict(record.data) == {f"w{n}": b"19" for n in range(4)}

    def test_gc_keeps_live_sessions_and_counts_what_it_removed(self, store: Store, clock: FakeClock) -> None:
        create(store, clock, 1, {"a": b"1"})
        clock.advance(IDLE - 1)
        create(store, clock, 2, {"a": b"1"})
        clock.advance(1)
        removed = store.execute(Collect())
        assert removed in (0, 1)  # 0 only for a backend that expires sessions itself (Redis)
        assert store.execute(Collect()) == 0
        assert load(store, 1) is None and load(store, 2) is not None


class LockContract:
    """For stores with the ``locks`` capability (``locking=True``): the lease-based session lock."""

    def test_the_store_declares_locks(self, store: Store) -> None:
        assert LOCKS in store.capabilities

    def test_one_owner_at_a_time(self, store: Store) -> None:
        assert store.execute(AcquireLock(digest(1), "a", 5.0)) is True
        assert store.execute(AcquireLock(digest(1), "b", 5.0)) is False
        assert store.execute(AcquireLock(digest(2), "b", 5.0)) is True  # another session is another lock
        assert store.execute(AcquireLock(digest(1), "a", 5.0)) is True  # the owner may renew
        store.execute(ReleaseLock(digest(1), "b"))  # not the owner: nothing happens
        assert store.execute(AcquireLock(digest(1), "b", 5.0)) is False
        store.execute(ReleaseLock(digest(1), "a"))
        assert store.execute(AcquireLock(digest(1), "b", 5.0)) is True

    def test_a_lease_ends_by_itself(self, store: Store, clock: FakeClock) -> None:
        assert store.execute(AcquireLock(digest(1), "crashed", 0.2)) is True
        assert store.execute(AcquireLock(digest(1), "next", 5.0)) is False
        clock.advance(0.3)
        time.sleep(0.3)  # for a server that keeps the lease by its own clock (a Redis PX)
        assert store.execute(AcquireLock(digest(1), "next", 5.0)) is True

    def test_a_lock_never_blocks_a_logout(self, store: Store, clock: FakeClock) -> None:
        """Delete and RevokeAll go through while another owner holds the session's lock, and the
        holder's later Update finds the session gone: nothing is resurrected."""
        create(store, clock, 1, {"a": b"1"}, user="alice")
        create(store, clock, 2, {"a": b"1"}, user="alice")
        assert store.execute(AcquireLock(digest(1), "holder", 30.0)) is True
        assert store.execute(AcquireLock(digest(2), "holder", 30.0)) is True
        store.execute(Delete(digest(1), "alice"))
        assert load(store, 1) is None
        assert store.execute(Update(digest(1), LIFE, {"a": b"2"})) is False
        assert store.execute(RevokeAll("alice", LIFE)) == [digest(2)]
        assert store.execute(Update(digest(2), LIFE, {"a": b"2"})) is False
        assert load(store, 1) is None and load(store, 2) is None and listed(store, "alice") == []
        store.execute(ReleaseLock(digest(1), "holder"))  # the holder still gives its lease back
        assert store.execute(AcquireLock(digest(1), "next", 5.0)) is True


__all__ = ["GRACE", "FakeClock", "LockContract", "StoreContract", "SyncFromAsync", "digest", "meta", "pytest"]
