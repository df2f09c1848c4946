"""Read the session token from a Cookie header and build the Set-Cookie that carries it.

Parsing and formatting are werkzeug's; this module only adds the session rules: a cookie
that is malformed, oversized, duplicated or not shaped like our tokens is "no session".
"""

from __future__ import annotations

from werkzeug.http import dump_cookie
from werkzeug.sansio.http import parse_cookie

from .config import SessionConfig
from .tokens import is_well_formed, token_length

MAX_COOKIE_HEADER = 8192
MAX_COOKIE_VALUE = 4096


class CookieRules:
    """The cookie half of a ``SessionConfig``, precomputed once per middleware."""

    __slots__ = ("_needle", "_token_length", "config", "name")

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.name = config.full_cookie_name
        self._needle = self.name + "="
        self._token_length = token_length(config.token_bytes)

    def read(self, header: str | None) -> tuple[str | None, bool]:
        """Return ``(token, presented)``.

        ``token`` is a well-formed token or None; ``presented`` says whether the browser sent
        a cookie under our name at all (so a bad one can be cleared).
        """
        if not header or self._needle not in header:
            return None, False
        if len(header) > MAX_COOKIE_HEADER:
            return None, True
        values = parse_cookie(header).getlist(self.name)
        if len(values) != 1:  # unparsable (none found despite the name) or duplicated
            return None, True
        value = values[0]
        if len(value) > MAX_COOKIE_VALUE or not is_well_formed(value, self._token_length):
            return None, True
        return value, True

    def set_cookie(self, token: str, max_age: int | None) -> str:
        """The Set-Cookie value that hands ``token`` to the browser."""
        c = self.config
        return dump_cookie(
            self.name,
            token,
            max_age=max_age,
            path=c.cookie_path,
            domain=c.cookie_domain,
            secure=c.cookie_secure,
            httponly=True,
            samesite=c.cookie_samesite.capitalize(),
        )

    def expire_cookie(self) -> str:
        """The Set-Cookie value that removes our cookie, with the same name and attributes."""
        c = self.config
        return dump_cookie(
            self.name,
            "",
            max_age=0,
            expires=0,
            path=c.cookie_path,
            domain=c.cookie_domain,
            secure=c.cookie_secure,
            httponly=True,
            samesite=c.cookie_samesite.capitalize(),
        )
