"""The shop page's small helpers, and its warning when the browser would drop the cookie."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from examples import shop_common as shop
from session_mw import SessionConfig
from tests.examples.shop_suite import hide_session_mw_env


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            "Chrome on Linux",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 Version/18.0 Safari/604.1",
            "Safari on iPhone",
        ),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0", "Firefox on Windows"),
        ("python-httpx/0.28.1", "httpx"),
        ("", "unknown device"),
    ],
)
def test_device_labels(agent: str, label: str) -> None:
    assert shop.device_label(agent) == label


@pytest.mark.parametrize(
    ("base", "warned"),
    [
        ("http://localhost", False),
        ("http://127.0.0.1", False),
        ("https://shop.example", False),
        ("http://shop.example", True),
    ],
)
def test_a_secure_cookie_on_plain_http_is_explained(base: str, warned: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_session_mw_env(monkeypatch)
    from examples.fastapi_app import create_app as fastapi_app
    from examples.flask_app import create_app as flask_app

    config = SessionConfig(store_url="memory://")
    with TestClient(fastapi_app(config), base_url=base) as fast:
        assert ("will refuse this shop's session cookie" in fast.get("/").text) is warned
    with httpx.Client(transport=httpx.WSGITransport(app=flask_app(config)), base_url=base) as flask:
        assert ("will refuse this shop's session cookie" in flask.get("/").text) is warned


@pytest.mark.parametrize(
    ("method", "origin", "fetch_site", "scheme", "host", "refused"),
    [
        ("POST", "https://shop.example", None, "https", "shop.example:443", False),  # the default port, spelt out
        ("POST", "https://shop.example:443", None, "https", "shop.example", False),
        ("POST", "http://shop.example", None, "https", "shop.example", True),  # downgraded
        ("POST", "http://[::1]:8000", None, "http", "[::1]:8000", False),
        ("POST", "http://[::1]:8000", None, "http", "[::1]:8001", True),
        ("POST", "http://shop.example", None, "http", None, True),  # no Host to compare with
        ("POST", "http://shop.example", None, "http", "shop.example/evil", True),
        ("POST", None, "same-site", "http", "shop.example", False),
        ("POST", "http://a.shop.example", "same-site", "http", "shop.example", True),  # another origin
        ("POST", None, " Cross-Site ", "http", "shop.example", True),
        ("POST", None, None, "http", None, False),  # no browser: served
        ("PUT", "null", None, "http", "shop.example", True),
        ("delete", None, "cross-site", "http", "shop.example", True),
        ("GET", "null", "cross-site", "http", "shop.example", False),
        ("HEAD", "http://evil.example", None, "http", "shop.example", False),
    ],
)
def test_the_cross_site_rule(
    method: str, origin: str | None, fetch_site: str | None, scheme: str, host: str | None, refused: bool
) -> None:
    assert shop.is_cross_site(method, origin=origin, fetch_site=fetch_site, scheme=scheme, host=host) is refused
