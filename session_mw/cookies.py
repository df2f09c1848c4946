"""Read the session token from a Cookie header and build the Set-Cookie that carries it.

Parsing and formatting are werkzeug's; this module only adds the session rules: a cookie
that is malformed, oversized, duplicated or not shaped like our tokens is "no session",
and Cookie lines a server joined with commas are read as the separate lines they were.
"""

from __future__ import annotations

import re

from werkzeug.http import dump_cookie
from werkzeug.sansio.http import parse_cookie

from .config import SessionConfig
from .tokens import is_well_formed, token_length

#: Bounds the parsing work only: a longer Cookie header that holds our name is "presented,
#: no token". Generous, because other apps on the same host or parent domain may send big
#: cookies; most servers refuse such headers well before this (gunicorn: 8190 bytes a line).
MAX_COOKIE_HEADER = 65536
#: At most this many tokens under our name are looked up (one store read each); more is
#: nothing a browser builds by itself, and none of them is used.
MAX_CANDIDATES = 4

#: One Cookie line of a comma-joined header (gunicorn joins repeated lines with ","): any
#: text up to a comma, where a comma inside a quoted value (``="..."`` closed before ``;``,
#: ``,`` or the end, as werkzeug reads quotes) belongs to that value; a quote that never
#: closes is just a character. Linear time: a quoted value's scan ends at the next unescaped
#: quote, and no later attempt starts inside a scanned stretch.
_LINE = re.compile(r"""(?:[^,="]+|=[ \t]*"(?:[^"\\]|\\.)*"(?=[ \t]*(?:[;,]|\Z))|[="])*""")


class CookieRules:
    """The cookie half of a ``SessionConfig``, precomputed once per middleware."""

    __slots__ = ("_needle", "_scope", "_token_length", "config", "name")

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.name = config.full_cookie_name
        self._needle = self.name + "="
        self._token_length = token_length(config.token_bytes)
        path = config.cookie_path
        #: None when every request path is in scope (Path=/, the default)
        self._scope = None if path == "/" else (path, path if path.endswith("/") else path + "/")

    @property
    def scoped(self) -> bool:
        """A cookie path other than ``/``: doors pass the request's path, for ``in_scope``."""
        return self._scope is not None

    def in_scope(self, request_path: str) -> bool:
        """RFC 6265's path-match: would a browser send our cookie to ``request_path``? A cookie of
        our name sent anywhere else was set for another path: not ours to expire."""
        if self._scope is None:
            return True
        path, directory = self._scope
        return request_path == path or request_path.startswith(directory)

    def read(self, header: str | None) -> tuple[tuple[str, ...], bool]:
        """Return ``(tokens, ignored)``: the values under our name shaped like our tokens, in the
        browser's order, and whether a value under our name was left out.

        Browsers list cookies with longer paths first, so a second token is a cookie of the same
        name set for another path or domain (an app mounted elsewhere on the host, a cookie from
        before a change of ``cookie_path``); the engine picks ours among them. A value not shaped
        like our tokens was never set by us: it is ignored, and never expired. Only our own value
        is size-limited: other cookies, however many, never cost us the session.
        """
        if not header or self._needle not in header:  # the hot path: no session cookie
            return (), False
        if len(header) > MAX_COOKIE_HEADER:
            return (), True
        needle, name, length = self._needle, self.name, self._token_length
        values = [v for line in _lines(header) if needle in line for v in parse_cookie(line).getlist(name)]
        if len(values) == 1:  # the common case
            value = values[0]
            if is_well_formed(value, length):  # which bounds its size: our tokens have one length
                return (value,), False
            return (), True
        shaped = [v for v in values if is_well_formed(v, length)]
        tokens = tuple(dict.fromkeys(shaped))  # in the browser's order, once each
        if len(tokens) > MAX_CANDIDATES:
            return (), True
        return tokens, len(shaped) != len(values)

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
            partitioned=c.cookie_partitioned,
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
            partitioned=c.cookie_partitioned,
        )


def _lines(header: str) -> list[str]:
    """The Cookie lines of ``header``; one line unless a server joined several with commas."""
    if "," not in header:
        return [header]
    if '"' not in header:  # no quoted values: every comma ends a line
        return header.split(",")
    lines: list[str] = []
    pos, end = 0, len(header)
    while pos <= end:
        match = _LINE.match(header, pos)
        assert match is not None  # the pattern matches the empty string
        lines.append(match.group())
        pos = match.end() + 1  # past the comma (or past the end: done)
    return lines
