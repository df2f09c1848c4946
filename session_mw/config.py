"""SessionConfig: every setting, its safe default and its validation, in one place.

The same names work everywhere: keyword arguments (``idle_timeout=600``), environment
variables and mapping keys (``SESSION_MW_IDLE_TIMEOUT``), Flask ``app.config`` and
pydantic settings objects (``session_mw_idle_timeout``). All of them go through one
coercion and validation (``__post_init__``), so ``locking="no"`` means the same in code as
in the environment.
"""

from __future__ import annotations

import dataclasses
import decimal
import logging
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, get_args

from .errors import ConfigError

ENV_PREFIX = "SESSION_MW_"
SameSite = Literal["lax", "strict", "none"]
LimitAction = Literal["revoke_oldest", "refuse"]
#: The embedded default: a SQLite file under the working directory, shared by every worker
#: started there (and by no other app, unlike a per-user location would be).
DEFAULT_STORE_URL = "sqlite:///.session_mw/sessions.db"

_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*")
#: A slash, then visible ASCII except ``,`` and ``;`` (they end a cookie attribute or line).
_COOKIE_PATH = re.compile(r"/[\x21-\x2b\x2d-\x3a\x3c-\x7e]*")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_STORE_SCHEMES = (
    "memory://",
    "redis://",
    "rediss://",
    "unix://",
    "redis+sentinel://",
    "rediss+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
    "sqlite://",
)
_URL_QUERY_PASSWORD = re.compile(r"(?i)([?&;]password=)[^&;#]*")
_SHOWN_MAX = 120


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Every setting of session_mw. Invalid values raise ``ConfigError`` at construction.

    Values may be typed or strings as in the environment; they are coerced here, whichever
    way they arrive, and stored with the annotated types.
    """

    store_url: str = DEFAULT_STORE_URL
    cookie_name: str = "id"
    cookie_secure: bool = True
    cookie_samesite: SameSite = "lax"
    cookie_partitioned: bool = False
    remember_default: bool = False
    cookie_domain: str | None = None
    cookie_path: str = "/"
    host_prefix: bool = True
    idle_timeout: float = 1800.0
    absolute_timeout: float = 28800.0
    touch_interval: float | None = None
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
    replica_acks: int = 0
    no_store_authenticated: bool = True
    clear_site_data_on_logout: bool = False
    replica_ack_timeout: float = 0.5
    #: Redis: keep copies of hot sessions in each worker, kept true by RESP3 tracking (Redis 6+).
    client_cache: bool = False
    #: Redis with ``client_cache``: at most this many copies per worker.
    client_cache_size: int = 10_000
    #: Previous ``digest_key`` values: tokens are still found under them, and a session moves
    #: to the current key on its next write.
    previous_digest_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Secrets for encryption at rest (AES-GCM); the first encrypts, every one decrypts.
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Re-authentication (``session.reauthenticated()``) starts a new absolute lifetime.
    reauth_resets_lifetime: bool = True
    #: Rotate the token after this many seconds of use, data kept; None: only on login/regenerate.
    renew_interval: float | None = None
    #: Seconds a just-rotated token still reads its session (read-only) for requests in flight.
    rotation_grace: float = 0.0
    #: Bind a session to its User-Agent (a digest); a mismatch ends it.
    bind_user_agent: bool = False
    #: Bind a session to its client address prefix (``bind_ipv4_prefix``/``bind_ipv6_prefix`` bits).
    bind_client_ip: bool = False
    bind_ipv4_prefix: int = 24
    bind_ipv6_prefix: int = 64
    #: A header that carries the client address (``X-Forwarded-For``), set by a proxy you trust;
    #: None: the socket's peer address. ``trusted_proxies`` hops are counted from the right.
    client_ip_header: str | None = None
    trusted_proxies: int = 1
    #: At most this many live sessions per user (0: no limit); what the next login does.
    max_sessions_per_user: int = 0
    session_limit_action: LimitAction = "revoke_oldest"
    #: Unknown tokens from one client address within ``guess_window`` seconds that raise a
    #: ``token_guessing`` security event.
    guess_threshold: int = 20
    guess_window: float = 60.0
    #: Check a synchronizer token on unsafe methods of cookie-authenticated requests.
    csrf_protect: bool = False
    csrf_header: str = "X-CSRF-Token"
    csrf_field: str = "csrf_token"
    #: A request that sends neither ``Origin`` nor ``Sec-Fetch-Site`` (no browser of today sends
    #: neither on a cross-site POST: curl, a mobile app, a test client) needs no CSRF token.
    csrf_trust_plain_clients: bool = False
    #: Also accept the token from this request header (``Authorization`` takes ``Session <token>``);
    #: a new token goes back in ``token_response_header``. None: cookies only.
    token_header: str | None = None
    token_response_header: str = "Session-Token"  # noqa: S105 - a header name, not a secret
    #: Read and set the session cookie (off: the header transport only, for APIs).
    cookie_transport: bool = True
    #: ASGI: load the session only when the app awaits ``load_session(request)`` (a handler that
    #: never does costs no store round trip); ``request.session`` before that raises
    #: ``SessionNotLoaded``. The WSGI door always loads on first use.
    lazy_load: bool = False

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in _COERCERS}
        for name, coerce in _COERCERS.items():
            object.__setattr__(self, name, coerce(name, given[name]))
        self._check(given)

    def _check(self, given: Mapping[str, Any]) -> None:
        """The rules between values; messages show the value as it was given."""

        def fail(name: str, problem: str) -> ConfigError:
            return _invalid(name, given[name], problem)

        if not self.store_url.startswith(_STORE_SCHEMES):
            raise fail("store_url", f"must start with one of {', '.join(_STORE_SCHEMES)}")
        if not _COOKIE_NAME.fullmatch(self.cookie_name):
            raise fail("cookie_name", "must be a cookie token (letters, digits and !#$%&'*+.^_`|~-)")
        if self.cookie_name.lower().startswith(("__host-", "__secure-")):
            raise fail("cookie_name", "must not carry a __Host-/__Secure- prefix (host_prefix adds it)")
        if self.cookie_samesite not in get_args(SameSite):
            raise fail("cookie_samesite", "must be 'lax', 'strict' or 'none'")
        if self.cookie_samesite == "none" and not self.cookie_secure:
            raise fail("cookie_samesite", "'none' requires cookie_secure=True (browsers reject it otherwise)")
        if self.cookie_partitioned and not self.cookie_secure:
            raise fail("cookie_partitioned", "requires cookie_secure=True (browsers reject it otherwise)")
        if self.cookie_domain is not None and not (
            len(self.cookie_domain) <= 253 and _DOMAIN.fullmatch(self.cookie_domain)
        ):
            raise fail("cookie_domain", "must be a host or domain name (letters, digits, '-' and '.'; no port)")
        if not _COOKIE_PATH.fullmatch(self.cookie_path):
            raise fail("cookie_path", "must start with '/' and hold only visible ASCII without ';' or ','")
        if self.idle_timeout <= 0:
            raise fail("idle_timeout", "must be a positive number of seconds")
        if self.absolute_timeout < self.idle_timeout:
            raise fail("absolute_timeout", f"must be at least idle_timeout ({self.idle_timeout!r})")
        self._check_touch_interval(fail)
        if not 16 <= self.token_bytes <= 256:
            raise fail("token_bytes", "must be between 16 (128 bits of entropy) and 256 (the cookie must stay small)")
        if not self.key_prefix or any(ch.isspace() or not ch.isprintable() for ch in self.key_prefix):
            raise fail("key_prefix", "must be non-empty, without whitespace or control characters")
        if any(not p.startswith("/") for p in self.exclude_paths):
            raise fail("exclude_paths", "entries must each start with '/'")
        for name in ("store_connect_timeout", "store_socket_timeout", "lock_timeout"):
            if getattr(self, name) <= 0:
                raise fail(name, "must be a positive number of seconds")
        if self.retry_after < 0:
            raise fail("retry_after", "must be a number of seconds >= 0")
        if self.max_session_bytes < 1024:
            raise fail("max_session_bytes", "must be at least 1024 bytes")
        if not 0 <= self.replica_acks <= 64:
            raise fail("replica_acks", "must be between 0 (do not wait) and 64 replicas")
        if not 0 < self.replica_ack_timeout <= 60:
            raise fail("replica_ack_timeout", "must be more than 0 and at most 60 seconds")
        if self.client_cache and self.store_url.split("://", 1)[0].lower() not in _redis_schemes():
            raise fail("client_cache", "needs a Redis store_url (redis://, redis+sentinel://, redis+cluster://)")
        if not 1 <= self.client_cache_size <= 10_000_000:
            raise fail("client_cache_size", "must be between 1 and 10,000,000 sessions")
        self._check_security(fail)

    def _check_security(self, fail: Callable[[str, str], ConfigError]) -> None:
        for name in ("previous_digest_keys", "encryption_keys"):
            if any(len(secret) < 16 for secret in getattr(self, name)):
                raise fail(name, "entries must each be a secret of at least 16 characters")
        if self.previous_digest_keys and not self.digest_key:
            raise fail("previous_digest_keys", "needs digest_key (the current secret) to be set")
        if self.renew_interval is not None and self.renew_interval <= 0:
            raise fail("renew_interval", "must be a positive number of seconds (or unset)")
        if not 0 <= self.rotation_grace <= 60:
            raise fail("rotation_grace", "must be between 0 (off) and 60 seconds")
        if not 0 <= self.bind_ipv4_prefix <= 32:
            raise fail("bind_ipv4_prefix", "must be between 0 and 32 bits")
        if not 0 <= self.bind_ipv6_prefix <= 128:
            raise fail("bind_ipv6_prefix", "must be between 0 and 128 bits")
        if self.trusted_proxies < 1:
            raise fail("trusted_proxies", "must be at least 1 (the proxy that set client_ip_header)")
        if self.max_sessions_per_user < 0:
            raise fail("max_sessions_per_user", "must be 0 (no limit) or a positive number")
        if self.session_limit_action not in get_args(LimitAction):
            raise fail("session_limit_action", "must be 'revoke_oldest' or 'refuse'")
        if self.guess_threshold < 1:
            raise fail("guess_threshold", "must be at least 1")
        if self.guess_window <= 0:
            raise fail("guess_window", "must be a positive number of seconds")
        for name in ("csrf_header", "csrf_field", "token_response_header", "client_ip_header", "token_header"):
            value = getattr(self, name)
            if value is not None and not _COOKIE_NAME.fullmatch(value):
                raise fail(name, "must be a header or field name (letters, digits and !#$%&'*+.^_`|~-)")
        if not self.cookie_transport and self.token_header is None:
            raise fail("cookie_transport", "can be off only with token_header set (else no token arrives)")

    def _check_touch_interval(self, fail: Callable[[str, str], ConfigError]) -> None:
        """Throttled touches may lag by up to one interval; idle/10 keeps the 90 % promise."""
        limit = self.idle_timeout / 10
        if self.touch_interval is None:
            object.__setattr__(self, "touch_interval", limit)
        elif self.touch_interval < 0 or (
            self.touch_interval > limit and not math.isclose(self.touch_interval, limit, rel_tol=1e-9)
        ):
            raise fail(
                "touch_interval",
                f"must be between 0 and idle_timeout / 10 ({limit!r}): a larger interval breaks the "
                "guarantee that a user active more often than 90 % of idle_timeout is never logged out",
            )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={_redact(f.name, getattr(self, f.name))!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"SessionConfig({shown})"

    @property
    def effective_touch_interval(self) -> float:
        assert self.touch_interval is not None  # filled in by __post_init__
        return self.touch_interval

    @property
    def uses_host_prefix(self) -> bool:
        """``__Host-`` is allowed only for Secure, Path=/, host-only cookies."""
        return self.host_prefix and self.cookie_secure and self.cookie_path == "/" and not self.cookie_domain

    @property
    def cookie_prefix(self) -> str:
        """The strongest prefix the attributes allow: a prefixed cookie cannot be set over plain
        http, and a ``__Host-`` one not from a sibling host nor for another path either."""
        if not (self.host_prefix and self.cookie_secure):
            return ""
        return "__Host-" if self.uses_host_prefix else "__Secure-"

    @property
    def full_cookie_name(self) -> str:
        return self.cookie_prefix + self.cookie_name

    def replace(self, **changes: Any) -> SessionConfig:
        """A validated copy with ``changes``.

        A ``touch_interval`` equal to the derived default follows a new ``idle_timeout``
        instead of pinning the old one (which a shorter idle timeout would refuse).
        """
        if "touch_interval" not in changes and self.touch_interval == self.idle_timeout / 10:
            changes["touch_interval"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], prefix: str = ENV_PREFIX, *, strict: bool = True, **overrides: Any
    ) -> SessionConfig:
        """Build from ``PREFIX_NAME`` keys (case-insensitive).

        Values may be typed (``True``, ``600``) or strings as in the environment (``"true"``,
        ``"600"``). An unknown ``PREFIX_`` key is a typo: a ``ConfigError`` when ``strict``, else
        a warning on the ``session_mw`` logger. A bad value's message also names its key.
        """
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = {}
        keys: dict[str, str] = {}
        lowered_prefix = prefix.lower()
        for key, raw in mapping.items():
            if not isinstance(key, str) or not key.lower().startswith(lowered_prefix):
                continue
            name = key[len(prefix) :].lower()
            if name not in known:
                message = f"unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
                if strict:
                    raise ConfigError(message)
                logging.getLogger("session_mw").warning("%s (ignored)", message)
                continue
            if raw is None:
                continue
            values[name] = raw
            keys[name] = key
        values.update(overrides)
        try:
            return cls(**values)
        except _SettingError as error:
            source = keys.get(error.setting) if error.setting not in overrides else None
            if source is None:
                raise
            raise ConfigError(f"{error} (from {source})") from None

    @classmethod
    def from_env(
        cls, prefix: str = ENV_PREFIX, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SessionConfig:
        """Build from ``SESSION_MW_*`` environment variables; unset ones keep their defaults.

        The environment is shared with other tools, so an unknown ``SESSION_MW_*`` variable is
        logged as a warning, not refused; a malformed value of a known one is still an error.
        """
        return cls.from_mapping(os.environ if environ is None else environ, prefix, strict=False, **overrides)


class _SettingError(ConfigError):
    """A ``ConfigError`` that remembers its setting, so ``from_mapping`` can name the key."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting


def _invalid(name: str, value: object, problem: str) -> ConfigError:
    return _SettingError(f"{name} {problem}; got {_shown(name, value)}", name)


def _shown(name: str, value: object) -> str:
    """The value for an error message: one line, not too long, secrets masked."""
    if name in _SECRETS:
        return "<hidden>"
    text = repr(_redact(name, value)).replace("\n", "\\n")
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


_SECRETS = frozenset({"digest_key", "previous_digest_keys", "encryption_keys"})


def warn_weaker(source: str, setting: str, why: str) -> None:
    """One warning for a setting the app chose that is weaker than our defaults: it is honoured."""
    logging.getLogger("session_mw").warning("%s: %s is weaker than the default and honoured: %s", source, setting, why)


def _redact(name: str, value: Any) -> Any:
    """Hide the password of a store URL (``redis://:secret@host``, ``?password=``) in reprs and errors."""
    if name != "store_url" or not isinstance(value, str):
        return value
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + _URL_QUERY_PASSWORD.sub(r"\1***", rest)


# -- coercion: one function per kind of setting, each raising a ConfigError naming it --------


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(name, value, "must be a string")
    return value.strip()


def _optional_text(name: str, value: object) -> str | None:
    """``None`` or an empty string mean unset (``SESSION_MW_COOKIE_DOMAIN=`` in a compose file)."""
    if value is None:
        return None
    return _text(name, value) or None


def _domain(name: str, value: object) -> str | None:
    text = _optional_text(name, value)
    return None if text is None else text.lower()


def _samesite(name: str, value: object) -> str:
    return _text(name, value).lower()


def _flag(name: str, value: object) -> bool:
    """Only unmistakable spellings: an empty or odd value must not quietly switch Secure off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _invalid(name, value, "must be true or false (or 1/0, yes/no, on/off)")


def _number(name: str, value: object, what: str) -> float:
    """Any real number, a numeric string or a timedelta (its exact total_seconds); never a bool."""
    number: float | None = None
    try:
        if isinstance(value, timedelta):
            number = value.total_seconds()
        elif isinstance(value, str):
            number = float(value.strip())
        elif isinstance(value, (numbers.Real, decimal.Decimal)) and not isinstance(value, bool):
            number = float(value)
    except (ValueError, OverflowError):
        number = None
    if number is None or not math.isfinite(number):
        raise _invalid(name, value, f"must be a finite {what}")
    return number


def _seconds(name: str, value: object) -> float:
    return _number(name, value, "number of seconds")


def _optional_seconds(name: str, value: object) -> float | None:
    return None if value is None else _seconds(name, value)


def _whole(name: str, value: object, what: str) -> int:
    """An int setting: ``3``, ``3.0`` and ``"3"`` are fine, ``2.5`` is refused, never truncated."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = _number(name, value, what)
    if not number.is_integer():
        raise _invalid(name, value, f"must be a whole {what}")
    return int(number)


def _whole_seconds(name: str, value: object) -> int:
    return _whole(name, value, "number of seconds")


def _count(name: str, value: object) -> int:
    if isinstance(value, timedelta):
        raise _invalid(name, value, "must be a whole number")
    return _whole(name, value, "number")


def _paths(name: str, value: object) -> tuple[str, ...]:
    """A comma-separated string (as in the environment) or any iterable of strings."""
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray, Mapping)):
        items = list(value)
    else:
        raise _invalid(name, value, "must be a comma-separated string or a sequence of paths")
    if any(not isinstance(item, str) for item in items):
        raise _invalid(name, value, "entries must be strings")
    return tuple(text for item in items if (text := str(item).strip()))


def _redis_schemes() -> frozenset[str]:
    from .stores.redis_target import SCHEMES

    return frozenset(SCHEMES)


def _secrets(name: str, value: object) -> tuple[str, ...]:
    """Like ``_paths`` (comma-separated or a sequence), but a bad value's message never shows it."""
    try:
        return _paths(name, value)
    except _SettingError:
        raise _SettingError(f"{name} must be a comma-separated string or a sequence of strings", name) from None


def _lowered(name: str, value: object) -> str:
    return _text(name, value).lower()


_COERCERS: dict[str, Callable[[str, Any], Any]] = {
    "store_url": _text,
    "cookie_name": _text,
    "cookie_secure": _flag,
    "cookie_samesite": _samesite,
    "cookie_partitioned": _flag,
    "remember_default": _flag,
    "cookie_domain": _domain,
    "cookie_path": _text,
    "host_prefix": _flag,
    "idle_timeout": _seconds,
    "absolute_timeout": _seconds,
    "touch_interval": _optional_seconds,
    "token_bytes": _count,
    "key_prefix": _text,
    "digest_key": _optional_text,
    "exclude_paths": _paths,
    "store_connect_timeout": _seconds,
    "store_socket_timeout": _seconds,
    "retry_after": _whole_seconds,
    "locking": _flag,
    "lock_timeout": _seconds,
    "max_session_bytes": _count,
    "replica_acks": _count,
    "no_store_authenticated": _flag,
    "clear_site_data_on_logout": _flag,
    "replica_ack_timeout": _seconds,
    "client_cache": _flag,
    "client_cache_size": _count,
    "previous_digest_keys": _secrets,
    "encryption_keys": _secrets,
    "reauth_resets_lifetime": _flag,
    "renew_interval": _optional_seconds,
    "rotation_grace": _seconds,
    "bind_user_agent": _flag,
    "bind_client_ip": _flag,
    "bind_ipv4_prefix": _count,
    "bind_ipv6_prefix": _count,
    "client_ip_header": _optional_text,
    "trusted_proxies": _count,
    "max_sessions_per_user": _count,
    "session_limit_action": _lowered,
    "guess_threshold": _count,
    "guess_window": _seconds,
    "csrf_protect": _flag,
    "csrf_header": _text,
    "csrf_field": _text,
    "csrf_trust_plain_clients": _flag,
    "token_header": _optional_text,
    "token_response_header": _text,
    "cookie_transport": _flag,
    "lazy_load": _flag,
}

#: Every default, for code that compares a setting with it (the migration shims).
DEFAULTS = SessionConfig()
