"""Redis / Valkey store: sync (``redis.Redis``) and asyncio (``redis.asyncio.Redis``), on one
node, a Sentinel service or a Cluster (``redis_target``).

Both faces share one plan per operation (Lua scripts, their keys and arguments, and how to
read the replies); only running a plan differs. Every script touches exactly one key, so every
operation on one session is atomic in that session's hash slot, and a Cluster accepts all.

Layout: a hash per session under ``{prefix}s:{digest}`` with one field per app key
(``k:name``) and the metadata fields ``_c _s _d _u _a _r _i _t _n _b _v`` (``_g`` too on a
retired one, see ``_TAKE``); a sorted set per user under ``{prefix}u:{user}`` scoring each
session's digest by when it was added. The index names a session before it is born and
tolerates stale entries; listing drops them. A hash holding only ``_x`` is a tombstone: a
session revoked before it was born, which no create may bring to life.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from ..errors import ConfigError, StoreUnavailable
from ..stepping import Plan, run, run_async
from . import base
from .base import RECORD_FORMAT, CorruptRecord, Lifetime, Meta, Op, R, Record, checked_meta, checked_name, unsupported
from .redis_cache import RecordCache
from .redis_target import connect, parse, tracking_connector

try:
    import redis
    import redis.asyncio
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Redis store needs the redis extra: pip install 'session_mw[redis]'") from exc

_Store = TypeVar("_Store", bound="RedisPlans")
#: What a Redis call can raise when the store, not the caller, is at fault: redis-py's errors
#: (its Cluster client's own exception type is not one of them) and the socket's.
BACKEND_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)
#: The metadata fields, in ``checked_meta``'s order (a listing reads them, then ``_v``).
_META = (b"_c", b"_s", b"_d", b"_u", b"_a", b"_r", b"_i", b"_t", b"_n", b"_b", b"_g", b"_f")
_RETIRED_AT = _META.index(b"_g")
_DATA = b"k:"
#: The record format of a retired hash (the old key of a grace rotate), as in the SQLite store:
#: one more than a live record's, so a reader of format 2, which knows nothing of ``_g``, finds
#: no session there (it never loads it, so it never writes to it) instead of a live one.
_RETIRED_FORMAT = RECORD_FORMAT + 1
#: Redis keeps an expired-looking key a little longer than the rule says: the TTL only
#: collects garbage, and must never beat the server-side decision (clock skew between hosts).
_TTL_MARGIN_MS = 1000
security_log = logging.getLogger("session_mw.security")

# Shared Lua: the Lifetime rule (base.Lifetime) and chunked HSET/HDEL (unpack has a limit).
_COMMON = """
local function finite(x) return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge end
-- the absolute deadline of a live, current session; nil if dead, a tombstone or retired (_g)
local function expiry(key, now, idle, absolute)
  local m = redis.pcall('HMGET', key, '_c', '_s', '_d', '_g')
  if m['err'] or m[4] then return nil end
  local c, s, d = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
  if not (finite(c) and finite(s) and finite(d)) then return nil end
  local deadline = math.min(d, c + absolute)
  local expires = math.min(s + idle, deadline)
  if now >= expires then return nil end
  return deadline
end
local function each_chunk(command, key, args, first, last)
  for i = first, last, 2000 do
    redis.call(command, key, unpack(args, i, math.min(i + 1999, last)))
  end
end
local function ms(seconds)
  return math.max(1, math.ceil(seconds * 1000) + tonumber(ARGV[1]))
end
"""

# Every script touches one key, so each runs in one hash slot: a Cluster accepts all of them,
# and an operation that spans keys (a rotate, a user's index) is a sequence of such steps,
# ordered so that a failure between two of them logs a user out rather than leaving a
# session alive (see ``on_rotate``).

# KEYS: session. ARGV: margin ms, now, idle, absolute, interval
_LOAD = (
    _COMMON
    + """
local h = redis.pcall('HGETALL', KEYS[1])
if h['err'] then redis.call('DEL', KEYS[1]) return -1 end
if #h == 0 then return h end
local now, idle, absolute, interval = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local at, retired = 0, 0
for i = 1, #h, 2 do
  local f = h[i]
  if f == '_x' then return {} end  -- a tombstone: a session revoked before it was born
  if f == '_s' then at = i + 1 elseif f == '_g' then retired = i + 1 end
end
if retired > 0 then
  -- the old key of a grace rotate: read-only, never touched; past its grace, gone
  local g = tonumber(h[retired])
  if g ~= nil and now >= g then redis.call('DEL', KEYS[1]) return {} end
  return h
end
local deadline = expiry(KEYS[1], now, idle, absolute)
if deadline == nil then return h end
if tonumber(h[at]) + interval <= now then
  -- a touch refused (out of memory, say) must not fail the read: the next due read retries it
  local done = redis.pcall('HSET', KEYS[1], '_s', ARGV[2])
  if type(done) == 'number' then
    redis.call('PEXPIRE', KEYS[1], ms(math.min(now + idle, deadline) - now))
    h[at] = ARGV[2]
  end
end
return h
"""
)

# KEYS: session (a fresh digest). ARGV: margin ms, ttl s, field/value pairs...
# 0 if the key exists: a tombstone left by "log out everywhere" for a session being born.
_CREATE = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
each_chunk('HSET', KEYS[1], ARGV, 3, #ARGV)
redis.call('PEXPIRE', KEYS[1], ms(tonumber(ARGV[2])))
return 1
"""
)

# KEYS: session. ARGV: margin ms, now, idle, absolute, n deletes, deletes..., field/value pairs...
_UPDATE = (
    _COMMON
    + """
local now, idle, absolute, ndel = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local deadline = expiry(KEYS[1], now, idle, absolute)
if deadline == nil then return 0 end
if ndel > 0 then each_chunk('HDEL', KEYS[1], ARGV, 6, 5 + ndel) end
each_chunk('HSET', KEYS[1], ARGV, 6 + ndel, #ARGV)
redis.call('PEXPIRE', KEYS[1], ms(math.min(now + idle, deadline) - now))
return 1
"""
)

# KEYS: the old session of a rotate. ARGV: margin ms, now, idle, absolute, then for a grace
# window: retired_until, the retired record format, grace s, the successor's digest. 1: it was live and current, and is
# now gone, or retired: marked (_g, and a _v older readers refuse) and kept for the grace only.
_TAKE = (
    _COMMON
    + """
if expiry(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])) == nil then return 0 end
if ARGV[5] == nil then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], '_g', ARGV[5], '_v', ARGV[6], '_f', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ms(tonumber(ARGV[7])))
return 1
"""
)

# KEYS: session. ARGV: margin ms, now, idle, absolute, tombstone ms.
# Ends the session (1 if it was live). An absent key gets a tombstone, so that a session still
# being born under it (a rotate between its steps) is refused by _CREATE.
_KILL = (
    _COMMON
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  redis.call('HSET', KEYS[1], '_x', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 0
end
if kind == 'hash' and redis.call('HEXISTS', KEYS[1], '_x') == 1 then return 0 end
local live = expiry(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])) ~= nil
redis.call('DEL', KEYS[1])
if live then return 1 end
return 0
"""
)

# KEYS: a user's index. ARGV: digest ('' to only migrate), score (when added), index ttl ms.
# A sorted set of digests scored by when they were added; the first release's plain set is
# migrated in place (its members scored 0: as old as can be).
_INDEX_ADD = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'set' then
  local members, ttl = redis.call('SMEMBERS', KEYS[1]), redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  for i = 1, #members do redis.call('ZADD', KEYS[1], 0, members[i]) end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
elseif kind ~= 'none' and kind ~= 'zset' then
  redis.call('DEL', KEYS[1])
end
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
end
return 1
"""

_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SCRIPTS = {
    "load": _LOAD,
    "create": _CREATE,
    "update": _UPDATE,
    "take": _TAKE,
    "kill": _KILL,
    "index_add": _INDEX_ADD,
    "lock": _LOCK,
    "unlock": _UNLOCK,
}
#: How long a tombstone lasts, and how long an index entry without its session is taken for one
#: being born rather than stale: far longer than the steps of a rotate can take.
_BIRTH_GRACE_MS = 300_000
#: Index members read per round trip: listing a user with many sessions never holds a node long.
_INDEX_PAGE = 256
#: How many sessions' last touch a process remembers (a few MB at most).
_SEEN_MAX = 50_000
#: "Log out everywhere" repeats while a pass still finds sessions (logins racing it).
_REVOKE_PASSES = 5


@dataclass(frozen=True, slots=True)
class Script:
    """One round trip: a Lua script of ``_SCRIPTS`` with its declared keys and its arguments."""

    name: str
    keys: Sequence[str]
    args: Sequence[Any]


@dataclass(frozen=True, slots=True)
class Commands:
    """One round trip: plain commands, pipelined (not a transaction); errors come back as values."""

    commands: Sequence[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Command:
    """One round trip: one plain command, sent as is (no pipeline); an error is raised."""

    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Durable:
    """One round trip: a script, then ``WAIT`` on the same connection (the node that ran it), so
    the reply says how many replicas hold the write. The script goes as EVAL: a pipeline cannot
    reload a script a new primary lacks."""

    script: Script
    replicas: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Scripts:
    """One round trip: scripts pipelined (not a transaction), each sent as EVAL (a pipeline cannot
    reload a script the server lacks); their replies in order, errors as values. For steps that
    may run in any order, each in its own slot: a Cluster client sends each to its node."""

    scripts: Sequence[Script]


#: Not a command: close the client's connections.
DISCONNECT = Commands(())


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _meta_fields(meta: Meta) -> list[Any]:
    return [
        "_c",
        repr(meta.created_at),
        "_s",
        repr(meta.last_seen),
        "_d",
        repr(meta.absolute_deadline),
        "_u",
        meta.user_id or "",
        "_a",
        meta.user_agent,
        "_r",
        _flag(meta.remember),
        "_i",
        meta.public_id,
        "_t",
        repr(meta.authenticated_at),
        "_n",
        repr(meta.issued_at),
        "_b",
        meta.binding,
        "_v",
        str(RECORD_FORMAT),
    ]


def _eval(pipe: Any, script: Script) -> None:
    """``script`` into a pipeline, as EVAL: a pipeline cannot reload a script the server lacks."""
    pipe.execute_command("EVAL", _SCRIPTS[script.name], len(script.keys), *script.keys, *script.args)


def _fields(data: Mapping[str, bytes]) -> list[Any]:
    out: list[Any] = []
    for name, value in data.items():
        out += ("k:" + name, value)
    return out


def _record_format(value: Any) -> int:
    if value in (None, b""):
        return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CorruptRecord("a session hash of an unknown record format") from None


def _dropped(exc: CorruptRecord) -> None:
    security_log.warning("undecodable session record dropped (%s)", exc)


def _refusal(exc: BaseException) -> BaseException | None:
    """A refusal no retry can fix (a wrong password, a bad DB index), also when a Cluster client
    wraps it in its "cannot be connected"; None for an outage."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, (redis_errors.ResponseError, redis_errors.AuthenticationError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _where(client: Any) -> str:
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return "?"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


class RedisPlans:
    """The store's logic, as plans of ``Script`` and ``Commands`` round trips.

    The sync and async stores only carry each round trip to their client; everything else,
    error translation included, is written once here.
    """

    capabilities = frozenset({base.LOCKS})

    client_class: ClassVar[Any]
    asynchronous: ClassVar[bool]

    def __init__(
        self,
        client: Any,
        prefix: str = "session_mw:",
        *,
        clock: Callable[[], float] = time.time,
        where: str = "",
        replica_acks: int = 0,
        replica_ack_timeout: float = 0.5,
        cache: RecordCache | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self._where = where  # the deployment, for messages (a Sentinel service, a Cluster)
        #: creates and rotates wait (WAIT) until this many replicas hold the new session
        self.replica_acks = replica_acks
        self._ack_timeout_ms = _ms(replica_ack_timeout)
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        #: digest -> the last_seen this process saw: a load whose touch that proves not due yet
        #: is a plain HGETALL (no Lua); touches only move last_seen forward, so it never misleads
        self._seen: dict[str, float] = {}
        #: client-side caching (``client_cache``): copies of sessions, kept true by Redis tracking
        self.cache = cache

    @classmethod
    def from_url(
        cls: type[_Store],
        url: str,
        prefix: str = "session_mw:",
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        *,
        clock: Callable[[], float] = time.time,
        replica_acks: int = 0,
        replica_ack_timeout: float = 0.5,
        client_cache: bool = False,
        client_cache_size: int = 10_000,
    ) -> _Store:
        """A store on the deployment ``url`` names: one node, a Sentinel service or a Cluster;
        with ``client_cache``, hot sessions are read from this process's copies (``redis_cache``)."""
        target = parse(url)
        client = connect(target, asyncio=cls.asynchronous, connect_timeout=connect_timeout, timeout=timeout)
        cache = None
        if client_cache:
            pool = getattr(client, "connection_pool", None)  # Sentinel: where the data path sends writes

            def primary() -> Any:
                return getattr(pool, "master_address", None)

            connector = tracking_connector(target, connect_timeout=connect_timeout, primary=primary)
            cache = RecordCache(connector, f"{prefix}s:", size=client_cache_size)
        return cls(
            client,
            prefix,
            clock=clock,
            where=target.where,
            replica_acks=replica_acks,
            replica_ack_timeout=replica_ack_timeout,
            cache=cache,
        )

    def _send(self, call: Command | Script | Commands | Durable | Scripts) -> Any:
        """One round trip: its reply, or (asyncio client) the awaitable of its reply."""
        if isinstance(call, Command):
            return self.client.execute_command(*call.args)
        if isinstance(call, Script):
            return self._scripts[call.name](keys=call.keys, args=call.args)
        if isinstance(call, Durable):
            return self._durable(call).execute(raise_on_error=False)
        if isinstance(call, Scripts):
            pipe = self.client.pipeline(transaction=False)
            for script in call.scripts:
                _eval(pipe, script)
            return pipe.execute(raise_on_error=False)
        if call is DISCONNECT:
            return self._disconnect()
        return self._pipeline(call).execute(raise_on_error=False)

    def _disconnect(self) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r})"

    @property
    def where(self) -> str:
        """For messages: the node, or the Sentinel service or Cluster; never a password."""
        return self._where or f"at {_where(self.client)}"

    def session_key(self, digest: str) -> str:
        return f"{self.prefix}s:{digest}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """Every backend failure, with where and what the server said (its messages carry no keys or values)."""
        said = " ".join(str(exc).split()) or type(exc).__name__
        return StoreUnavailable(f"Redis {self.where}: {type(exc).__name__}: {said}"[:300])

    def plan(self, op: Op[R]) -> Plan[R]:
        """The round trips of ``op`` (planned by ``on_<operation>``); any Redis or socket error
        becomes ``StoreUnavailable``."""
        planner = getattr(self, getattr(op, "handler", ""), None)
        if planner is None:
            raise unsupported(self, op)
        try:
            return cast(R, (yield from planner(op)))
        except BACKEND_ERRORS as exc:
            failure = self.unavailable(exc)
            if self.cache is not None:
                self.cache.reset(str(failure))  # a failover may be under way: trust no copy
            raise failure from None

    def _cleanup(self, commands: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """Best effort (stale index entries, bad records): a failure here leaves work for the next read."""
        try:
            yield Commands(commands)
        except BACKEND_ERRORS as exc:
            log.warning("session store cleanup skipped: %s", self.unavailable(exc))

    @staticmethod
    def _lifetime_args(lifetime: Lifetime, now: float) -> list[Any]:
        return [_TTL_MARGIN_MS, repr(now), repr(lifetime.idle_timeout), repr(lifetime.absolute_timeout)]

    @staticmethod
    def _index_ttl_ms(meta: Meta, lifetime: Lifetime, now: float) -> int:
        # the index must outlive every touch of its sessions: keep it to the absolute deadline
        return _ms(lifetime.deadline(meta) - now) + _TTL_MARGIN_MS

    def on_load(self, op: base.Load) -> Plan[Record | None]:
        """At most one round trip; none for a session this process holds a true copy of (with
        ``client_cache``) whose touch is not due."""
        now = self.clock()
        cache = self.cache
        if cache is None:
            return (yield from self._read(op, now))
        copy = cache.lookup(op.key)
        if copy is not None:
            meta = copy.meta
            if meta.last_seen + op.lifetime.touch_interval > now and op.lifetime.alive(meta, now):
                return copy
        ticket = cache.begin(op.key)
        record = None
        try:
            record = yield from self._read(op, now)
        finally:
            cache.keep(ticket, None if record is None or record.meta.retired_until else record)
        return record

    def _read(self, op: base.Load, now: float) -> Plan[Record | None]:
        """One round trip. A session this process saw touched less than a touch interval ago
        cannot be due: a plain HGETALL reads it. Otherwise the load script reads it and touches
        it when due, in the same round trip."""
        session = self.session_key(op.key)
        seen = self._seen.get(op.key)
        if seen is not None and seen + op.lifetime.touch_interval > now:
            try:
                fields = yield Command(("HGETALL", session))
            except redis_errors.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                fields = None
        else:
            args = [*self._lifetime_args(op.lifetime, now), repr(op.lifetime.touch_interval)]
            reply = yield Script("load", (session,), args)
            fields = None if reply == -1 else dict(zip(reply[::2], reply[1::2], strict=True))
        if fields is not None and (not fields or b"_x" in fields):
            self._seen.pop(op.key, None)  # absent, or a tombstone: a session revoked before it was born
            return None
        try:
            if fields is None:
                raise CorruptRecord("a Redis key of the wrong type")
            version = _record_format(fields.get(b"_v"))
            if version > RECORD_FORMAT and (version != _RETIRED_FORMAT or b"_g" not in fields):
                return None  # written by a newer session_mw: not ours to read, nor to drop
            meta = checked_meta(*(fields.get(name) for name in _META))
            if b"_g" in fields and not meta.retired_until:
                raise CorruptRecord("a retired session hash without the end of its grace")
            data = {checked_name(k[2:]): v for k, v in fields.items() if k.startswith(_DATA)}
        except CorruptRecord as exc:
            _dropped(exc)
            base.tell(op, "corrupt_record", str(exc))
            yield from self._cleanup([("DEL", session)])
            return None
        if meta.retired_until and now >= meta.retired_until:
            return None  # the old key of a grace rotate, past its grace
        if not op.lifetime.alive(meta, now):  # seen only within the TTL's margin of the expiry
            if not meta.retired_until:
                base.tell(op, op.lifetime.ended(meta, now) or "expired_idle")
            return None
        if meta.retired_until:  # read-only, never touched
            return Record(data, meta)
        seen_table = self._seen
        if len(seen_table) >= _SEEN_MAX:
            seen_table.clear()  # bounded: forgetting only costs the next read of each its script
        seen_table[op.key] = meta.last_seen
        return Record(data, meta)

    def _index_add(self, user_id: str, digest: str, meta: Meta, lifetime: Lifetime, now: float) -> Plan[None]:
        """Before a session is born, its user's index names it: a session no index lists would
        escape "log out everywhere". (An entry whose birth then fails is stale, and dropped.)"""
        yield self._index_script(user_id, digest, meta, lifetime, now)

    def _index_script(self, user_id: str, digest: str, meta: Meta, lifetime: Lifetime, now: float) -> Script:
        ttl = self._index_ttl_ms(meta, lifetime, now)
        return Script("index_add", (self.user_key(user_id),), (digest, repr(now), ttl))

    def _kill_args(self, lifetime: Lifetime, now: float) -> list[Any]:
        return [*self._lifetime_args(lifetime, now), _BIRTH_GRACE_MS]

    def on_create(self, op: base.Create) -> Plan[None]:
        now = self.clock()
        if op.meta.user_id is not None:
            yield from self._index_add(op.meta.user_id, op.key, op.meta, op.lifetime, now)
        if not (yield from self._born(op.key, op.meta, op.data, op.lifetime, now)):
            security_log.info("a session revoked while it was being created was not created")

    def on_update(self, op: base.Update) -> Plan[bool]:
        now = self.clock()
        args = self._lifetime_args(op.lifetime, now)
        args += [len(op.delete), *("k:" + name for name in op.delete), *_fields(op.set), "_s", repr(now)]
        if op.remember is not None:
            args += ("_r", _flag(op.remember))
        return bool(int((yield from self._changing(op.key, Script("update", (self.session_key(op.key),), args)))))

    def _changing(self, digest: str, call: Any) -> Plan[Any]:
        """The round trip ``call``, which changes ``digest``: this process's copy of it goes before
        and after (before Redis's message does), so no read in between keeps the old one."""
        cache = self.cache
        if cache is None:
            return (yield call)
        cache.forget(digest)
        try:
            return (yield call)
        finally:
            cache.forget(digest)

    def on_rotate(self, op: base.Rotate) -> Plan[bool]:
        """Three steps, each in its own slot, in two round trips: the new user's index names the
        new session, and the old session dies (or with a grace, is retired) if it is live and
        current, in either order (one pipeline); only once both are done is the new session born,
        unless a revoke left a tombstone meanwhile. A failure of either of the first two means no
        birth: at worst the user is logged out; no order of failures leaves two live sessions or
        brings back a dead one. A retired key stays in its user's index, so that "log out
        everywhere" finds and ends it; once its grace is over the listing drops the entry."""
        now = self.clock()
        take_args = self._lifetime_args(op.lifetime, now)
        if op.grace > 0:
            take_args += (repr(now + op.grace), _RETIRED_FORMAT, repr(op.grace), op.key)
        take = Script("take", (self.session_key(op.old_key),), take_args)
        if op.meta.user_id is None:
            taken = yield from self._changing(op.old_key, take)
        else:
            index = self._index_script(op.meta.user_id, op.key, op.meta, op.lifetime, now)
            indexed, taken = yield from self._changing(op.old_key, Scripts((index, take)))
            for reply in (indexed, taken):
                if isinstance(reply, Exception):
                    raise reply  # no birth: the new session would escape "log out everywhere"
        if not int(taken):
            if op.meta.user_id is not None:
                yield from self._cleanup([("ZREM", self.user_key(op.meta.user_id), op.key)])
            return False
        born = yield from self._born(op.key, op.meta, op.data, op.lifetime, now)
        if op.old_user_id is not None and op.grace <= 0:
            yield from self._cleanup([("ZREM", self.user_key(op.old_user_id), op.old_key)])
        return bool(born)

    def on_delete(self, op: base.Delete) -> Plan[None]:
        now = self.clock()
        yield from self._changing(
            op.key, Script("kill", (self.session_key(op.key),), self._kill_args(base.UNBOUNDED, now))
        )
        if op.user_id is not None:
            yield from self._cleanup([("ZREM", self.user_key(op.user_id), op.key)])

    def _index(self, user_id: str) -> Plan[list[tuple[str, float]]]:
        """The digests a user's index names, with when each was added: ZSCAN pages, so a user with
        many sessions never holds a node for long. Members that are not digests are dropped."""
        index = self.user_key(user_id)
        found: dict[str, float] = {}
        junk: list[Any] = []
        cursor: Any = 0
        migrated = False
        while True:
            [reply] = yield Commands([("ZSCAN", index, cursor, "COUNT", _INDEX_PAGE)])
            if isinstance(reply, Exception):
                if migrated or "WRONGTYPE" not in str(reply):
                    raise reply
                yield Script("index_add", (index,), ("", "0", 0))  # a first-release set: now a sorted set
                migrated, cursor, found = True, 0, {}
                continue
            cursor, items = reply
            paired = bool(items) and isinstance(items[0], (tuple, list))  # redis-py parses ZSCAN's reply
            for member, score in items if paired else zip(items[::2], items[1::2], strict=True):
                try:
                    found[member.decode("ascii") if isinstance(member, bytes) else str(member)] = float(score)
                except (UnicodeDecodeError, ValueError):
                    junk.append(member)  # not a digest of ours
            if int(cursor) == 0:
                break
        if junk:
            _dropped(CorruptRecord("a Redis user index holds a member that is not a digest"))
            yield from self._cleanup([("ZREM", index, *junk)])
        return sorted(found.items())

    def on_sessions_of(self, op: base.SessionsOf) -> Plan[list[tuple[str, Meta]]]:
        """The index, then the sessions it names in pages of pipelined HMGETs (plain commands, each
        routed to its own slot). An entry without its session is stale once older than the birth
        grace, and dropped; a younger one may be a session being born, and is kept."""
        index = self.user_key(op.user_id)
        entries = yield from self._index(op.user_id)
        now = self.clock()
        out: list[tuple[str, Meta]] = []
        stale: list[str] = []
        cleanup: list[tuple[Any, ...]] = []
        for start in range(0, len(entries), _INDEX_PAGE):
            page = entries[start : start + _INDEX_PAGE]
            rows = yield Commands([("HMGET", self.session_key(d), *_META, b"_v") for d, _ in page])
            for (digest, added), row in zip(page, rows, strict=True):
                try:
                    if isinstance(row, Exception):
                        raise CorruptRecord("a Redis key of the wrong type")
                    if row[0] is None:  # no session (or a tombstone)
                        if (now - added) * 1000 > _BIRTH_GRACE_MS:
                            stale.append(digest)
                        continue
                    if row[_RETIRED_AT] is not None:
                        continue  # retired: not a session of its own, but kept for RevokeAll
                    if _record_format(row[len(_META)]) > RECORD_FORMAT:
                        continue
                    meta = checked_meta(*row[: len(_META)])
                except CorruptRecord as exc:
                    _dropped(exc)
                    stale.append(digest)
                    cleanup.append(("DEL", self.session_key(digest)))
                    continue
                if op.lifetime.alive(meta, now):
                    out.append((digest, meta))
        if stale:
            pages = [("ZREM", index, *stale[i : i + _INDEX_PAGE]) for i in range(0, len(stale), _INDEX_PAGE)]
            yield from self._cleanup([*cleanup, *pages])
        out.sort(key=lambda row: (row[1].created_at, row[0]))
        return out

    def on_revoke_all(self, op: base.RevokeAll) -> Plan[list[str]]:
        """Passes over the index until one finds nothing: each kills what it lists (a tombstone
        for a digest whose session is not born yet) and drops those entries. A rotate names its
        new session in the index before it takes the old one, so a session born from one this
        revoke saw is either listed by a later pass or refused its birth."""
        index = self.user_key(op.user_id)
        revoked: list[str] = []
        for _ in range(_REVOKE_PASSES):
            entries = [d for d, _ in (yield from self._index(op.user_id)) if d != op.keep]
            if not entries:
                break
            now = self.clock()
            for digest in entries:
                kill = Script("kill", (self.session_key(digest),), self._kill_args(op.lifetime, now))
                if int((yield from self._changing(digest, kill))):
                    revoked.append(digest)
            for start in range(0, len(entries), _INDEX_PAGE):  # pages: no one ZREM blocks Redis long
                yield Commands([("ZREM", index, *entries[start : start + _INDEX_PAGE])])
        return revoked

    def on_acquire_lock(self, op: base.AcquireLock) -> Plan[bool]:
        return bool(int((yield Script("lock", (f"{self.prefix}l:{op.key}",), (op.owner, _ms(op.lease))))))

    def on_release_lock(self, op: base.ReleaseLock) -> Plan[None]:
        yield Script("unlock", (f"{self.prefix}l:{op.key}",), (op.owner,))

    def on_collect(self, op: base.Collect) -> Plan[int]:
        return 0  # Redis expires sessions itself (PEXPIRE); user indexes are cleaned as read
        yield  # a plan with no round trip

    def on_check(self, op: base.Check) -> Plan[None]:
        """A refusal no retry can fix (bad DB index, wrong password) is a setting to change; an
        outage at start-up is only a warning (the store may come up later)."""
        try:
            [reply] = yield Commands([("PING",)])
            if isinstance(reply, Exception):
                raise reply
        except BACKEND_ERRORS as exc:
            refusal = _refusal(exc)
            if refusal is None:
                log.warning("session store not reachable at start-up: %s", self.unavailable(exc))
                return
            raise ConfigError(f"the Redis session store cannot be used: {self.unavailable(refusal)}") from None

    def on_close(self, op: base.Close) -> Plan[None]:
        if self.cache is not None:
            self.cache.close()
        yield DISCONNECT

    def _durable(self, call: Durable) -> Any:
        script = call.script
        pipe = self.client.pipeline(transaction=False)
        _eval(pipe, script)
        # a Cluster sends WAIT where the key lives, on the connection that wrote (commands go per node)
        route = getattr(self.client, "get_node_from_key", None)
        where = {} if route is None else {"target_nodes": route(script.keys[0])}
        pipe.execute_command("WAIT", call.replicas, call.timeout_ms, **where)
        return pipe

    def _born(self, digest: str, meta: Meta, data: Mapping[str, bytes], lifetime: Lifetime, now: float) -> Plan[int]:
        """The create script for a fresh session (1: born, 0: refused by a tombstone); with
        ``replica_acks``, a birth fewer replicas hold than asked is a ``StoreUnavailable``."""
        args = [_TTL_MARGIN_MS, repr(lifetime.ttl(meta, now)), *_meta_fields(meta), *_fields(data)]
        script = Script("create", (self.session_key(digest),), args)
        if not self.replica_acks:
            return int((yield script))
        reply, acked = yield Durable(script, self.replica_acks, self._ack_timeout_ms)
        for value in (reply, acked):
            if isinstance(value, Exception):
                raise value
        if int(reply) and int(acked) < self.replica_acks:
            raise StoreUnavailable(
                f"Redis {self.where}: {int(acked)} of the {self.replica_acks} replicas asked for "
                f"acknowledged a new session within {self._ack_timeout_ms} ms"
            )
        return int(reply)

    def _pipeline(self, call: Commands) -> Any:
        pipe = self.client.pipeline(transaction=False)
        for command in call.commands:
            pipe.execute_command(*command)
        return pipe


log = logging.getLogger("session_mw")


class RedisStore(RedisPlans):
    """The sync store, over ``redis.Redis``."""

    client_class = redis.Redis
    asynchronous = False

    def execute(self, op: Op[R]) -> R:
        return run(self.plan(op), self._send)

    def _disconnect(self) -> Any:
        return self.client.close()


class AsyncRedisStore(RedisPlans):
    """The asyncio store, over ``redis.asyncio.Redis``; the same plans, the same round trips, awaited."""

    client_class = redis.asyncio.Redis
    asynchronous = True

    async def execute(self, op: Op[R]) -> R:
        return await run_async(self.plan(op), self._send)

    def _disconnect(self) -> Any:
        return self.client.aclose()
