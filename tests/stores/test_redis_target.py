"""Store URLs for one node, a Sentinel service and a Cluster: what they name, and clear refusals."""

from __future__ import annotations

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
    ],
)
def test_urls_name_their_deployment(url: str, expected: RedisTarget) -> None:
    target = parse(url)
    fields = ("mode", "tls", "hosts", "service", "db", "username", "password", "sentinel_username", "sentinel_password")
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
