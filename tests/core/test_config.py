from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest

from session_mw import ConfigError, SessionConfig
from session_mw.config import _COERCERS

SECRET = "k3y-very-secret-digest"


def test_defaults_are_the_safe_ones() -> None:
    c = SessionConfig()
    assert c.cookie_secure and c.cookie_samesite == "lax" and c.host_prefix
    assert c.full_cookie_name == "__Host-id"
    assert c.touch_interval == c.idle_timeout / 10
    assert c.token_bytes == 32


def test_every_setting_has_a_coercion() -> None:
    assert set(_COERCERS) == {f.name for f in dataclasses.fields(SessionConfig)}


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"store_url": "mysql://x"}, "store_url"),
        ({"cookie_name": "bad name"}, "cookie_name"),
        ({"cookie_name": "__Host-x"}, "cookie_name"),
        ({"cookie_samesite": "sometimes"}, "cookie_samesite"),
        ({"cookie_samesite": "none", "cookie_secure": False}, "cookie_samesite"),
        ({"cookie_path": "app"}, "cookie_path"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": 100, "absolute_timeout": 50}, "absolute_timeout"),
        ({"touch_interval": 5000}, "touch_interval"),
        ({"token_bytes": 8}, "token_bytes"),
        ({"exclude_paths": ("static",)}, "exclude_paths"),
        ({"store_socket_timeout": 0}, "store_socket_timeout"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_setting(settings: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        SessionConfig(**settings)  # type: ignore[arg-type]


# -- one coercion and validation, whichever way a value arrives -----------------------------

#: (setting, value as a string, words the message must hold). Every row fails the same way
#: as a keyword argument, as an environment variable and as a mapping key.
BAD_VALUES: list[tuple[str, str, str]] = [
    ("locking", "maybe", "true or false"),
    ("locking", "", "true or false"),
    ("cookie_secure", "", "true or false"),
    ("cookie_secure", "ture", "true or false"),
    ("host_prefix", "2", "true or false"),
    ("idle_timeout", "soon", "number of seconds"),
    ("idle_timeout", "", "number of seconds"),
    ("idle_timeout", "nan", "finite"),
    ("idle_timeout", "inf", "finite"),
    ("idle_timeout", "-5", "positive"),
    ("absolute_timeout", "60", "at least idle_timeout"),
    ("touch_interval", "181", "90 %"),
    ("touch_interval", "-1", "between 0 and"),
    ("token_bytes", "2.5", "whole number"),
    ("token_bytes", "8", "between 16"),
    ("token_bytes", "1e999", "finite"),
    ("retry_after", "2.5", "whole number of seconds"),
    ("retry_after", "-1", ">= 0"),
    ("lock_timeout", "0", "positive"),
    ("replica_acks", "-1", "between 0"),
    ("replica_acks", "1.5", "whole number"),
    ("replica_ack_timeout", "0", "more than 0"),
    ("replica_ack_timeout", "61", "at most 60"),
    ("store_connect_timeout", "-inf", "finite"),
    ("store_url", "mysql://db", "must start with"),
    ("cookie_name", "two words", "cookie token"),
    ("cookie_name", "__Secure-sid", "__Host-"),
    ("cookie_samesite", "sometimes", "'lax', 'strict' or 'none'"),
    ("cookie_domain", "evil.com; Partitioned", "domain name"),
    ("cookie_domain", "a.com\r\nX: y", "domain name"),
    ("cookie_domain", "example.com:8443", "no port"),
    ("cookie_domain", "127.0.0.1:80", "no port"),
    ("cookie_domain", "..example.com", "domain name"),
    ("cookie_domain", "example.com.", "domain name"),
    ("cookie_domain", "ex ample.com", "domain name"),
    ("cookie_domain", "-x.example.com", "domain name"),
    ("cookie_domain", "ex_ample.com", "domain name"),
    ("cookie_domain", "a,b.com", "domain name"),
    ("cookie_path", "app", "start with '/'"),
    ("cookie_path", "/a;b", "';'"),
    ("cookie_path", "/a,b", "','"),
    ("cookie_path", "/a b", "visible ASCII"),
    ("cookie_path", "/a\x00", "visible ASCII"),
    ("cookie_path", "/caf\u00e9", "visible ASCII"),
    ("key_prefix", "my app:", "whitespace"),
    ("key_prefix", "app\x07:", "control"),
    ("exclude_paths", "/static, assets", "start with '/'"),
]


def _failure(make: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


@pytest.mark.parametrize(("name", "value", "words"), BAD_VALUES)
def test_a_bad_value_fails_identically_from_kwargs_env_and_mapping(name: str, value: str, words: str) -> None:
    key, given = f"SESSION_MW_{name.upper()}", {name: value}
    from_kwargs = _failure(lambda: SessionConfig(**given))  # type: ignore[arg-type]
    from_env = _failure(lambda: SessionConfig.from_env(environ={key: value}))
    from_mapping = _failure(lambda: SessionConfig.from_mapping({key.lower(): value}))
    assert from_kwargs.startswith(name + " ") and words in from_kwargs
    assert repr(value) in from_kwargs  # the offending value, as it was given
    assert from_env == f"{from_kwargs} (from {key})"
    assert from_mapping == f"{from_kwargs} (from {key.lower()})"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("locking", "no", False),
        ("locking", " YES ", True),
        ("locking", "On", True),
        ("locking", "0", False),
        ("cookie_secure", "False", False),
        ("idle_timeout", "600", 600.0),
        ("idle_timeout", " 1.5 ", 1.5),
        ("touch_interval", "0", 0.0),
        ("token_bytes", "48", 48),
        ("token_bytes", "48.0", 48),
        ("retry_after", "7", 7),
        ("cookie_domain", " Example.COM ", "example.com"),
        ("cookie_domain", ".example.com", ".example.com"),
        ("cookie_domain", "", None),
        ("cookie_samesite", " Strict", "strict"),
        ("exclude_paths", "/static, ,/favicon.ico", ("/static", "/favicon.ico")),
    ],
)
def test_a_good_value_reads_identically_from_kwargs_env_and_mapping(name: str, value: str, expected: object) -> None:
    key, given = f"SESSION_MW_{name.upper()}", {name: value}
    made = [
        SessionConfig(**given),  # type: ignore[arg-type]
        SessionConfig.from_env(environ={key: value}),
        SessionConfig.from_mapping({key: value}),
    ]
    for config in made:
        got = getattr(config, name)
        assert got == expected and type(got) is type(expected)
    assert made[0] == made[1] == made[2]


def test_locking_no_means_off() -> None:
    assert SessionConfig(locking="no").locking is False  # type: ignore[arg-type]
    assert SessionConfig.from_env(environ={"SESSION_MW_LOCKING": "no"}).locking is False


def test_strings_become_numbers() -> None:
    c = SessionConfig(idle_timeout="600", retry_after="3")  # type: ignore[arg-type]
    assert c.idle_timeout == 600.0 and isinstance(c.idle_timeout, float)
    assert c.retry_after == 3 and isinstance(c.retry_after, int)


@pytest.mark.parametrize(
    "name", ["idle_timeout", "absolute_timeout", "store_connect_timeout", "store_socket_timeout", "lock_timeout"]
)
def test_fractional_timeouts_are_kept_exactly(name: str) -> None:
    settings: dict[str, Any] = {name: 1.25}
    if name == "absolute_timeout":
        settings["idle_timeout"] = 1
    assert getattr(SessionConfig(**settings), name) == 1.25


def test_idle_timeout_fraction_and_timedelta() -> None:
    assert SessionConfig(idle_timeout=1.5).idle_timeout == 1.5
    assert SessionConfig(idle_timeout=timedelta(milliseconds=1500)).idle_timeout == 1.5  # type: ignore[arg-type]
    assert SessionConfig(idle_timeout=Fraction(3, 2)).idle_timeout == 1.5  # type: ignore[arg-type]
    assert SessionConfig(retry_after=timedelta(seconds=4)).retry_after == 4  # type: ignore[arg-type]
    assert SessionConfig(token_bytes=32.0).token_bytes == 32  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"idle_timeout": True}, "idle_timeout"),  # a bool is not a number
        ({"token_bytes": True}, "token_bytes"),
        ({"retry_after": 2.5}, "retry_after"),
        ({"retry_after": timedelta(milliseconds=1500)}, "retry_after"),
        ({"token_bytes": timedelta(seconds=32)}, "token_bytes"),
        ({"lock_timeout": float("inf")}, "lock_timeout"),
        ({"idle_timeout": float("nan")}, "idle_timeout"),
        ({"idle_timeout": None}, "idle_timeout"),
        ({"locking": 1}, "locking"),  # only real bools and the documented strings
        ({"locking": None}, "locking"),
        ({"cookie_name": 5}, "cookie_name"),
        ({"cookie_path": b"/"}, "cookie_path"),
        ({"store_url": None}, "store_url"),
        ({"cookie_domain": 5}, "cookie_domain"),
        ({"cookie_samesite": None}, "cookie_samesite"),
        ({"key_prefix": ["a"]}, "key_prefix"),
        ({"exclude_paths": 5}, "exclude_paths"),
        ({"exclude_paths": ["/a", 5]}, "exclude_paths"),
        ({"exclude_paths": b"/a"}, "exclude_paths"),
    ],
)
def test_wrong_python_types_are_config_errors(settings: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig(**settings)
    assert str(caught.value).startswith(name + " ")
    assert repr(next(iter(settings.values()))) in str(caught.value)


def test_empty_or_unknown_boolean_in_the_environment_is_an_error() -> None:
    for value in ("", "  ", "maybe", "enabled"):
        with pytest.raises(ConfigError, match="SESSION_MW_COOKIE_SECURE"):
            SessionConfig.from_env(environ={"SESSION_MW_COOKIE_SECURE": value})


def test_touch_interval_defaults_to_a_tenth_of_the_idle_timeout() -> None:
    c = SessionConfig(idle_timeout=2, absolute_timeout=10)
    assert c.touch_interval == 0.2 and c.effective_touch_interval == 0.2
    assert SessionConfig(idle_timeout=5).touch_interval == 0.5  # no 1-second floor any more
    assert SessionConfig(idle_timeout=600, touch_interval=60).touch_interval == 60.0
    assert SessionConfig(idle_timeout=1.1, touch_interval=0.11).touch_interval == 0.11  # float rounding is no error
    assert SessionConfig(touch_interval=0).touch_interval == 0.0


def test_touch_interval_above_a_tenth_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"touch_interval .* 90 % of idle_timeout .*; got 61"):
        SessionConfig(idle_timeout=600, touch_interval=61)
    with pytest.raises(ConfigError, match="touch_interval"):
        SessionConfig(idle_timeout=2, absolute_timeout=10, touch_interval=0.21)


def test_replace_revalidates_and_rederives() -> None:
    c = SessionConfig()
    with pytest.raises(ConfigError, match="idle_timeout"):
        c.replace(idle_timeout=0)
    with pytest.raises(ConfigError, match="cookie_domain"):
        c.replace(cookie_domain="evil.com; Partitioned")
    assert c.replace(locking="no").locking is False
    assert c.replace(idle_timeout=100).touch_interval == 10.0  # the derived default follows
    pinned = SessionConfig(idle_timeout=1000, touch_interval=50)
    assert pinned.replace(idle_timeout=2000).touch_interval == 50.0  # an explicit one stays
    with pytest.raises(ConfigError, match="touch_interval"):
        pinned.replace(idle_timeout=400)


def test_messages_name_the_setting_and_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig(cookie_domain="evil.com; Partitioned")
    assert "cookie_domain" in str(caught.value) and "'evil.com; Partitioned'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        SessionConfig(cookie_domain="a.com\r\nX: y")
    assert "'a.com\\r\\nX: y'" in str(caught.value) and "\n" not in str(caught.value)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig(cookie_domain="x;" * 500)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "settings",
    [
        {"digest_key": 12345},
        {"digest_key": [SECRET]},
        {"digest_key": SECRET, "idle_timeout": "soon"},
        {"digest_key": SECRET, "cookie_domain": "bad domain"},
    ],
)
def test_the_digest_key_never_appears_in_messages(settings: dict[str, Any]) -> None:
    mapping = {f"SESSION_MW_{k.upper()}": v for k, v in settings.items()}
    for message in (_failure(lambda: SessionConfig(**settings)), _failure(lambda: SessionConfig.from_mapping(mapping))):
        assert SECRET not in message and "12345" not in message


def test_digest_key_errors_say_hidden() -> None:
    with pytest.raises(ConfigError, match="digest_key must be a string; got <hidden>"):
        SessionConfig(digest_key=12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:hunter2@db:3306/app",
        "ftp://:hunter2@cache:6379/0",
        "mysql://db/0?password=hunter2",
        "user:hunter2@cache",
    ],
)
def test_store_url_passwords_are_masked_in_messages(url: str) -> None:
    env = {"SESSION_MW_STORE_URL": url}
    from_kwargs = _failure(lambda: SessionConfig(store_url=url))
    for message in (from_kwargs, _failure(lambda: SessionConfig.from_env(environ=env))):
        assert "hunter2" not in message and "store_url" in message


def test_the_strongest_prefix_the_browser_allows() -> None:
    assert SessionConfig().full_cookie_name == "__Host-id"
    assert SessionConfig(cookie_secure=False).full_cookie_name == "id"
    assert SessionConfig(cookie_domain="example.com").full_cookie_name == "__Secure-id"
    assert SessionConfig(cookie_path="/app").full_cookie_name == "__Secure-id"
    assert SessionConfig(cookie_path="/app", cookie_secure=False).full_cookie_name == "id"
    assert SessionConfig(host_prefix=False).full_cookie_name == "id"
    assert SessionConfig(host_prefix=False, cookie_path="/app").full_cookie_name == "id"


def test_from_env_uses_the_documented_names() -> None:
    env = {
        "SESSION_MW_STORE_URL": "redis://127.0.0.1:1/0",
        "SESSION_MW_IDLE_TIMEOUT": "600",
        "SESSION_MW_ABSOLUTE_TIMEOUT": "7200",
        "SESSION_MW_COOKIE_SECURE": "false",
        "SESSION_MW_LOCKING": "true",
        "SESSION_MW_EXCLUDE_PATHS": "/static, /favicon.ico",
        "UNRELATED": "x",
    }
    c = SessionConfig.from_env(environ=env)
    assert (c.store_url, c.idle_timeout, c.absolute_timeout) == ("redis://127.0.0.1:1/0", 600, 7200)
    assert c.cookie_secure is False and c.locking is True
    assert c.exclude_paths == ("/static", "/favicon.ico")


def test_from_mapping_accepts_typed_values_and_pydantic_style_names() -> None:
    c = SessionConfig.from_mapping({"session_mw_idle_timeout": timedelta(minutes=5), "SESSION_MW_COOKIE_SECURE": False})
    assert c.idle_timeout == 300 and c.cookie_secure is False


def test_from_mapping_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig.from_mapping({"SESSION_MW_LOCKING": "yes"}, locking="perhaps")
    assert str(caught.value) == "locking must be true or false (or 1/0, yes/no, on/off); got 'perhaps'"
    assert SessionConfig.from_mapping({"SESSION_MW_IDLE_TIMEOUT": None}) == SessionConfig()  # None: unset


def test_unknown_and_malformed_settings_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="SESSION_MW_IDLE_TIMOUT"):
        SessionConfig.from_mapping({"SESSION_MW_IDLE_TIMOUT": "5"})
    assert SessionConfig.from_env(environ={"SESSION_MW_IDLE_TIMOUT": "5"}) == SessionConfig()
    assert "SESSION_MW_IDLE_TIMOUT" in caplog.text  # the environment is shared: a warning, not an error
    with pytest.raises(ConfigError, match="SESSION_MW_IDLE_TIMEOUT"):
        SessionConfig.from_env(environ={"SESSION_MW_IDLE_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="SESSION_MW_COOKIE_SECURE"):
        SessionConfig.from_env(environ={"SESSION_MW_COOKIE_SECURE": "maybe"})


def test_repr_hides_secrets() -> None:
    c = SessionConfig(store_url="redis://:hunter2@cache:6379/0?password=hunter3", digest_key=SECRET)
    assert "hunter2" not in repr(c) and "hunter3" not in repr(c) and SECRET not in repr(c)
    assert "cache:6379" in repr(c)
    assert SECRET not in str(c)
