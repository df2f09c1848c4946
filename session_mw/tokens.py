"""Session tokens: minted from ``secrets``, checked for shape, and never used as store keys.

The store key is a SHA-256 digest of the token (HMAC-SHA256 when a ``digest_key`` is set),
so a leaked store dump or a timing side channel on key lookups gives no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

_URLSAFE = re.compile(rb"[A-Za-z0-9_-]+")


def new_token(nbytes: int) -> str:
    return secrets.token_urlsafe(nbytes)


def token_length(nbytes: int) -> int:
    """Length of ``secrets.token_urlsafe(nbytes)``: base64 without padding."""
    return (nbytes * 4 + 2) // 3


def is_well_formed(value: str, length: int) -> bool:
    """True for a value that could be a token we minted; says nothing about whether we did."""
    return len(value) == length and value.isascii() and _URLSAFE.fullmatch(value.encode()) is not None


class Digester:
    """Turns a token into its store key, with an optional secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: str | None = None) -> None:
        self._key = key.encode() if key else None

    def __repr__(self) -> str:
        return f"Digester(keyed={self._key is not None})"

    def __call__(self, token: str) -> str:
        if self._key is None:
            return hashlib.sha256(token.encode()).hexdigest()
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison for secrets and digests."""
    return hmac.compare_digest(a.encode(), b.encode())
