"""Store URLs for one node, a Sentinel service and a Cluster: what they name, and clear refusals."""

from __future__ import annotations

import time
from typing import Any

import pytest

from session_mw import ConfigError, SessionConfig
from session_mw.stores.redis_target import RedisTarget, parse


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("node", "redis://127.0.0.1:6379/0")),
        ("rediss://h:6380/1", RedisTarget("node", "rediss://h:6380/1", tls=True)),
        (
            "redis+sentinel://s1:26379,s2:26380,s3/sessions",
            RedisTarget("sentinel", "", hosts=(("s1", 26379), ("s2", 26380), ("s3", 26379)), service="sessions"),
        ),
        (
            "rediss+sentinel://app:pw%40x@s1:1/mymaster/3?sentinel_password=spw",
            RedisTarget(
                "sentinel",
                "",
                tls=True,
                hosts=(("s1", 1),),
                service="mymaster",
                db=3,
                username="app",
                password="pw@x",
                sentinel_password="spw",
            ),
        ),
        (
            "redis+cluster://:secret@n1:7000,n2:7001,[::1]:7002",
            RedisTarget("cluster", "", hosts=(("n1", 7000), ("n2", 7001), ("::1", 7002)), password="secret"),
        ),
        ("rediss+cluster://n1", RedisTarget("cluster", "", tls=True, hosts=(("n1", 6379),))),
        (
            "rediss+sentinel://s1/svc?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
            RedisTarget(
                "sentinel",
                "",
                tls=True,
                hosts=(("s1", 26379),),
                service="svc",
                tls_options=(("ssl_ca_certs", "/ca.pem"), ("ssl_cert_reqs", "required")),
            ),
        ),
    ],
)
def test_urls_name_their_deployment(url: str, expected: RedisTarget) -> None:
    target = parse(url)
    fields = ["mode", "tls", "hosts", "service", "db", "username", "password", "sentinel_username"]
    fields += ["sentinel_password", "tls_options"]
    assert {f: getattr(target, f) for f in fields} == {f: getattr(expected, f) for f in fields}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1:26379", "SERVICE"),
        ("redis+sentinel://s1:26379/a/b/c", "SERVICE"),
        ("redis+sentinel://s1:26379/svc/x", "not a number"),
        ("redis+sentinel:///svc", "at least one host"),
        ("redis+cluster://n1:7000/1", "no database number"),
        ("redis+cluster://n1:notaport", "not host:port"),
        ("redis+cluster://n1:70000", "out of range"),
        ("redis+sentinel://s1/svc?timeout=3", "unknown parameter"),
        ("redis+cluster://n1?sentinel_password=x", "mean nothing for a Cluster"),
        ("redis+cluster://n1?ssl_ca_certs=/ca.pem", "need TLS"),
    ],
)
def test_bad_urls_are_config_errors_that_never_show_the_password(url: str, problem: str) -> None:
    with_password = url.replace("://", "://user:hunter2@", 1)
    for candidate in (url, with_password):
        with pytest.raises(ConfigError, match=problem) as caught:
            parse(candidate)
        assert "hunter2" not in str(caught.value)


def test_the_new_schemes_are_valid_settings_and_masked_in_reprs() -> None:
    config = SessionConfig(store_url="redis+sentinel://app:hunter2@s1:26379,s2:26379/sessions/0")
    assert "hunter2" not in repr(config)
    assert SessionConfig(store_url="rediss+cluster://n1:7000").store_url.startswith("rediss+cluster://")


def test_messages_name_the_deployment_not_its_secrets() -> None:
    target = parse("redis+sentinel://app:hunter2@s1:1,s2:2/sessions")
    assert target.where == "Sentinel 'sessions' via s1:1,s2:2" and "hunter2" not in repr(target)
    assert parse("redis+cluster://n1:7000").where == "Cluster via n1:7000"


def _grant(url: str, user: str, password: str) -> None:
    """An ACL user on every data node of the deployment ``url`` names (ACLs are not replicated)."""
    import redis
    from redis.cluster import RedisCluster

    from session_mw.stores.redis_target import connect

    target = parse(url)
    rules: dict[str, Any] = {"enabled": True, "passwords": [f"+{password}"], "keys": ["*"], "commands": ["+@all"]}
    client = connect(target, asyncio=False, connect_timeout=2, timeout=2)
    try:
        if target.mode == "cluster":
            client.acl_setuser(user, **rules, target_nodes=RedisCluster.ALL_NODES)
            return
        client.acl_setuser(user, **rules)
        if target.mode == "sentinel":
            from redis import sentinel

            watcher: Any = sentinel.Sentinel  # untyped in redis-py
            for host, port in watcher(list(target.hosts)).discover_slaves(target.service):
                replica = redis.Redis(host=host, port=port)
                replica.acl_setuser(user, **rules)
                replica.close()
    finally:
        client.close()


def test_acl_credentials_in_the_url_reach_every_deployment(deployment_url: str, key_prefix: str) -> None:
    """``user:pass@`` are the data nodes' ACL credentials, on one node, a Sentinel's primary and a
    Cluster's nodes; a wrong password stops the app at start-up (a ConfigError), naming no secret."""
    from session_mw.stores import open_store
    from session_mw.stores.base import UNBOUNDED, Check, Close, Create, Load
    from session_mw.testing import meta

    _grant(deployment_url, "session_app", "s3cret-pw")
    scheme, rest = deployment_url.split("://", 1)
    store = open_store(SessionConfig(store_url=f"{scheme}://session_app:s3cret-pw@{rest}", key_prefix=key_prefix))
    try:
        store.execute(Check())
        store.execute(Create("ab" * 32, meta(time.time()), {"a": b"1"}, UNBOUNDED))
        assert store.execute(Load("ab" * 32, UNBOUNDED)) is not None
    finally:
        store.execute(Close())
    wrong = open_store(SessionConfig(store_url=f"{scheme}://session_app:wrong-pw@{rest}", key_prefix=key_prefix))
    try:
        with pytest.raises(ConfigError) as refused:
            wrong.execute(Check())
        assert "wrong-pw" not in str(refused.value) and "s3cret" not in str(refused.value)
    finally:
        wrong.execute(Close())


@pytest.mark.parametrize("kind", ["redis", "redis+cluster", "redis+sentinel"])
def test_a_deployment_down_at_start_up_is_a_warning_then_store_unavailable(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py's Cluster client connects in its constructor: ours waits for the first use, so an
    app starts while its store is down and answers 503s until the store is back. Each failed call
    takes about the timeouts, not redis-py's default retries with backoff (seconds)."""
    from session_mw import StoreUnavailable
    from session_mw.stores import open_store
    from session_mw.stores.base import UNBOUNDED, Check, Close, Load
    from tests.conftest import free_port

    url = f"{kind}://127.0.0.1:{free_port()}" + {"redis": "/0", "redis+sentinel": "/sessions"}.get(kind, "")
    store = open_store(SessionConfig(store_url=url, store_connect_timeout=0.2, store_socket_timeout=0.2))
    with caplog.at_level("WARNING", logger="session_mw"):
        store.execute(Check())
    assert "not reachable at start-up" in caplog.text
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Redis"):
        store.execute(Load("ab" * 32, UNBOUNDED))
    assert time.monotonic() - started < 1.0
    store.execute(Close())
