from __future__ import annotations

import re
import time

import pytest

from session_mw.config import SessionConfig
from session_mw.cookies import MAX_CANDIDATES, MAX_COOKIE_HEADER, CookieRules
from session_mw.tokens import Digester, new_token, token_length

RULES = CookieRules(SessionConfig())
TOKEN = new_token(32)
OTHER = new_token(32)


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
    assert RULES.read(f"theme=dark; __Host-id={TOKEN}; x=1") == ((TOKEN,), False)
    assert RULES.read(None) == ((), False)
    assert RULES.read("") == ((), False)
    assert RULES.read("theme=dark") == ((), False)


@pytest.mark.parametrize("comma", [",", ", "])
@pytest.mark.parametrize(
    "lines",
    [
        [f"__Host-id={TOKEN}; a=1", "theme=dark; b=2"],  # ours first
        ["theme=dark; a=1", f"__Host-id={TOKEN}; b=2"],  # ours opens a later line
        ["theme=dark", f"lang=en; __Host-id={TOKEN}; b=2", "c=3"],  # middle
        ["theme=dark; a=1", "b=2", f"__Host-id={TOKEN}"],  # last
        ["theme=dark; a=1", f"b=2; __Host-id={TOKEN}"],  # last pair of the last line
        ['pref="x,y"; a=1', f"__Host-id={TOKEN}"],  # a quoted comma is no line break
        ['pref="x', f"__Host-id={TOKEN}"],  # nor is a quote that never closes
        [f'__Host-id={TOKEN}; pref="x;y"', 'other="a,b"'],
    ],
)
def test_cookie_lines_joined_with_commas_are_read_as_lines(comma: str, lines: list[str]) -> None:
    """Gunicorn joins repeated Cookie lines with ','; werkzeug alone would read ours as part of a value."""
    assert RULES.read(comma.join(lines)) == ((TOKEN,), False)


def test_other_cookies_never_cost_the_session() -> None:
    others = "; ".join(f"site{i}={'v' * 200}" for i in range(100))  # about 20 KiB
    assert len(others) > 20_000
    assert RULES.read(f"{others}; __Host-id={TOKEN}") == ((TOKEN,), False)
    assert RULES.read(f"__Host-id={TOKEN}; {others}") == ((TOKEN,), False)
    assert RULES.read(f"{others},__Host-id={TOKEN},{others}") == ((TOKEN,), False)
    assert RULES.read(others) == ((), False)


def test_only_our_value_is_size_limited() -> None:
    assert RULES.read(f"big={'v' * 8192}; __Host-id={TOKEN}") == ((TOKEN,), False)
    assert RULES.read(f"a=1; __Host-id={'A' * 8192}") == ((), True)
    assert RULES.read(f"a=1,__Host-id={'A' * 8192}") == ((), True)


@pytest.mark.parametrize(
    "header",
    [
        "theme=dark; lang=en",
        "x=1,y=2, z=3",
        "session=abc; __Host-idid=1",  # similar names are not ours
        "z=" + "y" * (MAX_COOKIE_HEADER * 2),  # even a huge header: not parsed at all
    ],
)
def test_headers_without_our_name_mean_no_cookie(header: str) -> None:
    assert RULES.read(header) == ((), False)


@pytest.mark.parametrize("unit", ['=",', '="\\"', 'a="', '=""",', "a=b, ", '"\\",='])
def test_hostile_headers_stay_cheap(unit: str) -> None:
    """The work is bounded and linear: a full-size header of quote and comma tricks reads quickly."""
    header = (unit * MAX_COOKIE_HEADER)[: MAX_COOKIE_HEADER - 60] + f",__Host-id={TOKEN}"
    started = time.perf_counter()
    RULES.read(header)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "header",
    [
        f"__Host-id={TOKEN[:-1]}",  # wrong length
        f"__Host-id={TOKEN[:-1]}!",  # not URL-safe
        "__Host-id=" + "A" * 5000,  # oversized
        "__Host-id=" + "é" * 43,  # not ASCII
        '__Host-id="unterminated',
        "__Host-id=; ;;; ===",
        "x=" + "y" * MAX_COOKIE_HEADER + f"; __Host-id={TOKEN}",  # beyond the work bound
        f'x="a,__Host-id={TOKEN}"',  # inside another cookie's quoted value: not ours
        f'x="a,__Host-id={TOKEN},b"',
        f"x=1,__Host-id={TOKEN[:-1]}",
        "; ".join(f"__Host-id={new_token(32)}" for _ in range(MAX_CANDIDATES + 1)),  # no browser does this
    ],
)
def test_bad_cookies_mean_no_session_never_an_error(header: str) -> None:
    assert RULES.read(header)[0] == ()


@pytest.mark.parametrize(
    ("header", "tokens", "ignored"),
    [
        (f"__Host-id={TOKEN}; __Host-id={OTHER}", (TOKEN, OTHER), False),
        (f"__Host-id={OTHER}; __Host-id={TOKEN}", (OTHER, TOKEN), False),  # the browser's order
        (f"__Host-id={TOKEN},__Host-id={OTHER}", (TOKEN, OTHER), False),  # across joined lines
        (f"a=1; __Host-id={TOKEN}, b=2; __Host-id={OTHER}", (TOKEN, OTHER), False),
        (f"a=1,__Host-id={TOKEN}; b=2,__Host-id={TOKEN}", (TOKEN,), False),  # twice the same: once
        (f"__Host-id=eyJhIjoxfQ.Zx1.sig; __Host-id={TOKEN}", (TOKEN,), True),  # a signed cookie: not ours
        (f"__Host-id={TOKEN}; __Host-id=", (TOKEN,), True),
    ],
)
def test_several_values_under_our_name_yield_the_token_shaped_ones(
    header: str, tokens: tuple[str, ...], ignored: bool
) -> None:
    """Cookies of our name for another path or domain; the engine finds the live one among them."""
    assert RULES.read(header) == (tokens, ignored)


def test_set_cookie_carries_every_protection() -> None:
    header = RULES.set_cookie(TOKEN, None)
    assert header.startswith(f"__Host-id={TOKEN};")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in header
    assert "Max-Age" not in header and "Domain" not in header
    assert "Max-Age=3600" in RULES.set_cookie(TOKEN, 3600)


def test_expire_cookie_matches_name_and_attributes() -> None:
    header = RULES.expire_cookie()
    assert header.startswith("__Host-id=;")
    assert "Max-Age=0" in header and "Expires=Thu, 01 Jan 1970" in header
    assert "Secure" in header and "Path=/" in header


def test_custom_cookie_settings() -> None:
    rules = CookieRules(SessionConfig(cookie_name="sid", cookie_domain="example.com", cookie_samesite="strict"))
    header = rules.set_cookie(TOKEN, None)
    assert header.startswith("__Secure-sid=") and "Domain=example.com" in header and "SameSite=Strict" in header


def test_a_partitioned_cookie_carries_the_attribute_and_needs_secure() -> None:
    import pytest as _pytest

    from session_mw import ConfigError

    rules = CookieRules(SessionConfig(cookie_partitioned=True, cookie_samesite="none"))
    assert "Partitioned" in rules.set_cookie(TOKEN, None) and "Partitioned" in rules.expire_cookie()
    assert "Partitioned" not in RULES.set_cookie(TOKEN, None)
    with _pytest.raises(ConfigError, match="cookie_partitioned"):
        SessionConfig(cookie_partitioned=True, cookie_secure=False)
    assert SessionConfig.from_env(environ={"SESSION_MW_COOKIE_PARTITIONED": "true"}).cookie_partitioned is True


def test_flasks_partitioned_setting_maps_to_ours() -> None:
    from session_mw.contrib.flask import config_from_flask

    assert config_from_flask({"SESSION_COOKIE_PARTITIONED": True}, environ={}).cookie_partitioned is True
    assert config_from_flask({}, environ={}).cookie_partitioned is False


@pytest.mark.parametrize(
    ("cookie_path", "request_path", "expected"),
    [
        ("/", "/anything", True),
        ("/shop", "/shop", True),
        ("/shop", "/shop/cart", True),
        ("/shop", "/shopping", False),  # RFC 6265 5.1.4: a prefix only at a '/'
        ("/shop", "/", False),
        ("/shop/", "/shop/cart", True),
        ("/shop/", "/shop", False),
    ],
)
def test_the_cookie_path_matches_as_browsers_match_it(cookie_path: str, request_path: str, expected: bool) -> None:
    assert CookieRules(SessionConfig(cookie_path=cookie_path)).in_scope(request_path) is expected
