"""The store contract: one frozen type per operation, each with its precondition.

A store runs typed operations (``execute(op)``), moves bytes and metadata, and applies one
rule of time, ``Lifetime``, that every store shares (the Redis store runs the same rule in
Lua). The engine never re-derives what a store decided: a ``Load`` returns the record as
stored after its touch, or nothing; an ``Update`` or ``Rotate`` says whether it applied, and
when it did not, the session was ended meanwhile and nothing was written.

Preconditions (the conformance suite in ``session_mw.testing`` checks each one):

- ``Load(key, lifetime)``: the live record under ``key``, touched when due, or None. A
  record that is expired by the *current* lifetime is None (garbage collection removes it);
  one that does not decode (wrong types, non-finite times, bad bytes) is None and dropped.
- ``Create``: a new session under a fresh key (nothing else may be there).
- ``Update``: only if ``op.key`` is live and not retired: the changed and removed keys, ``remember``
  when given, and a touch; returns whether it applied.
- ``Rotate``: only if ``op.old_key`` is live and not retired: the old key dies and the new key
  is created with the full data, in one atomic step; returns whether it applied. With
  ``grace > 0`` the old key is retired instead of dying: for ``grace`` seconds a ``Load`` of it
  returns the record as it was, with ``meta.retired_until`` and ``meta.successor`` (the new
  key) set, never touched; ``Update`` and
  ``Rotate`` of it are refused; ``Delete`` and ``RevokeAll`` end it; ``SessionsOf`` never lists it.
- ``Delete``: idempotent.
- ``SessionsOf``: the user's live sessions; stale or undecodable index
  entries are never returned.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast, runtime_checkable

from ..errors import StoreError

R = TypeVar("R")

#: The record format this version writes; a reader can tell records of other versions apart.
RECORD_FORMAT = 2
MAX_USER_ID = 1024
MAX_USER_AGENT = 256


class CorruptRecord(StoreError):
    """A stored record does not decode; stores treat it as absent and drop it."""


@dataclass(frozen=True, slots=True)
class Meta:
    """Server-side facts about a session; the authority for every expiry decision."""

    created_at: float
    last_seen: float
    absolute_deadline: float
    user_id: str | None = None
    user_agent: str = ""
    remember: bool = False
    #: What a UI shows and ``revoke`` takes: random, never derived from the token or the store key.
    public_id: str = ""
    #: When the user last proved a credential (a login or a re-authentication); 0: never.
    authenticated_at: float = 0.0
    #: When this key's token was issued (its birth by a create or a rotate); 0: a record written
    #: before this field existed, whose token is as old as ``created_at`` says at most.
    issued_at: float = 0.0
    #: A digest of what the session is bound to (User-Agent, client address prefix); "": unbound.
    binding: str = ""
    #: Set by the store on the old record of a rotate with a grace window: until then the old
    #: token still reads the session as it was (read-only); 0: a current record.
    retired_until: float = 0.0
    #: Set with ``retired_until``: the store key the session moved to. A retired record whose
    #: successor has ended (a logout, a revoke) is as dead as its successor.
    successor: str = field(default="", repr=False)


def checked_meta(
    created_at: object,
    last_seen: object,
    absolute_deadline: object,
    user_id: object,
    user_agent: object,
    remember: object,
    public_id: object = None,
    authenticated_at: object = None,
    issued_at: object = None,
    binding: object = None,
    retired_until: object = None,
    successor: object = None,
) -> Meta:
    """A ``Meta`` from a store's raw fields, or ``CorruptRecord``: every store decodes through here."""
    times = []
    optional = tuple(0.0 if v in (None, b"", "") else v for v in (authenticated_at, issued_at, retired_until))
    for value in (created_at, last_seen, absolute_deadline, *optional):
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise CorruptRecord("a session time has the wrong type")
        try:
            number = float(value)
        except ValueError:
            raise CorruptRecord("a session time is not a number") from None
        if not math.isfinite(number):
            raise CorruptRecord("a session time is not finite")
        times.append(number)
    return Meta(
        times[0],
        times[1],
        times[2],
        _text_or_none(user_id),
        _text_or_none(user_agent) or "",
        _flag(remember),
        _text_or_none(public_id) or "",
        times[3],
        times[4],
        _text_or_none(binding) or "",
        times[5],
        _text_or_none(successor) or "",
    )


def _text_or_none(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecord("a session text field is not UTF-8") from None
    if not isinstance(value, str) or not _encodable(value):
        raise CorruptRecord("a session text field has the wrong type or is not UTF-8")
    return value or None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _flag(value: object) -> bool:
    if value in (0, 1, True, False, b"0", b"1", "0", "1", None, b"", ""):
        return value in (1, True, b"1", "1")
    raise CorruptRecord("a session flag is not 0 or 1")


def checked_name(name: object) -> str:
    """An app key as stored (bytes or text), or ``CorruptRecord``."""
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecord("a session key is not UTF-8") from None
    if isinstance(name, str) and _encodable(name):
        return name
    raise CorruptRecord("a session key has the wrong type or is not UTF-8")


def checked_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise CorruptRecord("a session value is not bytes")


def public_id(key: str, meta: Meta) -> str:
    """The id a UI shows; records of the first release have none, so theirs is a hash of the key."""
    if meta.public_id:
        return meta.public_id
    return hashlib.sha256(b"session_mw public id\x00" + key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Record:
    """A stored session: each app key encoded on its own, plus ``Meta``."""

    data: Mapping[str, bytes]
    meta: Meta


@dataclass(frozen=True, slots=True)
class Lifetime:
    """The current configuration's timeouts: the one rule for alive, touch due and TTL.

    The configured absolute timeout caps every stored deadline, so lowering it binds live
    sessions too. Infinite values switch a rule off (the ops CLI, which may not know the
    app's idle timeout, uses that).
    """

    idle_timeout: float
    absolute_timeout: float
    touch_interval: float

    def deadline(self, meta: Meta) -> float:
        return min(meta.absolute_deadline, meta.created_at + self.absolute_timeout)

    def expires_at(self, meta: Meta) -> float:
        return min(meta.last_seen + self.idle_timeout, self.deadline(meta))

    def alive(self, meta: Meta, now: float) -> bool:
        return now < self.expires_at(meta)

    def ended(self, meta: Meta, now: float) -> str | None:
        """Why a session is dead at ``now``: ``"expired_absolute"``, ``"expired_idle"``, or None (alive)."""
        if now >= self.deadline(meta):
            return "expired_absolute"
        if now >= meta.last_seen + self.idle_timeout:
            return "expired_idle"
        return None

    def touch_due(self, meta: Meta, now: float) -> bool:
        return meta.last_seen + self.touch_interval <= now

    def ttl(self, meta: Meta, now: float) -> float:
        """Seconds the store should keep the record (garbage collection only, never a decision)."""
        return self.expires_at(meta) - now


#: The CLI's lifetime: only the store's own expiry and the stored absolute deadline apply.
UNBOUNDED = Lifetime(math.inf, math.inf, math.inf)


class Op(Generic[R]):
    """A store operation whose result is an ``R``; ``Store.execute`` runs it.

    ``handler`` names the method a ``Dispatching`` store runs it with.
    """

    __slots__ = ()
    handler: ClassVar[str]


@dataclass(frozen=True, slots=True)
class Load(Op["Record | None"]):
    """The live record under ``key``, touched when due; None if absent, expired or undecodable.

    ``wait=False`` (only for stores with the ``inline_loads`` capability): raise
    ``WouldBlock`` rather than wait for another writer.
    """

    handler: ClassVar[str] = "on_load"

    key: str = field(repr=False)
    lifetime: Lifetime
    wait: bool = True
    #: Told what the store found instead of a live record, when it knows (``tell``): for events.
    report: Callable[[str, str], None] | None = field(default=None, repr=False, compare=False)


def tell(op: Load, kind: str, detail: str = "") -> None:
    """A store found, under ``op.key``, a session that ``kind`` says is gone: ``"expired_idle"``,
    ``"expired_absolute"`` or ``"corrupt_record"``. Optional for a store; never affects the result."""
    if op.report is not None:
        op.report(kind, detail)


@dataclass(frozen=True, slots=True)
class Create(Op[None]):
    """A new session under a fresh ``key`` (a digest of a token minted for it)."""

    handler: ClassVar[str] = "on_create"

    key: str = field(repr=False)
    meta: Meta
    data: Mapping[str, bytes]
    lifetime: Lifetime


@dataclass(frozen=True, slots=True)
class Update(Op[bool]):
    """Changed and removed app keys of a live session, plus a touch; applied only if ``key`` is live."""

    handler: ClassVar[str] = "on_update"

    key: str = field(repr=False)
    lifetime: Lifetime
    set: Mapping[str, bytes] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    remember: bool | None = None


@dataclass(frozen=True, slots=True)
class Rotate(Op[bool]):
    """Move a live session to a new key with its full data; applied only if ``old_key`` is live.

    ``old_user_id`` is the user whose index lists ``old_key`` (the Redis index drops it).
    """

    handler: ClassVar[str] = "on_rotate"

    old_key: str = field(repr=False)
    key: str = field(repr=False)
    meta: Meta
    data: Mapping[str, bytes]
    lifetime: Lifetime
    old_user_id: str | None = None
    #: Seconds the old key stays readable (retired, read-only) for requests already in flight.
    grace: float = 0.0


@dataclass(frozen=True, slots=True)
class Delete(Op[None]):
    """End a session; idempotent. ``user_id``, when known, is the index that lists it."""

    handler: ClassVar[str] = "on_delete"

    key: str = field(repr=False)
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class RevokeAll(Op["list[str]"]):
    """End every live session of ``user_id`` but ``keep``; the keys of those that were live.

    "Log out everywhere": a session being born for the user while this runs (a login rotating
    one of the user's sessions) must not survive it. A store whose rotate is one atomic step
    gets that from its atomicity; one whose rotate takes several steps (Redis across hash
    slots) must refuse the birth of a session it saw listed.
    """

    handler: ClassVar[str] = "on_revoke_all"

    user_id: str
    lifetime: Lifetime
    keep: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SessionsOf(Op["list[tuple[str, Meta]]"]):
    """A user's live sessions, oldest first; stale or undecodable entries are dropped, never returned."""

    handler: ClassVar[str] = "on_sessions_of"

    user_id: str
    lifetime: Lifetime


@dataclass(frozen=True, slots=True)
class AcquireLock(Op[bool]):
    """Take the lease of session ``key`` for ``owner`` unless another owner holds it (``locks`` capability)."""

    handler: ClassVar[str] = "on_acquire_lock"

    key: str = field(repr=False)
    owner: str
    lease: float


@dataclass(frozen=True, slots=True)
class ReleaseLock(Op[None]):
    """Give the lease back, only if ``owner`` still holds it."""

    handler: ClassVar[str] = "on_release_lock"

    key: str = field(repr=False)
    owner: str


@dataclass(frozen=True, slots=True)
class Collect(Op[int]):
    """Remove expired sessions the backend does not expire by itself; how many."""

    handler: ClassVar[str] = "on_collect"


@dataclass(frozen=True, slots=True)
class Check(Op[None]):
    """Raise ``ConfigError`` if the store cannot work at all (run at app start-up)."""

    handler: ClassVar[str] = "on_check"


@dataclass(frozen=True, slots=True)
class Close(Op[None]):
    """Release the store's connections."""

    handler: ClassVar[str] = "on_close"


#: What a store may declare beyond the operations every store runs.
LOCKS = "locks"
INLINE_LOADS = "inline_loads"
#: The store offers ``execute_now(op)`` for ``INLINE_WRITES_OPS``: the write, done on the calling
#: thread, only if it need not wait for another writer; else ``WouldBlock`` and nothing written.
INLINE_WRITES = "inline_writes"


@runtime_checkable
class Store(Protocol):
    """A synchronous store: runs each operation, raising ``StoreUnavailable`` when the backend fails."""

    capabilities: frozenset[str]

    def execute(self, op: Op[R]) -> R: ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asyncio face of ``Store``."""

    capabilities: frozenset[str]

    async def execute(self, op: Op[R]) -> R: ...


@runtime_checkable
class InlineWriter(Protocol):
    """A store with the ``INLINE_WRITES`` capability."""

    def execute_now(self, op: Op[R]) -> R: ...


class WouldBlock(Exception):
    """A ``Load(wait=False)`` (or an ``execute_now``) would have had to wait; nothing was done."""


#: The writes ``execute_now`` takes: each one short transaction.
INLINE_WRITES_OPS = (Create, Update, Rotate, Delete)


def unsupported(store: object, op: Op[Any]) -> NotImplementedError:
    return NotImplementedError(f"{type(store).__name__} does not support {type(op).__name__}")


class Dispatching:
    """``execute`` for a store written as one method per operation: ``Load`` runs ``on_load(op)``."""

    def execute(self, op: Op[R]) -> R:
        try:
            method = getattr(self, op.handler)
        except AttributeError:  # not an operation, or one this store does not offer
            raise unsupported(self, op) from None
        return cast(R, method(op))
