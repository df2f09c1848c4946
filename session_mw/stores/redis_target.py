"""Which Redis a store URL names, and the redis-py client that speaks to it.

    redis://[user:pass@]host:port/db             one node (rediss:// for TLS, unix:///path.sock)
    redis+sentinel://[user:pass@]h:p[,h:p...]/service[/db]   the primary Sentinel elects for service
    redis+cluster://[user:pass@]h:p[,h:p...]     a Cluster, from any of its nodes

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS. The user and password are the data
nodes' (ACL); sentinels that need their own take ``?sentinel_username=...&sentinel_password=...``.
Routing, failover and redirections are redis-py's (``Sentinel``, ``RedisCluster``): none here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError

Mode = Literal["node", "sentinel", "cluster"]
SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("node", False),
    "rediss": ("node", True),
    "unix": ("node", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_SENTINEL_QUERY = frozenset({"sentinel_username", "sentinel_password"})
#: TLS settings a URL may carry (a private CA; managed services' certificates need none)
_TLS_QUERY = frozenset({"ssl_ca_certs", "ssl_cert_reqs"})
_QUERY = _SENTINEL_QUERY | _TLS_QUERY


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed store URL. ``url`` is kept for one node (redis-py parses its own URLs)."""

    mode: Mode
    url: str = field(repr=False)
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        """For messages: the deployment, never a password."""
        if self.mode == "node":
            return ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"Sentinel {self.service!r} via {hosts}" if self.mode == "sentinel" else f"Cluster via {hosts}"


def parse(url: str) -> RedisTarget:
    """``ConfigError`` (without the password) for a URL that names no usable deployment."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"store_url: {scheme!r} is not a Redis scheme ({', '.join(SCHEMES)})")
    mode, tls = SCHEMES[scheme]
    if mode == "node":
        return RedisTarget(mode, url, tls)
    parts = urlsplit(url)
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    hosts = tuple(_host_port(item, scheme) for item in hostlist.split(",") if item)
    if not hosts:
        raise ConfigError(f"store_url: {scheme}:// needs at least one host:port")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _QUERY)
    if unknown:
        raise ConfigError(f"store_url: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(_QUERY))})")
    if mode == "cluster" and query.keys() & _SENTINEL_QUERY:
        raise ConfigError("store_url: sentinel_* parameters mean nothing for a Cluster")
    tls_options = tuple(sorted((k, v) for k, v in query.items() if k in _TLS_QUERY))
    if tls_options and not tls:
        raise ConfigError(f"store_url: ssl_* parameters need TLS (r{scheme}://)")
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = "", 0
    if mode == "sentinel":
        if not path or len(path) > 2:
            raise ConfigError(f"store_url: {scheme}://hosts/SERVICE[/DB] names the service Sentinel monitors")
        service = path[0]
        if len(path) == 2:
            db = _db(path[1])
    elif path:
        raise ConfigError("store_url: a Cluster has no database number (it has only db 0): drop the path")
    return RedisTarget(
        mode,
        url,
        tls,
        hosts,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        query.get("sentinel_username") or None,
        query.get("sentinel_password") or None,
        tls_options,
    )


def _host_port(item: str, scheme: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host:
        host, port = item, "26379" if "sentinel" in scheme else "6379"
    host = host.strip("[]")  # an IPv6 literal
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"store_url: {item!r} is not host:port") from None
    if not 0 < number < 65536:
        raise ConfigError(f"store_url: port {number} is out of range")
    return host, number


def _db(text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(f"store_url: database {text!r} is not a number") from None
    if db < 0:
        raise ConfigError("store_url: the database number must be 0 or more")
    return db


def connect(target: RedisTarget, *, asyncio: bool, connect_timeout: float, timeout: float) -> Any:
    """The redis-py client for ``target`` (``redis.asyncio`` when ``asyncio``), with bounded timeouts."""
    import redis
    import redis.asyncio
    from redis.backoff import NoBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 1)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 1)
    # one immediate retry (a pooled connection the server closed), never redis-py's default of
    # three with exponential backoff: an outage costs a request about twice the timeouts, not seconds
    bounds: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": timeout, "retry": retry}
    if target.mode == "node":
        node_class = redis.asyncio.Redis if asyncio else redis.Redis
        return node_class.from_url(target.url, **bounds)
    options: dict[str, Any] = {**bounds, "username": target.username, "password": target.password}
    tls: dict[str, Any] = {"ssl": True, **dict(target.tls_options)} if target.tls else {}
    options.update(tls)
    if target.mode == "sentinel":
        if asyncio:
            from redis.asyncio.sentinel import Sentinel as AsyncSentinel

            sentinel_class: Any = AsyncSentinel
            primary_class: Any = redis.asyncio.Redis
        else:
            from redis.sentinel import Sentinel

            sentinel_class, primary_class = Sentinel, redis.Redis
        sentinel_kwargs: dict[str, Any] = {**bounds, **tls}
        if target.sentinel_password is not None:
            sentinel_kwargs.update(username=target.sentinel_username, password=target.sentinel_password)
        sentinel = sentinel_class(list(target.hosts), sentinel_kwargs=sentinel_kwargs, **bounds)
        return sentinel.master_for(target.service, redis_class=primary_class, db=target.db, **options)
    if asyncio:
        from redis.asyncio.cluster import ClusterNode as AsyncNode
        from redis.asyncio.cluster import RedisCluster as AsyncCluster

        nodes: list[Any] = [AsyncNode(h, p) for h, p in target.hosts]
        return AsyncCluster(startup_nodes=nodes, **options)
    from redis import cluster

    node: Any = cluster.ClusterNode  # untyped in redis-py
    return LazyCluster(lambda: cluster.RedisCluster(startup_nodes=[node(h, p) for h, p in target.hosts], **options))


class LazyCluster:
    """redis-py's sync ``RedisCluster`` reaches the cluster in its constructor: a cluster that is
    down when the app starts must cost the requests that need it a 503, not stop the app. This
    builds the client on first use, and again on the next use if building it failed."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def get_encoder(self) -> Any:
        """What ``Script`` asks for its digest: RedisCluster's default encoding, without connecting."""
        from redis import _parsers

        encoder: Any = _parsers.Encoder  # untyped in redis-py
        return encoder("utf-8", "strict", False)

    def register_script(self, script: str) -> Any:
        from redis.commands import core

        script_class: Any = core.Script  # typed for a real client: this stands in for one
        return script_class(self, script)  # evalsha and script_load go through __getattr__, on first call

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


#: How long a tracking connection's read may wait for the rest of a message already begun.
_TRACKING_READ_TIMEOUT = 0.1


def tracking_connector(target: RedisTarget, *, connect_timeout: float, primary: Callable[[], Any] | None = None) -> Any:
    """A ``redis_cache.Connector`` for ``target``: a RESP3 connection with broadcast tracking on
    to each primary (the one node; the primary Sentinel names; every Cluster primary, those
    without slots too), each with a heartbeat that fails once it no longer leads to a primary of
    the same deployment. ``primary`` (Sentinel) is the data path's view of the primary's address:
    a link to any other node is not trusted (a primary cut off and replaced)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    from .redis_cache import TrackingLink

    def forced() -> dict[str, Any]:
        # whatever the URL says: RESP3 (pushes), no health checks or retries that would reconnect
        # behind our back without tracking, a short read bound for a message already begun
        return {
            "protocol": 3,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": _TRACKING_READ_TIMEOUT,
            "health_check_interval": 0,
            "retry_on_timeout": False,
            "retry": Retry(NoBackoff(), 0),
        }

    def direct(host: str, port: int, db: int = 0) -> Any:
        options: dict[str, Any] = {"username": target.username, "password": target.password, **forced()}
        if target.tls:
            options.update(dict(target.tls_options))
        connection_class: Any = redis.SSLConnection if target.tls else redis.Connection
        return connection_class(host=host, port=port, db=db, **options)

    def track(conn: Any, prefix: bytes, on_invalidation: Callable[[Any], Any], link: TrackingLink) -> TrackingLink:
        conn.connect()
        parser = conn._parser  # redis-py's own hook for invalidations (its client-side cache uses it)
        if not hasattr(parser, "set_invalidation_push_handler"):
            raise ConfigError("client_cache needs redis-py 5.1 or later")
        if getattr(parser, "_hiredis_PushNotificationType", True) is None:
            raise ConfigError("client_cache needs hiredis 3.2 or later (or no hiredis): this one hides push messages")
        parser.set_invalidation_push_handler(on_invalidation)
        conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", prefix)
        if conn.read_response() not in (b"OK", "OK"):
            raise redis.ConnectionError("CLIENT TRACKING was refused")
        return link.watch()  # another socket later: redis-py reconnected, without tracking

    def is_primary(reply: Any) -> bool:
        return isinstance(reply, list) and bool(reply) and reply[0] in (b"master", "master")

    def connector(prefix: bytes, on_invalidation: Callable[[Any], Any]) -> list[TrackingLink]:
        if target.mode == "node":
            pool = redis.ConnectionPool.from_url(target.url)
            conn = pool.connection_class(**{**pool.connection_kwargs, **forced()})
            return [track(conn, prefix, on_invalidation, TrackingLink(conn, ("ROLE",), is_primary, where="the node"))]
        if target.mode == "sentinel":
            sentinel_kwargs: dict[str, Any] = {
                "socket_connect_timeout": connect_timeout,
                "socket_timeout": connect_timeout,
            }
            if target.tls:
                sentinel_kwargs.update(ssl=True, **dict(target.tls_options))
            if target.sentinel_password is not None:
                sentinel_kwargs.update(username=target.sentinel_username, password=target.sentinel_password)
            sentinel: Any = Sentinel  # untyped in redis-py
            host, port = sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs).discover_master(target.service)
            address = (host, int(port))

            def still_primary(reply: Any) -> bool:
                seen = primary() if primary is not None else None
                return is_primary(reply) and (seen is None or (seen[0], int(seen[1])) == address)

            conn = direct(host, port, target.db)
            link = TrackingLink(conn, ("ROLE",), still_primary, where=f"the primary of {target.service!r}")
            return [track(conn, prefix, on_invalidation, link)]
        primaries = _cluster_primaries(target, direct)

        def same_cluster(reply: Any) -> bool:  # the same primaries, none added or gone
            return _node_primaries(reply) == primaries

        links: list[TrackingLink] = []
        try:
            for host, port in sorted(primaries):
                conn = direct(host, port)
                links.append(TrackingLink(conn, ("CLUSTER", "NODES"), same_cluster, where=f"{host}:{port}"))
                track(conn, prefix, on_invalidation, links[-1])
        except BaseException:
            for link in links:
                link.conn.disconnect()
            raise
        return links

    return connector


def _cluster_primaries(target: RedisTarget, direct: Callable[[str, int], Any]) -> frozenset[tuple[str, int]]:
    """Every primary of the Cluster, with or without slots (a resharding moves slots to new ones),
    as the first startup node that answers says."""
    import redis

    failure: Exception = redis.ConnectionError("no Cluster node answered")
    for host, port in target.hosts:
        conn = direct(host, port)
        try:
            conn.connect()
            conn.send_command("CLUSTER", "NODES")
            primaries = _node_primaries(conn.read_response())
            if primaries:
                return primaries
        except (redis.RedisError, OSError) as exc:
            failure = exc
        finally:
            conn.disconnect()
    raise failure


def _node_primaries(reply: Any) -> frozenset[tuple[str, int]]:
    """The (host, port) of each primary a ``CLUSTER NODES`` reply lists that has not failed."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    out = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        flags = set(fields[2].split(","))
        if "master" not in flags or flags & {"fail", "handshake", "noaddr"}:
            continue
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            out.add((host.strip("[]"), int(port)))
    return frozenset(out)
