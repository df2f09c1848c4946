"""The black-box suite both example shops must pass: a real server process, driven over HTTP.

``ShopContract`` holds every test of the HTTP contract the two example shops share (routes,
statuses, JSON shapes, cookies); ``test_fastapi_shop.py`` runs it against uvicorn and
``test_flask_shop.py`` against gunicorn, each on ``memory://`` and on a real Redis, plus an
unreachable Redis and two workers sharing Redis. Each server is started once per class and
parameter, not per test.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COOKIE = "id"  # SESSION_MW_COOKIE_SECURE=false: no __Host- prefix
FAKE_TOKEN = "Zm9yZ2VkLXRva2VuLXRoYXQtbm9ib2R5LWV2ZXItbWFk"[:43]  # well-formed, never issued
LOGIN_FORM = 'action="/login"'
CSRF_HEADER = "X-CSRF-Token"  # session_mw's csrf_header; the forms' field is csrf_field, "csrf_token"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
THREADS = 4  # gunicorn --threads, as the contract serves the Flask shop

Kind = Literal["fastapi", "flask"]


def check_outage_inside_a_handler(client: httpx.Client, store: Any) -> None:
    """Listing or revoking sessions hits the store from inside the handler: a store that goes
    down there gives a one-line 503 (no traceback, no cookie change), and nothing is lost."""
    assert client.post("/login", data={"username": "alice", "password": "wonderland"}).status_code == 303
    assert client.get("/api/sessions").status_code == 200
    store.down = True
    for response in (client.get("/api/sessions"), client.get("/"), client.post("/api/logout-everywhere")):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.text.count("\n") == 1 and "Traceback" not in response.text
        assert "set-cookie" not in response.headers
    store.down = False
    assert client.get("/api/me").json() == {"user": "alice"}  # the session survived the outage
    assert len(client.get("/api/sessions").json()["sessions"]) == 1


def hide_session_mw_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``SESSION_MW_*`` variable before an example is imported in-process.

    The examples build their settings from the environment when imported, and unknown
    ``SESSION_MW_*`` names are errors: the test runner's own ``SESSION_MW_REQUIRE_REDIS``
    must not reach them.
    """
    for name in [k for k in os.environ if k.upper().startswith("SESSION_MW_")]:
        monkeypatch.delenv(name)


# -- servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command(kind: Kind, port: int, workers: int) -> list[str]:
    if kind == "fastapi":
        cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port)]
        return cmd + (["--workers", str(workers)] if workers > 1 else [])
    # The contract's command line; the access log names the worker (pid) that served each request,
    # and no control socket: several test servers run at once, and ~/.gunicorn is not ours.
    return [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers), "--threads", str(THREADS), "--bind", f"127.0.0.1:{port}",
        "--access-logfile", "-", "--access-logformat", "%(p)s %(m)s %(U)s %(s)s %({user-agent}i)s",
        "--graceful-timeout", "5", "--no-control-socket",
        "examples.flask_app:app",
    ]  # fmt: skip


@dataclass
class Shop:
    kind: Kind
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def served_by(self, user_agent: str) -> list[tuple[str, str]]:
        """(worker pid, "METHOD /path STATUS") of each request from ``user_agent``, from gunicorn's access log."""
        lines = re.findall(r"^<(\d+)> (\S+ \S+ \d{3}) (.*)$", self.log_text(), re.M)
        return [(pid, request) for pid, request, agent in lines if agent == user_agent]


@contextlib.contextmanager
def running_shop(kind: Kind, settings: dict[str, str], log: Path, workers: int = 1) -> Iterator[Shop]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MW_")}
    env.update({"SESSION_MW_COOKIE_SECURE": "false", "PYTHONUNBUFFERED": "1", **settings})
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _server_command(kind, port, workers), cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    shop = Shop(kind, f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the {kind} shop exited with {proc.returncode}:\n{shop.log_text()}")
            try:
                if httpx.get(shop.url + "/api/cart", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} shop did not answer within 20 s:\n{shop.log_text()}")
            time.sleep(0.05)
        yield shop
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def store_settings(kind: Kind, store: str, redis_url: str | None = None, folder: Path | None = None) -> dict[str, str]:
    if store == "memory":
        return {"SESSION_MW_STORE_URL": "memory://"}
    if store == "sqlite":  # the embedded default, one file shared by every worker
        assert folder is not None
        return {"SESSION_MW_STORE_URL": f"sqlite:///{folder}/sessions.db"}
    assert redis_url is not None
    return {"SESSION_MW_STORE_URL": redis_url, "SESSION_MW_KEY_PREFIX": f"ex-{kind}:{uuid.uuid4().hex}:"}


# -- a tiny browser: one cookie, handled by hand so replays are exact -----------------------


class Browser:
    def __init__(self, shop: Shop, user_agent: str = "pytest-browser/1.0", token: str | None = None) -> None:
        self.http = httpx.Client(base_url=shop.url, follow_redirects=False, timeout=10)
        self.user_agent = user_agent
        self.token = token

    def request(self, method: str, path: str, *, cookie: str | bytes | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"User-Agent": self.user_agent, **kwargs.pop("headers", {})}
        if cookie is not None:
            headers["Cookie"] = cookie
        elif self.token is not None:
            headers["Cookie"] = f"{COOKIE}={self.token}"
        response = self.http.request(method, path, headers=headers, **kwargs)
        self.http.cookies.clear()  # this browser keeps its cookie itself
        for header in session_cookies(response):
            value = header.split(";", 1)[0].split("=", 1)[1]
            self.token = None if (not value or "max-age=0" in header.lower()) else value
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def login(self, username: str = "alice", password: str = "wonderland") -> httpx.Response:
        return self.post("/login", data={"username": username, "password": password})

    def add(self, item: str) -> list[str]:
        response = self.post("/api/cart", json={"item": item})
        assert response.status_code == 200, response.text
        items: list[str] = response.json()["items"]
        return items

    def csrf_token(self, **kwargs: Any) -> str:
        """The session's CSRF token, as the shop page shows it to its forms and scripts."""
        page = self.get("/", **kwargs)
        found = CSRF_META.search(page.text)
        assert page.status_code == 200 and found is not None, page.text
        return found.group(1)

    def me(self) -> str | None:
        user: str | None = self.get("/api/me").json()["user"]
        return user

    def cart(self) -> list[str]:
        items: list[str] = self.get("/api/cart").json()["items"]
        return items

    def close(self) -> None:
        self.http.close()


MakeBrowser = Callable[..., Browser]


def session_cookies(response: httpx.Response) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.split("=", 1)[0].strip() == COOKIE]


def expires_cookie(response: httpx.Response) -> bool:
    return any("max-age=0" in h.lower() for h in session_cookies(response))


def _assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert "set-cookie" not in response.headers
    assert len(response.text) < 200 and "Traceback" not in response.text and "redis" not in response.text.lower()


# -- bad input, shared by the hostile-input tests ------------------------------------------

BAD_COOKIES: dict[str, str | bytes] = {
    "malformed": f"{COOKIE}=not-a-token",
    "too-short": f"{COOKIE}={FAKE_TOKEN[:-1]}",
    "oversized-value": f"{COOKIE}={'A' * 5000}",
    "oversized-header": f"{COOKIE}={FAKE_TOKEN}; junk={'x' * 9000}",
    "forged": f"{COOKIE}={FAKE_TOKEN}",
    "duplicated": f"{COOKIE}={FAKE_TOKEN}; {COOKIE}={FAKE_TOKEN[::-1]}",
    "quoted": f'{COOKIE}="{FAKE_TOKEN}"',
    "non-ascii": f"{COOKIE}={FAKE_TOKEN[:-2]}é!".encode("latin-1"),
    "garbage": f";;; =; {COOKIE}; ==={COOKIE}=;\t{COOKIE}=%00%ff",
    "empty": f"{COOKIE}=",
}


BAD_CART_BODIES: dict[str, tuple[bytes, str]] = {
    "not-json": (b"{not json", "application/json"),
    "empty-body": (b"", "application/json"),
    "array": (b'["apple"]', "application/json"),
    "string": (b'"apple"', "application/json"),
    "no-item": (b"{}", "application/json"),
    "null-item": (b'{"item": null}', "application/json"),
    "number-item": (b'{"item": 5}', "application/json"),
    "list-item": (b'{"item": ["apple"]}', "application/json"),
    "object-item": (b'{"item": {"a": 1}}', "application/json"),
    "empty-item": (b'{"item": "  "}', "application/json"),
    "long-item": (b'{"item": "' + b"a" * 65 + b'"}', "application/json"),
    "control-chars": (b'{"item": "app\\u0000le"}', "application/json"),
    "bad-utf8": (b'{"item": "\xff\xfe"}', "application/json"),
    "deep-nesting": (b"[" * 4000, "application/json"),
    "huge-body": (b'{"item": "apple", "pad": "' + b"x" * 10_000 + b'"}', "application/json"),
    "form-encoded": (b"item=apple", "application/x-www-form-urlencoded"),
    "text-plain": (b'{"item": "apple"}', "text/plain"),
}


# Headers by which a browser says a request comes from another site (session_mw's check also
# refuses a sibling site, "same-site": another origin all the same).
CROSS_SITE_HEADERS: list[dict[str, str]] = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


def own_page(shop: Shop) -> dict[str, str]:
    """The headers a browser sends with a POST from the shop's own page."""
    return {"Origin": shop.url, "Sec-Fetch-Site": "same-origin"}


# Origin headers that do not name the shop's own origin ({url} is the shop's, {port} its port).
FOREIGN_ORIGINS: dict[str, str | bytes] = {
    "another-site": "https://evil.example",
    "null": "null",
    "another-port": "http://127.0.0.1:{other_port}",
    "another-scheme": "https://127.0.0.1:{port}",
    "another-host": "http://localhost:{port}",
    "default-port": "http://127.0.0.1",
    "with-a-path": "{url}/",
    "two-origins": "{url}, {url}",
    "with-userinfo": "http://user@127.0.0.1:{port}",
    "port-out-of-range": "http://127.0.0.1:99999",
    "broken-ipv6": "http://[::1",
    "no-scheme": "127.0.0.1:{port}",
    "other-scheme": "file://127.0.0.1:{port}",
    "empty": "",
    "non-ascii": "http://\xe9vil.example".encode("latin-1"),
}


# -- the contract ----------------------------------------------------------------------


class ShopFixtures:
    """A running shop per store (``shop``, given by each suite), and browsers on it."""

    kind: ClassVar[Kind]
    workers_on_redis: ClassVar[int] = 1  # a memory store lives in one process: always 1 worker there

    @classmethod
    def _serve(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
        redis_url: str | None = request.getfixturevalue("redis_url") if request.param == "redis" else None
        workers = {"memory": 1, "sqlite": 2, "redis": cls.workers_on_redis}[request.param]
        folder = tmp_path_factory.mktemp(f"{cls.kind}-{request.param}")
        settings = store_settings(cls.kind, request.param, redis_url, folder)
        with running_shop(cls.kind, settings, folder / "server.log", workers) as server:
            yield server
        assert "Traceback" not in server.log_text()

    @pytest.fixture
    def browser(self, shop: Shop) -> Iterator[Browser]:
        b = Browser(shop)
        yield b
        b.close()

    @pytest.fixture
    def make_browser(self, shop: Shop) -> Iterator[MakeBrowser]:
        made: list[Browser] = []

        def make(user_agent: str = "pytest-browser/1.0", token: str | None = None) -> Browser:
            made.append(Browser(shop, user_agent, token))
            return made[-1]

        yield make
        for b in made:
            b.close()


class ShopContract(ShopFixtures):
    """Every contract test; a ``Test...`` subclass names the shop (``kind``) to run them on."""

    @pytest.fixture(scope="class", params=["memory", "sqlite", "redis"])
    @classmethod
    def shop(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
        yield from cls._serve(request, tmp_path_factory)

    # -- anonymous visitors ----------------------------------------------------------------

    def test_anonymous_visit_creates_no_session(self, browser: Browser) -> None:
        page = browser.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert LOGIN_FORM in page.text and "Add to cart" in page.text
        assert "set-cookie" not in page.headers
        cart = browser.get("/api/cart")
        assert cart.status_code == 200 and cart.json() == {"items": []}
        assert "set-cookie" not in cart.headers
        me = browser.get("/api/me")
        assert me.status_code == 401 and me.json() == {"user": None}
        assert "set-cookie" not in me.headers
        assert browser.token is None

    def test_anonymous_cart_creates_a_session(self, browser: Browser) -> None:
        response = browser.post("/api/cart", json={"item": "apple"})
        assert response.status_code == 200 and response.json() == {"items": ["apple"]}
        (cookie,) = session_cookies(response)
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert browser.token is not None and len(browser.token) == 43
        assert browser.add("banana") == ["apple", "banana"]
        assert browser.cart() == ["apple", "banana"]
        page = browser.get("/")
        assert page.status_code == 200 and "Banana" in page.text and LOGIN_FORM in page.text
        assert browser.me() is None

    def test_api_requires_login(self, browser: Browser) -> None:
        assert browser.get("/api/sessions").status_code == 401
        assert browser.post("/api/logout-everywhere").status_code == 401
        assert browser.post("/api/elevate", json={"password": "wonderland"}).status_code == 401
        browser.add("kiwi")  # an anonymous session is still not a login
        assert browser.get("/api/sessions").status_code == 401
        assert browser.post("/api/logout-everywhere").status_code == 401
        assert browser.post("/api/elevate", json={"password": "wonderland"}).status_code == 401
        assert browser.cart() == ["kiwi"]

    # -- login -----------------------------------------------------------------------------

    def test_login_regenerates_the_id_and_keeps_the_cart(self, browser: Browser, make_browser: MakeBrowser) -> None:
        browser.add("apple")
        anonymous = browser.token
        response = browser.login()
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert browser.token is not None and browser.token != anonymous
        assert browser.me() == "alice"
        assert browser.cart() == ["apple"]
        page = browser.get("/")
        assert "Hello, alice!" in page.text and "Log out everywhere" in page.text and LOGIN_FORM not in page.text
        replay = make_browser(token=anonymous)  # the pre-login ID is dead: no fixation, no replay
        assert replay.me() is None
        assert replay.cart() == []

    def test_login_without_a_prior_session(self, browser: Browser) -> None:
        response = browser.login("bob", "builder")
        assert response.status_code == 303 and browser.token is not None
        assert browser.me() == "bob"
        assert browser.cart() == []

    def test_switching_user_regenerates_the_id(self, browser: Browser, make_browser: MakeBrowser) -> None:
        browser.login("alice", "wonderland")
        browser.add("alices-secret-item")
        as_alice = browser.token
        browser.login("bob", "builder")
        assert browser.token != as_alice and browser.me() == "bob"
        assert browser.cart() == []  # a different user starts from an empty cart
        assert make_browser(token=as_alice).me() is None

    def test_the_same_user_logging_in_again_gets_a_new_id(self, browser: Browser, make_browser: MakeBrowser) -> None:
        browser.login()
        browser.add("apple")
        first = browser.token
        browser.login()
        assert browser.token is not None and browser.token != first
        assert browser.me() == "alice" and browser.cart() == ["apple"]
        assert make_browser(token=first).me() is None

    def test_revoke_one_of_my_sessions_but_never_someone_elses(self, make_browser: MakeBrowser) -> None:
        laptop, phone, bob = (
            make_browser("Laptop/1.0 (revoke)"),
            make_browser("Phone/2.0 (revoke)"),
            make_browser("Bob/1.0"),
        )
        laptop.login()
        phone.login()
        bob.login("bob", "builder")
        [bobs] = [s for s in bob.get("/api/sessions").json()["sessions"] if s["current"]]
        assert bob.token is not None and bobs["id"] not in bob.token
        for stranger in (bobs["id"], "0" * 16, "", 5, None):
            response = laptop.post("/api/sessions/revoke", json={"id": stranger})
            assert response.status_code == 404, stranger
        assert bob.me() == "bob"
        phones = next(
            s for s in laptop.get("/api/sessions").json()["sessions"] if s["user_agent"] == "Phone/2.0 (revoke)"
        )
        response = laptop.post("/api/sessions/revoke", json={"id": phones["id"]})
        assert response.status_code == 200 and response.json() == {"revoked": 1}
        assert phone.me() is None and laptop.me() == "alice"
        assert make_browser().post("/api/sessions/revoke", json={"id": phones["id"]}).status_code == 401

    def test_bad_login_without_a_session_creates_none(self, browser: Browser) -> None:
        response = browser.login("alice", "nope")
        assert response.status_code == 401 and "set-cookie" not in response.headers

    def test_login_page_escapes_the_echoed_username(self, browser: Browser) -> None:
        response = browser.login('"><script>alert(1)</script>', "x")
        assert response.status_code == 401
        assert "<script>alert(1)" not in response.text
        assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in response.text

    # -- sessions, logout everywhere -------------------------------------------------------------

    def test_sessions_list_and_logout_everywhere(self, make_browser: MakeBrowser) -> None:
        # start clean: other tests of this module logged alice in on the same server
        sweeper = make_browser()
        sweeper.login()
        assert sweeper.post("/api/logout-everywhere").status_code == 200

        laptop = make_browser("Laptop/1.0 (tests)")
        phone = make_browser("Phone/2.0 (tests)")
        bob = make_browser("Bob/1.0")
        laptop.login()
        phone.login()
        bob.login("bob", "builder")

        response = laptop.get("/api/sessions")
        assert response.status_code == 200
        sessions = response.json()["sessions"]
        assert len(sessions) == 2
        assert sorted(s["user_agent"] for s in sessions) == ["Laptop/1.0 (tests)", "Phone/2.0 (tests)"]
        assert [s["user_agent"] for s in sessions if s["current"]] == ["Laptop/1.0 (tests)"]
        for s in sessions:
            for field in ("created_at", "last_seen"):
                moment = datetime.fromisoformat(s[field])
                assert moment.utcoffset() == timedelta(0)
                assert abs(moment.timestamp() - time.time()) < 120
        from_phone = phone.get("/api/sessions").json()["sessions"]
        assert [s["user_agent"] for s in from_phone if s["current"]] == ["Phone/2.0 (tests)"]

        page = laptop.get("/")
        assert "Phone/2.0 (tests)" in page.text and "this device" in page.text

        old_phone = phone.token
        response = laptop.post("/api/logout-everywhere")
        assert response.status_code == 200 and response.json() == {"revoked": 2}
        assert expires_cookie(response)
        assert laptop.token is None
        assert laptop.me() is None
        assert phone.me() is None
        assert make_browser(token=old_phone).get("/api/sessions").status_code == 401
        assert bob.me() == "bob"  # other users are untouched

    def test_user_agent_is_escaped_in_the_sessions_table(self, make_browser: MakeBrowser) -> None:
        hostile = make_browser('<img src=x onerror="alert(1)"><script>alert(2)</script>')
        hostile.login("bob", "builder")
        page = hostile.get("/")
        assert page.status_code == 200
        assert "<script>alert(2)" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text
        assert hostile.post("/logout").status_code == 303

    # -- elevation -------------------------------------------------------------------------

    def test_elevate(self, browser: Browser, make_browser: MakeBrowser) -> None:
        browser.login()
        browser.add("cherry")
        before = browser.token

        wrong = browser.post("/api/elevate", json={"password": "builder"})
        assert wrong.status_code == 403
        assert session_cookies(wrong) == [] and browser.token == before

        right = browser.post("/api/elevate", json={"password": "wonderland"})
        assert right.status_code == 200 and right.json() == {"elevated": True}
        assert browser.token is not None and browser.token != before
        assert browser.me() == "alice" and browser.cart() == ["cherry"]
        assert "Password confirmed" in browser.get("/").text
        assert make_browser(token=before).me() is None

    # -- cross-site requests, caching --------------------------------------------------------

    def test_cross_site_posts_are_refused_and_change_nothing(self, shop: Shop, make_browser: MakeBrowser) -> None:
        marker = uuid.uuid4().hex[:8]
        alice, phone, anonymous = make_browser(f"Victim/{marker}"), make_browser(f"Phone/{marker}"), make_browser()
        alice.add("apple")
        alice.login()
        phone.login()
        token = alice.token
        [phones] = [s for s in alice.get("/api/sessions").json()["sessions"] if s["user_agent"] == f"Phone/{marker}"]
        forged: list[tuple[str, dict[str, Any]]] = [
            ("/api/cart", {"json": {"item": "banana"}}),
            ("/api/sessions/revoke", {"json": {"id": phones["id"]}}),
            ("/api/elevate", {"json": {"password": "wonderland"}}),
            ("/api/logout-everywhere", {}),
            ("/login", {"data": {"username": "bob", "password": "builder"}}),  # login CSRF
            ("/logout", {}),
        ]
        csrf = alice.csrf_token()
        for headers in CROSS_SITE_HEADERS:
            for path, body in forged:
                for who in (alice, anonymous):
                    # refused whatever the request carries, the session's own CSRF token included
                    for carried in ({}, {CSRF_HEADER: csrf}):
                        response = who.post(path, headers={**headers, **carried}, **body)
                        assert response.status_code == 403, (path, headers, response.text)
                        assert "set-cookie" not in response.headers and "Traceback" not in response.text
        assert alice.token == token and alice.me() == "alice" and alice.cart() == ["apple"]
        assert "Password confirmed" not in alice.get("/").text  # not elevated
        assert phone.me() == "alice"
        assert anonymous.token is None and anonymous.me() is None

        # the same requests from the shop's own pages (with the CSRF token) or from no browser at all
        # (with none) are served
        sites = ("same-origin", "none")
        own = [{"Origin": shop.url}, *({"Sec-Fetch-Site": site} for site in sites), own_page(shop)]
        served = [*({**headers, CSRF_HEADER: csrf} for headers in own), {}]
        for headers in served:
            assert alice.post("/api/cart", headers=headers, json={"item": "kiwi"}).status_code == 200, headers
        assert alice.cart() == ["apple"] + ["kiwi"] * len(served)
        both = {**own_page(shop), CSRF_HEADER: csrf}
        response = alice.post("/api/sessions/revoke", headers=both, json={"id": phones["id"]})
        assert response.status_code == 200 and phone.me() is None
        bobs_login = {"username": "bob", "password": "builder"}
        assert anonymous.post("/login", headers=own_page(shop), data=bobs_login).status_code == 303
        assert anonymous.me() == "bob"
        logout = alice.post("/logout", headers=own_page(shop), data={"csrf_token": csrf})
        assert logout.status_code == 303 and alice.me() is None

    def test_a_browser_post_on_the_session_needs_its_csrf_token(self, shop: Shop, make_browser: MakeBrowser) -> None:
        """A browser's POST from the shop's own origin that rides on the session cookie is refused
        (403, nothing changes) without the session's CSRF token, or with a wrong one; with it, served."""
        marker = uuid.uuid4().hex[:8]
        alice, phone, bob = make_browser(f"Victim/{marker}"), make_browser(f"Phone/{marker}"), make_browser()
        alice.add("apple")
        before_login = alice.csrf_token()
        alice.login()
        phone.login()
        bob.login("bob", "builder")
        token = alice.token
        csrf = alice.csrf_token()
        assert csrf != before_login  # the token goes with the session token: a login renews it
        assert csrf == alice.csrf_token() and csrf not in (token, phone.csrf_token(), bob.csrf_token())
        [phones] = [s for s in alice.get("/api/sessions").json()["sessions"] if s["user_agent"] == f"Phone/{marker}"]
        actions: list[tuple[str, dict[str, Any]]] = [
            ("/api/cart", {"json": {"item": "banana"}}),
            ("/api/cart", {"json": {"item": "banana", "csrf_token": csrf}}),  # not where the check looks
            ("/api/sessions/revoke", {"json": {"id": phones["id"]}}),
            ("/api/elevate", {"json": {"password": "wonderland"}}),
            ("/api/logout-everywhere", {}),
            ("/login", {"data": {"username": "bob", "password": "builder"}}),
            ("/logout", {}),
        ]
        wrong = ["", "not-the-token", FAKE_TOKEN, before_login, bob.csrf_token(), csrf[:-1], token]
        for browser_says in ({"Origin": shop.url}, {"Sec-Fetch-Site": "same-origin"}, own_page(shop)):
            for path, body in actions:
                for carried in (None, *wrong):
                    headers = dict(browser_says)
                    sent = dict(body)
                    if carried is not None and "data" in body:
                        sent["data"] = {**body["data"], "csrf_token": carried}  # a form's field
                    elif carried is not None:
                        headers[CSRF_HEADER] = carried
                    response = alice.post(path, headers=headers, **sent)
                    assert response.status_code == 403, (path, browser_says, carried)
                    assert "set-cookie" not in response.headers and "Traceback" not in response.text
        assert alice.token == token and alice.me() == "alice" and alice.cart() == ["apple"]
        page = alice.get("/")
        assert "Hello, alice!" in page.text and "Password confirmed" not in page.text
        assert phone.me() == "alice" and bob.me() == "bob"

        # with the token, in the header or (for a form) in the csrf_token field: served
        with_token = {**own_page(shop), CSRF_HEADER: csrf}
        assert alice.post("/api/cart", headers=with_token, json={"item": "kiwi"}).json() == {"items": ["apple", "kiwi"]}
        response = alice.post("/api/sessions/revoke", headers=with_token, json={"id": phones["id"]})
        assert response.status_code == 200 and phone.me() is None
        assert alice.post("/api/elevate", headers=with_token, json={"password": "wonderland"}).status_code == 200
        assert alice.token != token and "Password confirmed" in alice.get("/").text
        # a new session ID, so a new token: the old one is refused from now on
        assert alice.post("/api/cart", headers=with_token, json={"item": "pear"}).status_code == 403
        csrf = alice.csrf_token()
        assert (
            alice.post("/api/cart", headers={**own_page(shop), CSRF_HEADER: csrf}, json={"item": "pear"}).status_code
            == 200
        )
        response = alice.post("/logout", headers=own_page(shop), data={"csrf_token": csrf})
        assert response.status_code == 303 and expires_cookie(response) and alice.me() is None

    def test_signing_in_over_an_anonymous_session_needs_its_csrf_token(self, shop: Shop, browser: Browser) -> None:
        """An anonymous visitor with a cart has a session cookie: the login form must carry the token
        (which the page gives it), and the cart survives the login; without it, a 403, nothing changes."""
        add = browser.post("/api/cart", headers=own_page(shop), json={"item": "cherry"})
        assert add.status_code == 200 and browser.token is not None
        csrf = add.headers[CSRF_HEADER]  # the answer that started the session names its token ...
        assert browser.csrf_token() == csrf  # ... the one the page gives the forms
        anonymous = browser.token
        login = {"username": "alice", "password": "wonderland"}
        for carried in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
            response = browser.post("/login", headers=own_page(shop), data={**login, **carried})
            assert response.status_code == 403 and "set-cookie" not in response.headers, carried
        assert browser.token == anonymous and browser.me() is None and browser.cart() == ["cherry"]
        response = browser.post("/login", headers=own_page(shop), data={**login, "csrf_token": csrf})
        assert response.status_code == 303 and browser.token not in (None, anonymous)
        assert browser.me() == "alice" and browser.cart() == ["cherry"]
        # the header does for a form too (a script's login)
        assert browser.csrf_token() != csrf
        response = browser.post("/login", headers={**own_page(shop), CSRF_HEADER: browser.csrf_token()}, data=login)
        assert response.status_code == 303 and browser.me() == "alice"

    def test_pages_with_a_signed_in_user_are_not_stored(self, browser: Browser) -> None:
        browser.login()
        for page in (browser.get("/"), browser.post("/login", data={"username": "alice", "password": "nope"})):
            assert "Signed in as" in page.text or "Wrong username" in page.text
            assert page.headers["cache-control"] == "no-store"
        page = browser.get("/")
        assert "Hello, alice!" in page.text and page.headers["cache-control"] == "no-store"

    # -- logout ----------------------------------------------------------------------------

    def test_logout_destroys_the_session(self, browser: Browser, make_browser: MakeBrowser) -> None:
        browser.login()
        browser.add("orange")
        old = browser.token
        response = browser.post("/logout")
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert expires_cookie(response)
        assert browser.token is None
        replay = make_browser(token=old)
        assert replay.me() is None and replay.cart() == []
        page = replay.get("/")
        assert page.status_code == 200 and LOGIN_FORM in page.text

    def test_logout_when_anonymous(self, browser: Browser) -> None:
        response = browser.post("/logout")
        assert response.status_code == 303 and "set-cookie" not in response.headers

    # -- hostile input ---------------------------------------------------------------------

    @pytest.mark.parametrize("name", list(BAD_COOKIES))
    def test_bad_cookies_are_just_anonymous(self, browser: Browser, name: str) -> None:
        cookie = BAD_COOKIES[name]
        if name == "oversized-header" and self.kind == "flask":
            # gunicorn refuses a header field over 8190 bytes (its limit_request_field_size) itself,
            # with a short 431, before the app runs; session_mw's own limit (8192) is never reached
            for method, path in (("GET", "/"), ("GET", "/api/me"), ("POST", "/api/cart")):
                refused = browser.request(method, path, cookie=cookie)
                assert refused.status_code == 431 and "Traceback" not in refused.text
                assert "set-cookie" not in refused.headers
            cookie = BAD_COOKIES["forged"]  # the rest of the test: the same token, within the limit
        page = browser.get("/", cookie=cookie)
        assert page.status_code == 200 and LOGIN_FORM in page.text
        cart = browser.get("/api/cart", cookie=cookie)
        assert cart.status_code == 200 and cart.json() == {"items": []}
        me = browser.get("/api/me", cookie=cookie)
        assert me.status_code == 401
        assert browser.get("/api/sessions", cookie=cookie).status_code == 401
        added = browser.post("/api/cart", cookie=cookie, json={"item": "apple"})
        assert added.status_code == 200 and added.json() == {"items": ["apple"]}
        assert browser.token is not None and len(browser.token) == 43  # a fresh session, not the bad one
        assert browser.cart() == ["apple"]

    def test_a_second_cookie_of_our_name_neither_hides_nor_replaces_the_session(
        self, shop: Shop, browser: Browser
    ) -> None:
        """A cookie of our name for another path (an app mounted elsewhere, an old setting) is ignored;
        two live sessions (one planted by cookie tossing) are both refused, and neither is expired."""
        browser.login()
        token = browser.token
        assert token is not None
        for other in (FAKE_TOKEN, "eyJ1c2VyIjoiYWxpY2UifQ.ZxY.sig"):  # a forged token, a signed-cookie value
            for pair in ((token, other), (other, token)):
                response = browser.get("/api/me", cookie="; ".join(f"{COOKIE}={v}" for v in pair))
                assert response.status_code == 200 and response.json() == {"user": "alice"}
                assert not session_cookies(response)
        planted = Browser(shop)
        planted.login("bob", "builder")
        both = f"{COOKIE}={planted.token}; {COOKIE}={token}"
        response = browser.get("/api/me", cookie=both)
        assert response.status_code == 401 and not session_cookies(response)
        assert browser.post("/api/cart", cookie=both, json={"item": "pear"}).status_code == 200
        browser.token = token
        assert browser.me() == "alice" and browser.cart() == []  # untouched by the refused pair
        planted.close()

    def test_item_limits(self, browser: Browser) -> None:
        assert browser.add("a" * 64) == ["a" * 64]
        assert browser.add("  pear ") == ["a" * 64, "pear"]
        assert browser.add("<b>unknown & odd</b>")[-1] == "<b>unknown & odd</b>"
        page = browser.get("/")
        assert "&lt;b&gt;unknown &amp; odd&lt;/b&gt;" in page.text and "<b>unknown" not in page.text

    # -- an unreachable store ---------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def dead_redis_shop(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
        settings = {
            "SESSION_MW_STORE_URL": f"redis://127.0.0.1:{_free_port()}/0",  # nothing listens there
            "SESSION_MW_STORE_CONNECT_TIMEOUT": "0.5",
            "SESSION_MW_STORE_SOCKET_TIMEOUT": "0.5",
        }
        with running_shop(cls.kind, settings, tmp_path_factory.mktemp(f"{cls.kind}-dead") / "server.log") as server:
            yield server

    def test_unreachable_store_answers_503_and_keeps_serving(self, dead_redis_shop: Shop) -> None:
        b = Browser(dead_redis_shop, token=FAKE_TOKEN)
        try:
            for _ in range(2):
                for path in ("/", "/api/cart", "/api/me", "/api/sessions"):
                    _assert_503(b.get(path))
                _assert_503(b.post("/api/cart", json={"item": "apple"}))
                _assert_503(b.login())
                _assert_503(b.post("/logout"))
            # no cookie: nothing to load, so read-only pages still work ...
            anonymous = Browser(dead_redis_shop)
            page = anonymous.get("/")
            assert page.status_code == 200 and LOGIN_FORM in page.text
            assert anonymous.get("/api/cart").json() == {"items": []}
            # ... and writing a new session fails cleanly
            _assert_503(anonymous.post("/api/cart", json={"item": "apple"}))
            _assert_503(anonymous.login())
            assert anonymous.token is None
            assert anonymous.get("/").status_code == 200
            anonymous.close()
        finally:
            b.close()
        assert dead_redis_shop.proc.poll() is None
        assert "Traceback" not in dead_redis_shop.log_text()

    # -- several workers ------------------------------------------------------------------

    @pytest.mark.parametrize("store", ["sqlite", "redis"])
    def test_two_workers_share_sessions(self, store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        agent = f"pytest-workers/{uuid.uuid4().hex[:8]}"
        redis_url = str(request.getfixturevalue("redis_url")) if store == "redis" else None
        settings = store_settings(self.kind, store, redis_url, tmp_path)
        with running_shop(self.kind, settings, tmp_path / "server.log", workers=2) as server:

            def workers() -> set[str]:
                return {pid for pid, _ in server.served_by(agent)}

            b = Browser(server, user_agent=agent)
            try:
                b.add("apple")  # written by one worker ...
                assert b.login().status_code == 303
                expected = ["apple"]
                for i in range(90):
                    # ... and, over fresh connections, read and extended by whichever worker accepts
                    with httpx.Client(base_url=server.url, timeout=10, headers={"User-Agent": agent}) as fresh:
                        headers = {"Cookie": f"{COOKIE}={b.token}"}
                        if i % 3 == 0:
                            item = ("banana", "kiwi", "pear", "orange")[(i // 3) % 4]
                            response = fresh.post("/api/cart", json={"item": item}, headers=headers)
                            expected.append(item)
                        else:
                            response = fresh.get("/api/cart", headers=headers)
                        assert response.status_code == 200
                        assert response.json() == {"items": expected}
                        assert fresh.get("/api/me", headers=headers).json() == {"user": "alice"}
                    if i >= 11 and (server.kind != "flask" or len(workers()) == 2):
                        break
            finally:
                b.close()
            if server.kind == "flask":
                # gunicorn logs which worker served each request: both did, so (every answer being
                # the whole cart) a session written by one worker was read and extended by the other
                assert len(workers()) == 2, server.served_by(agent)
        assert "Traceback" not in server.log_text()


class ShopInputs(ShopFixtures):
    """The shops' answers to bad input: about the app, not the store, so on one store only."""

    @pytest.fixture(scope="class", params=["memory"])
    @classmethod
    def shop(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
        yield from cls._serve(request, tmp_path_factory)

    @pytest.mark.parametrize(
        "form",
        [
            {"username": "alice", "password": "builder"},
            {"username": "mallory", "password": "wonderland"},
            {"username": "alice", "password": ""},
            {"username": "alice"},
            {},
        ],
        ids=["wrong-password", "unknown-user", "empty-password", "no-password", "no-fields"],
    )
    def test_bad_login_changes_nothing(self, browser: Browser, form: dict[str, str]) -> None:
        browser.add("pear")
        before = browser.token
        response = browser.post("/login", data=form)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")
        assert LOGIN_FORM in response.text
        if "username" in form:
            assert "Wrong username or password." in response.text
        assert session_cookies(response) == []
        assert browser.token == before
        assert browser.me() is None
        assert browser.cart() == ["pear"]

    @pytest.mark.parametrize(
        ("body", "status"),
        [(b"{oops", 400), (b"[]", 400), (b"{}", 422), (b'{"password": 1}', 422)],
    )
    def test_elevate_rejects_bad_input(self, browser: Browser, body: bytes, status: int) -> None:
        browser.login()
        before = browser.token
        response = browser.post("/api/elevate", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status and "error" in response.json()
        assert browser.token == before and browser.me() == "alice"

    @pytest.mark.parametrize("name", list(FOREIGN_ORIGINS))
    def test_a_post_from_another_origin_is_refused(self, shop: Shop, browser: Browser, name: str) -> None:
        port = int(shop.url.rsplit(":", 1)[1])
        origin = FOREIGN_ORIGINS[name]
        if isinstance(origin, str):
            origin = origin.format(url=shop.url, port=port, other_port=port + 1)
        refused = browser.post("/api/cart", headers={"Origin": origin}, json={"item": "apple"})
        assert refused.status_code == 403 and "Traceback" not in refused.text
        assert "set-cookie" not in refused.headers  # no session was created
        browser.add("pear")
        refused = browser.post("/login", headers={"Origin": origin}, data={"username": "bob", "password": "builder"})
        assert refused.status_code == 403 and "Traceback" not in refused.text
        assert browser.me() is None and browser.cart() == ["pear"]
        # and GET is served whatever the headers say: it changes nothing
        page = browser.get("/", headers={"Origin": origin, "Sec-Fetch-Site": "cross-site"})
        assert page.status_code == 200 and LOGIN_FORM in page.text

    def test_a_repeated_origin_header_is_refused(self, shop: Shop, browser: Browser) -> None:
        browser.add("pear")
        csrf = browser.csrf_token()
        login = {"username": "bob", "password": "builder"}
        for second in (shop.url, "http://evil.example"):
            for name in ("Origin", "Sec-Fetch-Site"):
                first = shop.url if name == "Origin" else "same-origin"
                again = second if name == "Origin" else ("same-origin" if second == shop.url else "cross-site")
                # with the session's cookie and its CSRF token: refused all the same
                headers = [(name, first), (name, again), ("Cookie", f"{COOKIE}={browser.token}"), (CSRF_HEADER, csrf)]
                response = browser.http.post("/api/cart", headers=headers, json={"item": "apple"})
                assert response.status_code == 403, (name, second)
                # and with no session at all (a forged login)
                response = browser.http.post("/login", headers=[(name, first), (name, again)], data=login)
                assert response.status_code == 403 and "set-cookie" not in response.headers, (name, second)
        assert browser.cart() == ["pear"] and browser.me() is None

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "shop.test", "SHOP.Test"])
    def test_the_origin_is_compared_with_the_requests_own_host(self, shop: Shop, browser: Browser, host: str) -> None:
        port = shop.url.rsplit(":", 1)[1]
        own = {"Host": f"{host}:{port}", "Origin": f"http://{host.lower()}:{port}"}
        assert browser.post("/api/cart", headers=own, json={"item": "apple"}).status_code == 200
        csrf = {CSRF_HEADER: browser.csrf_token(headers={"Host": f"{host}:{port}"})}
        shouting = {"Host": f"{host}:{port}", "Origin": f"HTTP://{host.upper()}:{port}", **csrf}
        assert browser.post("/api/cart", headers=shouting, json={"item": "kiwi"}).status_code == 200
        elsewhere = {"Host": f"{host}:{port}", "Origin": f"http://{host}.evil.example:{port}", **csrf}
        assert browser.post("/api/cart", headers=elsewhere, json={"item": "pear"}).status_code == 403
        assert browser.cart() == ["apple", "kiwi"]

    @pytest.mark.parametrize("body, content_type", list(BAD_CART_BODIES.values()), ids=list(BAD_CART_BODIES))
    def test_bad_cart_input_is_a_client_error(self, browser: Browser, body: bytes, content_type: str) -> None:
        response = browser.post("/api/cart", content=body, headers={"Content-Type": content_type})
        assert 400 <= response.status_code < 500
        assert isinstance(response.json()["error"], str)
        assert "set-cookie" not in response.headers  # nothing was stored
        browser.add("apple")
        response = browser.post("/api/cart", content=body, headers={"Content-Type": content_type})
        assert 400 <= response.status_code < 500
        assert browser.cart() == ["apple"]
