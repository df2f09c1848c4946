"""The shop page's small helpers, its warning when the browser would drop the cookie, and its CSRF token."""

from __future__ import annotations

import re

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


def _clients(config: SessionConfig, base: str) -> list[httpx.Client]:
    """Both shops, in-process: the FastAPI one through Starlette's client, the Flask one through WSGI."""
    from examples.fastapi_app import create_app as fastapi_app
    from examples.flask_app import create_app as flask_app

    return [
        TestClient(fastapi_app(config), base_url=base, follow_redirects=False),
        httpx.Client(transport=httpx.WSGITransport(app=flask_app(config)), base_url=base),
    ]


@pytest.mark.parametrize(
    ("method", "origin", "fetch_site", "scheme", "host", "refused"),
    [
        ("POST", "https://shop.example", None, "https", "shop.example", False),
        ("POST", "https://shop.example:443", None, "https", "shop.example", True),  # not how a browser names it
        ("POST", "http://shop.example", None, "https", "shop.example", True),  # downgraded
        ("POST", "http://[::1]:8000", None, "http", "[::1]:8000", False),
        ("POST", "http://[::1]:8000", None, "http", "[::1]:8001", True),
        ("POST", "http://shop.example", None, "http", "shop.example/evil", True),
        ("POST", None, "same-origin", "http", "shop.example", False),
        ("POST", None, "none", "http", "shop.example", False),  # the user typed the address
        ("POST", None, "same-site", "http", "shop.example", True),  # a sibling subdomain: another origin
        ("POST", "http://a.shop.example", "same-site", "http", "shop.example", True),
        ("POST", "http://shop.example", "cross-site", "http", "shop.example", True),
        ("POST", None, " Cross-Site ", "http", "shop.example", True),
        ("POST", None, None, "http", "shop.example", False),  # no browser: served
        ("PUT", "null", None, "http", "shop.example", True),
        ("DELETE", None, "cross-site", "http", "shop.example", True),
        ("GET", "null", "cross-site", "http", "shop.example", False),
        ("HEAD", "http://evil.example", None, "http", "shop.example", False),
    ],
)
def test_the_cross_site_rule(
    method: str,
    origin: str | None,
    fetch_site: str | None,
    scheme: str,
    host: str,
    refused: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """session_mw's check, as both shops apply it to a request with no session (a forged login, a
    first item in the cart): a browser's word that it comes from another origin is a 403."""
    hide_session_mw_env(monkeypatch)
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    if fetch_site is not None:
        headers["Sec-Fetch-Site"] = fetch_site
    for client in _clients(SessionConfig(store_url="memory://"), f"{scheme}://shop.example"):
        with client:
            response = client.request(method, "/api/cart", headers=headers, json={"item": "apple"})
            assert (response.status_code == 403) is refused, (type(client), response.status_code)
            client.cookies.clear()  # no session: a forged login
            login = client.request(method, "/login", headers=headers, data={"username": "bob", "password": "builder"})
            assert (login.status_code == 403) is refused
            assert "set-cookie" not in login.headers or not refused


FORM = re.compile(r"<form\b.*?</form>", re.S)


def test_every_form_and_script_carries_the_csrf_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's token (its meta tag) is the session's, in every form's hidden field; the script
    sends it in the header; a visit that writes nothing still starts no session."""
    hide_session_mw_env(monkeypatch)
    for client in _clients(SessionConfig(store_url="memory://", cookie_secure=False), "http://127.0.0.1"):
        with client:
            own = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
            anonymous = client.get("/")
            assert "set-cookie" not in anonymous.headers
            added = client.post("/api/cart", headers=own, json={"item": "apple"})
            token = added.headers["X-CSRF-Token"]
            for page in (client.get("/"), _signed_in(client, own, token)):
                meta = re.search(r'<meta name="csrf-token" content="([^"]+)" data-header="X-CSRF-Token"', page.text)
                assert meta is not None
                forms = FORM.findall(page.text)
                assert len(forms) >= 1
                for form in forms:
                    assert f'<input type="hidden" name="csrf_token" value="{meta.group(1)}">' in form, form
                assert "[csrfHeader]: csrf.content" in page.text
            assert client.get("/api/me").json() == {"user": "alice"}
            signed_in = client.get("/")
            assert 'action="/logout"' in signed_in.text and 'id="elevate-form"' in signed_in.text


def _signed_in(client: httpx.Client, own: dict[str, str], token: str) -> httpx.Response:
    response = client.post(
        "/login", headers=own, data={"username": "alice", "password": "wonderland", "csrf_token": token}
    )
    assert response.status_code == 303, response.text
    return client.get("/")
