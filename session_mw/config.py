"""SessionConfig: every setting, its safe default and its validation, in one place.

The same names work everywhere: keyword arguments (``idle_timeout=600``), environment
variables and mapping keys (``SESSION_MW_IDLE_TIMEOUT``), Flask ``app.config`` and
pydantic settings objects (``session_mw_idle_timeout``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ConfigError

ENV_PREFIX = "SESSION_MW_"
SameSite = Literal["lax", "strict", "none"]
#: The embedded default: a SQLite file under the working directory, shared by every worker
#: started there (and by no other app, unlike a per-user location would be).
DEFAULT_STORE_URL = "sqlite:///.session_mw/sessions.db"

_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_STORE_SCHEMES = ("memory://", "redis://", "rediss://", "unix://", "sqlite://")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Every setting of session_mw. Invalid values raise ``ConfigError`` at construction."""

    store_url: str = DEFAULT_STORE_URL
    cookie_name: str = "session"
    cookie_secure: bool = True
    cookie_samesite: SameSite = "lax"
    cookie_domain: str | None = None
    cookie_path: str = "/"
    host_prefix: bool = True
    idle_timeout: int = 1800
    absolute_timeout: int = 28800
    touch_interval: int | None = None
    token_bytes: int = 32
    key_prefix: str = "session_mw:"
    digest_key: str | None = field(default=None, repr=False)
    exclude_paths: tuple[str, ...] = ()
    store_connect_timeout: float = 2.0
    store_socket_timeout: float = 2.0
    retry_after: int = 5
    locking: bool = False
    lock_timeout: float = 10.0
    max_session_bytes: int = 262144

    def __post_init__(self) -> None:
        if not self.store_url.startswith(_STORE_SCHEMES):
            raise ConfigError(
                f"store_url must start with one of {', '.join(_STORE_SCHEMES)}; "
                f"got a URL with scheme {self.store_url.split(':', 1)[0]!r}"
            )
        if not _COOKIE_NAME.match(self.cookie_name) or self.cookie_name.lower().startswith(("__host-", "__secure-")):
            raise ConfigError(
                "cookie_name must be a plain cookie token without a __Host-/__Secure- prefix "
                "(the prefix is added by host_prefix)"
            )
        samesite = str(self.cookie_samesite).lower()
        if samesite not in get_args(SameSite):
            raise ConfigError("cookie_samesite must be 'lax', 'strict' or 'none'")
        object.__setattr__(self, "cookie_samesite", samesite)
        if samesite == "none" and not self.cookie_secure:
            raise ConfigError("cookie_samesite='none' requires cookie_secure=True (browsers reject it)")
        if not self.cookie_path.startswith("/"):
            raise ConfigError("cookie_path must start with '/'")
        if self.idle_timeout <= 0:
            raise ConfigError("idle_timeout must be a positive number of seconds")
        if self.absolute_timeout < self.idle_timeout:
            raise ConfigError("absolute_timeout must be at least idle_timeout")
        if self.touch_interval is None:
            object.__setattr__(self, "touch_interval", max(1, self.idle_timeout // 10))
        elif not 0 <= self.touch_interval < self.idle_timeout:
            raise ConfigError("touch_interval must be >= 0 and smaller than idle_timeout")
        if self.token_bytes < 16:
            raise ConfigError("token_bytes must be at least 16 (128 bits of entropy)")
        if self.token_bytes > 256:
            raise ConfigError("token_bytes must be at most 256 (the cookie must stay small)")
        if not self.key_prefix:
            raise ConfigError("key_prefix must not be empty")
        for name in ("store_connect_timeout", "store_socket_timeout", "lock_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.max_session_bytes < 1024:
            raise ConfigError(f"max_session_bytes must be at least 1024; got {self.max_session_bytes!r}")
        if any(not p.startswith("/") for p in self.exclude_paths):
            raise ConfigError("every entry of exclude_paths must start with '/'")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={_redact(f.name, getattr(self, f.name))!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"SessionConfig({shown})"

    @property
    def effective_touch_interval(self) -> int:
        assert self.touch_interval is not None  # filled in by __post_init__
        return self.touch_interval

    @property
    def uses_host_prefix(self) -> bool:
        """``__Host-`` is allowed only for Secure, Path=/, host-only cookies."""
        return self.host_prefix and self.cookie_secure and self.cookie_path == "/" and not self.cookie_domain

    @property
    def full_cookie_name(self) -> str:
        return f"__Host-{self.cookie_name}" if self.uses_host_prefix else self.cookie_name

    def replace(self, **changes: Any) -> SessionConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], prefix: str = ENV_PREFIX, *, strict: bool = True, **overrides: Any
    ) -> SessionConfig:
        """Build from ``PREFIX_NAME`` keys (case-insensitive).

        Values may be typed (``True``, ``600``) or strings as in the environment (``"true"``,
        ``"600"``). An unknown ``PREFIX_`` key is a typo: a ``ConfigError`` when ``strict``, else
        a warning on the ``session_mw`` logger.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        lowered_prefix = prefix.lower()
        for key, raw in mapping.items():
            if not isinstance(key, str) or not key.lower().startswith(lowered_prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in fields:
                message = f"unknown setting {key!r}; known settings: {', '.join(sorted(fields))}"
                if strict:
                    raise ConfigError(message)
                logging.getLogger("session_mw").warning("%s (ignored)", message)
                continue
            if raw is None:
                continue
            values[name] = _coerce(key, fields[name].type, raw)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_env(
        cls, prefix: str = ENV_PREFIX, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SessionConfig:
        """Build from ``SESSION_MW_*`` environment variables; unset ones keep their defaults.

        The environment is shared with other tools, so an unknown ``SESSION_MW_*`` variable is
        logged as a warning, not refused; a malformed value of a known one is still an error.
        """
        return cls.from_mapping(os.environ if environ is None else environ, prefix, strict=False, **overrides)


def _redact(name: str, value: Any) -> Any:
    """Hide the password of a store URL (``redis://:secret@host``) in reprs and logs."""
    if name == "store_url" and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return value


def _coerce(key: str, annotation: Any, raw: Any) -> Any:
    kind = str(annotation)
    if isinstance(raw, str):
        raw = raw.strip()
    try:
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            if isinstance(raw, bool):
                raise ValueError(raw)
            if hasattr(raw, "total_seconds"):  # a timedelta, as Flask settings often hold
                return int(raw.total_seconds())
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind.startswith("str | None") and raw == "":
            return None
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key!r} has an invalid value for type {kind}") from None
