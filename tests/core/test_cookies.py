from __future__ import annotations

import re

import pytest

from session_mw.config import SessionConfig
from session_mw.cookies import CookieRules
from session_mw.tokens import Digester, new_token, token_length

RULES = CookieRules(SessionConfig())
TOKEN = new_token(32)


def test_tokens_have_the_promised_entropy_and_shape() -> None:
    tokens = {new_token(32) for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) == token_length(32) == 43 and re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in tokens)


def test_store_key_is_a_digest_never_the_token() -> None:
    key = Digester()(TOKEN)
    assert TOKEN not in key and len(key) == 64
    assert Digester("secret")(TOKEN) != key
    assert "secret" not in repr(Digester("secret"))


def test_reads_our_cookie_among_others() -> None:
    assert RULES.read(f"theme=dark; __Host-session={TOKEN}; x=1") == (TOKEN, True)
    assert RULES.read(None) == (None, False)
    assert RULES.read("theme=dark") == (None, False)


@pytest.mark.parametrize(
    "header",
    [
        f"__Host-session={TOKEN}; __Host-session={new_token(32)}",  # duplicated
        f"__Host-session={TOKEN[:-1]}",  # wrong length
        f"__Host-session={TOKEN[:-1]}!",  # not URL-safe
        "__Host-session=" + "A" * 5000,  # oversized
        "__Host-session=" + "é" * 43,  # not ASCII
        '__Host-session="unterminated',
        "__Host-session=; ;;; ===",
        "x=" + "y" * 9000 + f"; __Host-session={TOKEN}",  # oversized header
    ],
)
def test_bad_cookies_mean_no_session_never_an_error(header: str) -> None:
    token, presented = RULES.read(header)
    assert token is None and presented is True


def test_set_cookie_carries_every_protection() -> None:
    header = RULES.set_cookie(TOKEN, None)
    assert header.startswith(f"__Host-session={TOKEN};")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in header
    assert "Max-Age" not in header and "Domain" not in header
    assert "Max-Age=3600" in RULES.set_cookie(TOKEN, 3600)


def test_expire_cookie_matches_name_and_attributes() -> None:
    header = RULES.expire_cookie()
    assert header.startswith("__Host-session=;")
    assert "Max-Age=0" in header and "Expires=Thu, 01 Jan 1970" in header
    assert "Secure" in header and "Path=/" in header


def test_custom_cookie_settings() -> None:
    rules = CookieRules(SessionConfig(cookie_name="sid", cookie_domain="example.com", cookie_samesite="strict"))
    header = rules.set_cookie(TOKEN, None)
    assert header.startswith("sid=") and "Domain=example.com" in header and "SameSite=Strict" in header
