"""Redis / Valkey store: sync (``redis.Redis``) and asyncio (``redis.asyncio.Redis``).

Both faces share one plan per operation (a Lua script, its keys and arguments, and how to
decode the reply); only running the plan differs. Every operation is one round trip.

Layout: a hash per session under ``{prefix}s:{digest}`` with one field per app key
(``k:name``) and the metadata fields below; a set per user under ``{prefix}u:{user}``
holding the digests of that user's sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import StoreError, StoreUnavailable
from .base import Meta, Record, Touch, Write

try:
    import redis
    import redis.asyncio
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Redis store needs the redis extra: pip install 'session_mw[redis]'") from exc

_T = TypeVar("_T")
_META = ("_c", "_s", "_d", "_u", "_a", "_r")
_DATA = b"k:"

_LOAD = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return h end
local s, d
for i = 1, #h, 2 do
  if h[i] == '_s' then s = tonumber(h[i + 1]) elseif h[i] == '_d' then d = tonumber(h[i + 1]) end
end
local now, interval, idle = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if s and d and s + idle > now and d > now and s + interval <= now then
  redis.call('HSET', KEYS[1], '_s', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(math.min(idle, d - now) * 1000)))
end
return h
"""

# KEYS: session, user index (or ''), old session (or ''), previous user index (or '')
# ARGV: mode ('update' | 'create' | 'rotate'), digest, ttl ms, old digest, index ttl ms,
#       n deletes, deletes..., field/value pairs...
_WRITE = """
local mode, digest, ttl, old, ndel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[6])
if mode == 'update' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  if ndel > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 7, 6 + ndel)) end
else
  if KEYS[3] ~= '' then redis.call('DEL', KEYS[3]) end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + ndel))
redis.call('PEXPIRE', KEYS[1], ttl)
if KEYS[4] ~= '' then redis.call('SREM', KEYS[4], old ~= '' and old or digest) end
if KEYS[2] ~= '' then
  redis.call('SADD', KEYS[2], digest)
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
end
return 1
"""

_DELETE = """
local u = redis.call('HGET', KEYS[1], '_u')
local n = redis.call('DEL', KEYS[1])
if u and u ~= '' then redis.call('SREM', ARGV[1] .. u, ARGV[2]) end
return n
"""

_USER_SESSIONS = """
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local m = redis.call('HMGET', ARGV[1] .. d, '_c', '_s', '_d', '_u', '_a', '_r')
  if m[1] then
    table.insert(out, {d, m[1], m[2], m[3], m[4] or '', m[5] or '', m[6] or '0'})
  else
    redis.call('SREM', KEYS[1], d)
  end
end
return out
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
    "write": _WRITE,
    "delete": _DELETE,
    "user_sessions": _USER_SESSIONS,
    "lock": _LOCK,
    "unlock": _UNLOCK,
}


@dataclass(frozen=True, slots=True)
class Plan(Generic[_T]):
    """One round trip: which script, with which keys and arguments, and how to read the reply."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    decode: Callable[[Any], _T]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _meta(c: Any, s: Any, d: Any, u: Any, a: Any, r: Any) -> Meta:
    user = _text(u) if u else ""
    return Meta(float(c), float(s), float(d), user or None, _text(a) if a else "", _text(r) == "1" if r else False)


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
        "1" if meta.remember else "0",
    ]


def _applied(reply: Any) -> bool:
    return bool(int(reply))


def _decode_record(reply: Any) -> Record | None:
    if not reply:
        return None
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    data = {k[2:].decode(): v for k, v in fields.items() if k.startswith(_DATA)}
    try:
        meta = _meta(*(fields.get(name.encode(), b"") for name in _META))
    except ValueError:
        return None  # a hash that is not one of our records: treat as no session
    return Record(data, meta)


class RedisPlans:
    """The store's logic, as plans; the sync and async stores only run them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session_key(self, digest: str) -> str:
        return f"{self.prefix}s:{digest}"

    def user_key(self, user_id: str | None) -> str:
        return f"{self.prefix}u:{user_id}" if user_id else ""

    def plan_load(self, key: str, touch: Touch) -> Plan[Record | None]:
        args = (repr(touch.now), repr(touch.interval), repr(touch.idle_timeout))
        return Plan("load", (self.session_key(key),), args, _decode_record)

    def plan_write(self, op: Write) -> Plan[bool]:
        fields: list[Any] = []
        for name, value in op.set.items():
            fields += ("k:" + name, value)
        moved = op.previous_user != op.meta.user_id or op.old_key is not None
        if op.mode == "update" and not moved:
            # an update of the same user's session: only last_seen and remember can have changed,
            # and the user index already lives until the absolute deadline
            fields += ("_s", repr(op.meta.last_seen), "_r", "1" if op.meta.remember else "0")
            keys: tuple[str, ...] = (self.session_key(op.key), "", "", "")
        else:
            fields += _meta_fields(op.meta)
            keys = (
                self.session_key(op.key),
                self.user_key(op.meta.user_id),
                self.session_key(op.old_key) if op.old_key else "",
                self.user_key(op.previous_user) if moved else "",
            )
        ttl_ms = max(1, int(op.ttl * 1000))
        # the index must outlive every touch of its sessions: keep it to the absolute deadline
        index_ttl_ms = max(ttl_ms, int((op.meta.absolute_deadline - op.meta.last_seen) * 1000))
        args = (
            op.mode,
            op.key,
            ttl_ms,
            op.old_key or "",
            index_ttl_ms,
            len(op.delete),
            *("k:" + d for d in op.delete),
            *fields,
        )
        return Plan("write", keys, args, _applied)

    def plan_delete(self, key: str) -> Plan[None]:
        return Plan("delete", (self.session_key(key),), (f"{self.prefix}u:", key), lambda reply: None)

    def plan_user_sessions(self, user_id: str) -> Plan[list[tuple[str, Meta]]]:
        def decode(reply: Any) -> list[tuple[str, Meta]]:
            return [(_text(row[0]), _meta(*row[1:])) for row in reply]

        return Plan("user_sessions", (self.user_key(user_id),), (f"{self.prefix}s:",), decode)

    def plan_lock(self, key: str, owner: str, lease: float) -> Plan[bool]:
        args = (owner, max(1, int(lease * 1000)))
        return Plan("lock", (f"{self.prefix}l:{key}",), args, lambda reply: bool(int(reply)))

    def plan_unlock(self, key: str, owner: str) -> Plan[None]:
        return Plan("unlock", (f"{self.prefix}l:{key}",), (owner,), lambda reply: None)


def _translate(exc: Exception) -> StoreError:
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return StoreUnavailable(f"Redis cannot be reached: {type(exc).__name__}")
    return StoreError(f"Redis refused a session command: {type(exc).__name__}")


class RedisStore(RedisPlans):
    """The sync store, over ``redis.Redis``."""

    def __init__(self, client: redis.Redis, prefix: str = "session_mw:") -> None:
        super().__init__(prefix)
        self.client = client
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "session_mw:", connect_timeout: float = 2.0, timeout: float = 2.0
    ) -> RedisStore:
        client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout)
        return cls(client, prefix)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    def _run(self, plan: Plan[_T]) -> _T:
        try:
            reply = self._scripts[plan.script](keys=plan.keys, args=plan.args)
        except redis_errors.RedisError as exc:
            raise _translate(exc) from None
        return plan.decode(reply)

    def load(self, key: str, touch: Touch) -> Record | None:
        return self._run(self.plan_load(key, touch))

    def write(self, op: Write) -> bool:
        return self._run(self.plan_write(op))

    def delete(self, key: str) -> None:
        self._run(self.plan_delete(key))

    def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        return self._run(self.plan_user_sessions(user_id))

    def gc(self, now: float) -> int:
        return 0  # Redis expires sessions itself (PEXPIRE); user indexes are cleaned as read

    def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        return self._run(self.plan_lock(key, owner, lease))

    def release_lock(self, key: str, owner: str) -> None:
        self._run(self.plan_unlock(key, owner))

    def close(self) -> None:
        self.client.close()


class AsyncRedisStore(RedisPlans):
    """The asyncio store, over ``redis.asyncio.Redis``; the same plans as ``RedisStore``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "session_mw:") -> None:
        super().__init__(prefix)
        self.client = client
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "session_mw:", connect_timeout: float = 2.0, timeout: float = 2.0
    ) -> AsyncRedisStore:
        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout)
        return cls(client, prefix)

    def __repr__(self) -> str:
        return f"AsyncRedisStore(prefix={self.prefix!r})"

    async def _run(self, plan: Plan[_T]) -> _T:
        try:
            reply = await self._scripts[plan.script](keys=plan.keys, args=plan.args)
        except redis_errors.RedisError as exc:
            raise _translate(exc) from None
        except OSError as exc:
            raise StoreUnavailable(f"Redis cannot be reached: {type(exc).__name__}") from None
        return plan.decode(reply)

    async def load(self, key: str, touch: Touch) -> Record | None:
        return await self._run(self.plan_load(key, touch))

    async def write(self, op: Write) -> bool:
        return await self._run(self.plan_write(op))

    async def delete(self, key: str) -> None:
        await self._run(self.plan_delete(key))

    async def user_sessions(self, user_id: str) -> list[tuple[str, Meta]]:
        return await self._run(self.plan_user_sessions(user_id))

    async def gc(self, now: float) -> int:
        return 0

    async def acquire_lock(self, key: str, owner: str, lease: float) -> bool:
        return await self._run(self.plan_lock(key, owner, lease))

    async def release_lock(self, key: str, owner: str) -> None:
        await self._run(self.plan_unlock(key, owner))

    async def close(self) -> None:
        await self.client.aclose()
