from __future__ import annotations

from datetime import timedelta

import pytest

from session_mw import ConfigError, SessionConfig


def test_defaults_are_the_safe_ones() -> None:
    c = SessionConfig()
    assert c.cookie_secure and c.cookie_samesite == "lax" and c.host_prefix
    assert c.full_cookie_name == "__Host-session"
    assert c.touch_interval == c.idle_timeout // 10
    assert c.token_bytes == 32


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


def test_host_prefix_only_when_the_browser_allows_it() -> None:
    assert SessionConfig(cookie_secure=False).full_cookie_name == "session"
    assert SessionConfig(cookie_domain="example.com").full_cookie_name == "session"
    assert SessionConfig(cookie_path="/app").full_cookie_name == "session"
    assert SessionConfig(host_prefix=False).full_cookie_name == "session"


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
    c = SessionConfig(store_url="redis://:hunter2@cache:6379/0", digest_key="k3y")
    assert "hunter2" not in repr(c) and "k3y" not in repr(c)
    assert "cache:6379" in repr(c)
