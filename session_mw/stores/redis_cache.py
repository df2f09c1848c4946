"""Client-side caching for the Redis store: a worker keeps the sessions it has read, and Redis
tells it of every change to any session key (RESP3 ``CLIENT TRACKING ... BCAST PREFIX``),
whoever made it: a write, a touch, a rotate, a revoke, a logout, an expiry, a flush.

Nothing here waits on a request's path. Before every lookup the tracking connections are read
without blocking, so a change Redis made before the lookup is applied before it: on one host
its message is in this worker's socket before the writer even has its reply. A copy is served
only while every tracking connection has proven itself within ``MAX_SILENCE`` (a heartbeat
that a primary answered, with every message sent before it already read). A connection that
dropped, stalled, or now leads to a replica or to a changed Cluster empties the cache, and the
store reads Redis until a new connection is tracking. Connecting is done on a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .base import Record

log = logging.getLogger("session_mw")

#: Seconds between heartbeats on each tracking connection (sent only while requests come).
HEARTBEAT = 0.1
#: A copy is served only if every change made more than this many seconds ago has been read:
#: the bound on staleness should a tracking connection die without a word (a partition).
MAX_SILENCE = 0.25
#: Seconds between attempts to connect while tracking is down.
RECONNECT_DELAY = 1.0
#: A worker that served no request for this long lets its tracking go (Redis would buffer every
#: change for it meanwhile) and tracks again when requests come back.
IDLE_DROP = 60.0
#: What ``read_response`` returns for an invalidation (its handler has applied it).
_PUSHED = object()


@dataclass(slots=True)
class TrackingLink:
    """One RESP3 connection with broadcast tracking on, to one primary: redis-py's ``Connection``,
    the heartbeat command it is sent, and the check a heartbeat's reply must pass."""

    conn: Any
    heartbeat: tuple[str, ...]
    healthy: Callable[[Any], bool]
    sent_at: float | None = None  # a heartbeat in flight, sent then
    proven_at: float = 0.0  # every change Redis made before this moment has been read
    where: str = field(default="", repr=False)
    sock: Any = field(default=None, repr=False)  # the socket tracking was turned on for
    poller: Any = field(default=None, repr=False)  # select.poll() of that socket

    def watch(self) -> TrackingLink:
        """Tracking is on for the connection's socket now: remember it, and poll it from here on."""
        self.sock = self.conn._sock
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN | select.POLLPRI)
        return self


#: Builds the links to every primary of the deployment (blocking; run on a thread), tracking
#: the given key prefix and handing every invalidation to the given callback.
Connector = Callable[[bytes, Callable[[Any], Any]], Sequence[TrackingLink]]


class Ticket:
    """One read from Redis under way: its reply is kept only if nothing changed its key meanwhile."""

    __slots__ = ("digest", "dirty")

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.dirty = False  # its key changed, or the cache was flushed, since the read began


class RecordCache:
    """This worker's copies of session records, by digest, and the tracking that keeps them true.

    ``lookup`` first; for a read from Redis, ``begin`` before it and ``keep`` after it (always,
    with the record read or None); ``forget`` around a write. A read in flight when its key
    changes is not kept: its reply may predate the change. Thread-safe (a WSGI worker may have
    threads); asyncio never waits here.
    """

    def __init__(
        self,
        connector: Connector,
        session_prefix: str,
        *,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        self._prefix = session_prefix.encode()
        self._cut = len(self._prefix)
        self.size = size
        self._clock = clock
        self._lock = threading.RLock()  # an invalidation handler runs inside the pump, under it
        self._entries: dict[str, Record] = {}
        self._in_flight: dict[str, set[Ticket]] = {}  # the reads of each key under way
        self._usable = False  # what the last pump found
        self._links: list[TrackingLink] = []
        self._fresh: list[TrackingLink] | None = None  # links a connecting thread has ready
        self._connecting = False
        self._next_attempt = 0.0
        self._pid = os.getpid()
        self._orphans: list[TrackingLink] = []  # a forked parent's links: never read, never closed here
        self._closed = False
        self._failing = False  # the last connect attempt failed
        self._last_pump = clock()
        _caches.add(self)
        #: counts, for benchmarks and tests: hits, misses, invalidations, flushes
        self.stats = {"hits": 0, "misses": 0, "invalidated": 0, "flushes": 0}

    # -- the store's calls ---------------------------------------------------------------

    def lookup(self, digest: str) -> Record | None:
        """The copy of ``digest``, or None (none kept, or tracking is down)."""
        with self._lock:
            self._usable = self._pump()
            record = self._entries.get(digest) if self._usable else None
            self.stats["hits" if record is not None else "misses"] += 1
            return record

    def begin(self, digest: str) -> Ticket | None:
        """Right after ``lookup``, before a read of ``digest`` from Redis: its ticket for ``keep``
        (None when tracking is down: nothing read now may be kept)."""
        with self._lock:
            if not self._usable:
                return None
            ticket = Ticket(digest)
            self._in_flight.setdefault(digest, set()).add(ticket)
            return ticket

    def keep(self, ticket: Ticket | None, record: Record | None) -> None:
        """After the read ``ticket`` was given for: keep ``record`` unless its key changed (or the
        cache was flushed) since the read began."""
        if ticket is None:
            return
        with self._lock:
            if record is not None and not ticket.dirty:
                self._pump()  # apply what arrived during the read while the read is still registered
            reads = self._in_flight.get(ticket.digest)
            if reads is not None:
                reads.discard(ticket)
                if not reads:
                    del self._in_flight[ticket.digest]
            if record is None or ticket.dirty:
                return
            entries = self._entries
            if len(entries) >= self.size and ticket.digest not in entries:
                del entries[next(iter(entries))]  # the oldest copy kept
            entries[ticket.digest] = record

    def forget(self, digest: str) -> None:
        """This worker changes ``digest``: drop its copy now, before Redis says so."""
        with self._lock:
            self._invalidate(digest)

    def reset(self, reason: str) -> None:
        """The data path failed (an outage, a failover): trust nothing until tracking is rebuilt."""
        with self._lock:
            if self._links:
                self._lose(reason)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_links()
            self._flush()

    @property
    def tracking(self) -> bool:
        """Whether copies may be served now (tracking is up and proven recently)."""
        with self._lock:
            return self._pump()

    def __repr__(self) -> str:
        return f"RecordCache(size={self.size}, copies={len(self._entries)}, tracking={bool(self._links)})"

    # -- tracking ----------------------------------------------------------------------

    def _pump(self) -> bool:
        """Read every tracking connection without blocking; True if copies may be served."""
        if not _FORK_HOOK and self._pid != os.getpid():  # a forked worker (os.getpid is a syscall)
            self._forked()
        now = self._clock()
        idle, self._last_pump = now - self._last_pump, now
        if idle > IDLE_DROP and self._links:
            log.info("session cache: idle for %.0f s, tracking again from now", idle)
            self._drop_links()
            self._flush()
        fresh = self._fresh
        if fresh is not None:
            self._fresh = None
            self._flush()
            self._links = list(fresh)
            log.info("session cache: tracking Redis changes on %d connection(s)", len(fresh))
        links = self._links
        if not links:
            self._start_connecting(now)
            return False
        try:
            oldest = now
            for link in links:
                conn = link.conn
                if conn._sock is not link.sock:  # redis-py reconnected it: tracking is off there
                    raise _Broken(f"the tracking connection to {link.where} was reopened without tracking")
                # one poll(2) says whether anything came since the last pump, which read all: the
                # parser's buffer too (one recv may bring several messages), so loop on can_read
                if link.poller.poll(0):
                    while conn.can_read(timeout=0):
                        reply = conn.read_response(push_request=True)
                        if reply is _PUSHED:
                            continue
                        if link.sent_at is None or not link.healthy(reply):
                            raise _Broken(f"the tracking connection to {link.where} no longer leads to a primary")
                        link.proven_at, link.sent_at = link.sent_at, None
                if link.sent_at is None:
                    if now - link.proven_at >= HEARTBEAT:
                        conn.send_command(*link.heartbeat)
                        link.sent_at = now
                elif now - link.sent_at > MAX_SILENCE:
                    raise _Broken(f"the tracking connection to {link.where} did not answer a heartbeat")
                oldest = min(oldest, link.proven_at)
        except Exception as exc:  # a socket or protocol error: the channel is lost, whatever it was
            self._lose(str(exc) if isinstance(exc, _Broken) else f"{type(exc).__name__} on a tracking connection")
            return False
        return now - oldest <= MAX_SILENCE

    def _forked(self) -> None:
        """In a forked child: the parent's sockets are not this process's to read, nor to close."""
        self._orphans.extend(self._links)
        self._links, self._fresh, self._connecting, self._pid = [], None, False, os.getpid()
        self._flush()

    def _on_invalidation(self, push: Any) -> Any:
        """redis-py's handler for an ``invalidate`` push: its keys, or None for a flush."""
        keys = push[1] if len(push) > 1 else None
        if keys is None:
            self._flush()
            return _PUSHED
        cut, prefix = self._cut, self._prefix
        for key in keys:
            if isinstance(key, str):
                key = key.encode()
            if key.startswith(prefix):
                self._invalidate(key[cut:].decode("ascii", "replace"))
        return _PUSHED

    def _invalidate(self, digest: str) -> None:
        self.stats["invalidated"] += 1
        self._entries.pop(digest, None)
        for ticket in self._in_flight.get(digest, ()):
            ticket.dirty = True  # its reply may predate this change

    def _flush(self) -> None:
        self.stats["flushes"] += 1
        self._entries.clear()
        for reads in self._in_flight.values():
            for ticket in reads:
                ticket.dirty = True  # begun before the flush: its reply may be from before it too
        self._in_flight.clear()

    def _lose(self, reason: str) -> None:
        log.warning("session cache bypassed until Redis tracking is back: %s", reason)
        self._drop_links()
        self._flush()
        self._next_attempt = self._clock() + RECONNECT_DELAY

    def _drop_links(self) -> None:
        links, self._links, self._fresh = self._links + (self._fresh or []), [], None
        for link in links:
            with contextlib.suppress(Exception):  # closing a socket that may be broken already
                link.conn.disconnect()

    def _start_connecting(self, now: float) -> None:
        if self._connecting or self._closed or now < self._next_attempt:
            return
        self._connecting = True
        self._next_attempt = now + RECONNECT_DELAY
        threading.Thread(target=self._connect, name="session_mw-cache-tracking", daemon=True).start()

    def _connect(self) -> None:
        pid = os.getpid()
        try:
            started = self._clock()
            links = list(self._connector(self._prefix, self._on_invalidation))
            for link in links:
                link.proven_at = started  # tracking was on before anything is read through it
        except ConfigError as exc:  # no retry can fix it: the cache stays off, the store works on
            log.error("session cache off: %s", exc)
            with self._lock:
                self._connecting, self._closed = False, True
            return
        except Exception as exc:
            # said once per outage (then at debug level): this is retried every RECONNECT_DELAY
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "session cache: cannot track Redis changes yet (%s: %s)", type(exc).__name__, exc)
            with self._lock:
                self._connecting, self._failing = False, True
            return
        with self._lock:
            self._connecting = False
            if self._closed or pid != self._pid:
                for link in links:
                    link.conn.disconnect()
                return
            self._fresh, self._failing = links, False


#: Every cache of this process: a fork's child gets fresh locks (the parent's may be held by a
#: connecting thread that the child does not have).
_caches: weakref.WeakSet[RecordCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._lock = threading.RLock()
        cache._forked()


_FORK_HOOK = hasattr(os, "register_at_fork")
if _FORK_HOOK:
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Broken(Exception):
    """A tracking connection can no longer be trusted."""
