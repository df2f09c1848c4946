"""The example shops in a real browser: headless Chromium (Playwright) against uvicorn (FastAPI
shop) and gunicorn ``--workers 2 --threads 4`` (Flask shop), each on SQLite and on Redis.

One browser serves the whole package. Each (shop, store) pair gets two servers, with the
library's default Secure ``__Host-`` cookie: one made ``SameSite=Strict``, and one with a
two-second idle timeout for the one test that waits for it (a browser signs in there first thing,
so that the wait overlaps the other tests). They start in the background, the next pair's while
the browser visits this one's, and stop once their tests are done. Screenshots go to the artifacts
folder (``SESSION_MW_ARTIFACTS``, default ``artifacts/browser/``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import COOKIE, REQUIRE_BROWSER, Fleet, forging_site
from tests.examples.shop_suite import Kind, Shop

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect
except ImportError:  # pragma: no cover - CI installs it; there, this is an error, not a skip
    if REQUIRE_BROWSER:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

IDLE_TIMEOUT = 2.0  # seconds; the touch interval follows (idle / 10)
CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"
LOGIN_BUTTON = 'form[action="/login"] button'

COMBOS = [
    pytest.param(("fastapi", "sqlite"), id="fastapi-sqlite"),
    pytest.param(("fastapi", "redis"), id="fastapi-redis"),
    pytest.param(("flask", "sqlite"), id="flask-sqlite"),
    pytest.param(("flask", "redis"), id="flask-redis"),
]


VARIANTS = {
    "strict": {"SESSION_MW_COOKIE_SAMESITE": "strict"},
    "idle": {"SESSION_MW_IDLE_TIMEOUT": str(IDLE_TIMEOUT)},
}


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Every shop this run's tests will visit, queued to start in the order they will be visited."""
    wanted: list[tuple[Kind, str]] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is not request.module or callspec is None:
            continue
        if callspec.params["combo"] not in wanted:
            wanted.append(callspec.params["combo"])
    redis_url: str | None = None
    fleet = Fleet(tmp_path_factory.mktemp("browser-shops"))
    if any(store == "redis" for _, store in wanted):
        try:
            redis_url = str(request.getfixturevalue("redis_url"))
        except pytest.skip.Exception as skipped:  # no Redis here (CI fails instead): the SQLite shops still run
            fleet.unavailable["redis"] = str(skipped)
            wanted = [(kind, store) for kind, store in wanted if store != "redis"]
    try:
        for kind, store in wanted:
            for variant, settings in VARIANTS.items():
                fleet.start(f"{kind}-{store}-{variant}", kind, store, redis_url, settings)
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module", params=COMBOS)
def combo(request: pytest.FixtureRequest) -> tuple[Kind, str]:
    kind, store = request.param
    return kind, store


@pytest.fixture(scope="module")
def shops(combo: tuple[Kind, str], fleet: Fleet) -> Iterator[dict[str, Shop]]:
    """The (shop, store) pair's servers, one per variant; stopped once its tests are done."""
    if combo[1] in fleet.unavailable:
        pytest.skip(fleet.unavailable[combo[1]])
    names = {variant: f"{combo[0]}-{combo[1]}-{variant}" for variant in VARIANTS}
    started = {variant: fleet.shop(name) for variant, name in names.items()}  # a failed start: fleet.close()
    try:
        yield started
    finally:
        for name in names.values():
            fleet.stop(name)


@pytest.fixture(scope="module")
def shop(shops: dict[str, Shop]) -> Shop:
    """The shop most tests visit: a ``SameSite=Strict`` cookie, the default timeouts."""
    return shops["strict"]


@pytest.fixture(scope="module")
def idle_shop(shops: dict[str, Shop]) -> Shop:
    """The same shop with a two-second idle timeout."""
    return shops["idle"]


NewContext = Callable[..., BrowserContext]
Shot = Callable[..., None]
IdleSession = tuple[Page, float]


@pytest.fixture(scope="module", autouse=True)
def idle_session(chromium: Browser, idle_shop: Shop) -> Iterator[IdleSession]:
    """A browser signed in on the idle shop as soon as a (shop, store) pair starts, and its
    (monotonic) time: the idle test then waits out the rest of the timeout, not all of it."""
    context = chromium.new_context(user_agent=CHROME_UA)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(idle_shop.url)
        log_in(page)
        assert session_cookie(context) is not None
        yield page, time.monotonic()
    finally:
        context.close()


@pytest.fixture
def new_context(chromium: Browser) -> Iterator[NewContext]:
    """Fresh browser profiles (cookie jars) for one test, closed after it."""
    made: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = chromium.new_context(**{"user_agent": CHROME_UA, **options})
        context.set_default_timeout(10_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture
def shot(artifacts: Path, combo: tuple[Kind, str], request: pytest.FixtureRequest) -> Shot:
    """Save a screenshot (of the whole page, or of what the window shows) as ``<shop>-<store>-<test>-<step>.png``."""
    test = request.node.originalname.removeprefix("test_")

    def save(page: Page, step: str, *, full_page: bool = False) -> None:
        page.screenshot(path=artifacts / f"{combo[0]}-{combo[1]}-{test}-{step}.png", full_page=full_page)

    return save


def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    found = [dict(c) for c in context.cookies() if c.get("name") == COOKIE]
    assert len(found) <= 1, found
    return found[0] if found else None


def carries(headers: dict[str, str], cookie: str) -> bool:
    """Whether a request's headers (as sent: Playwright's ``all_headers()``) carry ``name=value``."""
    return cookie in [part.strip() for part in headers.get("cookie", "").split(";")]


def log_in(page: Page, user: str = "alice", password: str = "wonderland") -> None:
    page.fill("#username", user)
    page.fill("#password", password)
    page.click(LOGIN_BUTTON)
    expect(page.get_by_role("heading", name=f"Hello, {user}!")).to_be_visible()


def add_to_cart(page: Page, item: str, count_after: int) -> None:
    page.click(f'button.add[data-item="{item}"]')
    expect(page.locator("#cart-count")).to_have_text(str(count_after))


def expect_signed_out(page: Page) -> None:
    expect(page.locator(LOGIN_BUTTON)).to_be_visible()
    text = page.locator("body").inner_text()
    for private in ("Hello, alice", "Signed in as", "Your active sessions", "Log out everywhere"):
        assert private not in text, private


# -- the scenarios ----------------------------------------------------------------------------


def test_the_cart_survives_login_and_the_cookie_changes(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(shop.url)
    assert session_cookie(context) is None  # looking around creates no session
    add_to_cart(page, "apple", 1)
    add_to_cart(page, "cherry", 2)
    before = session_cookie(context)
    assert before is not None
    assert (before["secure"], before["httpOnly"], before["sameSite"], before["path"]) == (True, True, "Strict", "/")
    log_in(page)
    after = session_cookie(context)
    assert after is not None
    renewed = after["value"] != before["value"]  # (the tokens stay out of failure reports)
    assert renewed, "login kept the session ID"
    lines = page.locator("#cart-lines li")
    expect(lines).to_have_count(2)
    expect(lines.nth(0)).to_contain_text("Apple \N{MULTIPLICATION SIGN} 1")
    expect(lines.nth(1)).to_contain_text("Cherries \N{MULTIPLICATION SIGN} 1")
    expect(page.locator("#cart-count")).to_have_text("2")
    page.reload()
    expect(page.locator("#cart-lines li")).to_have_count(2)
    shot(page, "signed-in")


def test_scripts_cannot_read_the_session_cookie(shop: Shop, new_context: NewContext) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(shop.url)
    add_to_cart(page, "pear", 1)
    anonymous = session_cookie(context)
    assert anonymous is not None and anonymous["httpOnly"] is True
    assert COOKIE not in page.evaluate("document.cookie")
    # signed in through the context's own HTTP client (it shares the browser's cookies), then looked at
    signed_in = context.request.post(shop.url + "/login", form={"username": "alice", "password": "wonderland"})
    assert signed_in.ok
    page.reload()
    expect(page.get_by_role("heading", name="Hello, alice!")).to_be_visible()
    cookie = session_cookie(context)
    assert cookie is not None and cookie["httpOnly"] is True
    page.evaluate("document.cookie = 'theme=green; path=/'")  # a cookie scripts may see, to prove they see some
    seen = page.evaluate("document.cookie")
    assert "theme=green" in seen
    exposed = COOKIE in seen or cookie["value"] in seen or anonymous["value"] in seen
    assert not exposed, "document.cookie shows the session cookie"


def test_sign_out_another_device(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    marker = uuid.uuid4().hex[:8]
    laptop = new_context(user_agent=f"{CHROME_UA} laptop-{marker}").new_page()
    phone = new_context(user_agent=f"{CHROME_UA} phone-{marker}").new_page()
    for page in (laptop, phone):
        page.goto(shop.url)
        log_in(page)
    laptop.reload()
    devices = laptop.locator("#devices li")
    mine = devices.filter(has=laptop.locator(f'[title$="laptop-{marker}"]'))
    theirs = devices.filter(has=laptop.locator(f'[title$="phone-{marker}"]'))
    expect(mine).to_have_count(1)
    expect(theirs).to_have_count(1)
    expect(mine).to_contain_text("this device")
    expect(mine.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(theirs).to_contain_text("Chrome on Linux")
    shot(laptop, "two-devices")

    with laptop.expect_navigation():  # the page reloads once the server has ended that session
        theirs.get_by_role("button", name="Sign out").click()
    expect(theirs).to_have_count(0)
    expect(mine).to_have_count(1)
    expect(laptop.get_by_role("heading", name="Hello, alice!")).to_be_visible()

    phone.reload()  # the phone's next navigation: signed out
    expect_signed_out(phone)
    phone.goto(shop.url + "/api/me")
    assert '"user":null' in phone.locator("body").inner_text().replace(" ", "")


def test_back_after_logout_shows_nothing_private(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    page = new_context().new_page()
    page.goto(shop.url)
    log_in(page)
    add_to_cart(page, "kiwi", 1)
    page.reload()  # the signed-in page with the cart, as history will hold it
    expect(page.locator("#cart-lines li")).to_have_count(1)
    page.get_by_role("button", name="Log out", exact=True).click()
    expect_signed_out(page)
    page.go_back(wait_until="commit")  # a page restored from the back/forward cache fires no "load"
    expect_signed_out(page)
    expect(page.locator("#cart-lines li")).to_have_count(0)
    shot(page, "back")
    page.reload()
    expect_signed_out(page)
    expect(page.locator("#cart-lines li")).to_have_count(0)


def test_a_cross_site_form_does_not_act_on_the_session(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    context = new_context()
    page = context.new_page()
    page.goto(shop.url)
    log_in(page)
    cookie = session_cookie(context)
    assert cookie is not None
    sent = f"{COOKIE}={cookie['value']}"

    with forging_site(shop.url) as port:
        # another site (localhost vs 127.0.0.1) posts a logout form: SameSite=Strict keeps the
        # cookie out of it, and the shop refuses the cross-site POST anyway
        with page.expect_request(f"{shop.url}/logout") as forged:
            page.goto(f"http://localhost:{port}/forged-logout")
        headers = forged.value.all_headers()
        assert not carries(headers, sent), "the forged POST carried the session cookie"
        assert headers.get("sec-fetch-site") == "cross-site"
        response = forged.value.response()
        assert response is not None and response.status == 403
        shot(page, "forged-post")

        # a link from that site: under Strict even a top-level GET arrives without the cookie
        page.goto(f"http://localhost:{port}/link")
        with page.expect_request(f"{shop.url}/") as followed:
            page.click("#go")
        assert not carries(followed.value.all_headers(), sent), "a cross-site link carried the Strict cookie"
        expect_signed_out(page)

        # the same site on another port (another origin): the cookie goes along, the Origin check refuses
        with page.expect_request(f"{shop.url}/logout") as sibling:
            page.goto(f"http://127.0.0.1:{port}/forged-logout")
        assert carries(sibling.value.all_headers(), sent), "a same-site POST went without the cookie"
        response = sibling.value.response()
        assert response is not None and response.status == 403

    # the session was never acted on: the user is still signed in, with the same cookie
    with page.expect_request(f"{shop.url}/") as typed:
        page.goto(shop.url)
    assert carries(typed.value.all_headers(), sent), "the shop's own page went without the cookie"
    expect(page.get_by_role("heading", name="Hello, alice!")).to_be_visible()
    after = session_cookie(context)
    assert after is not None
    kept = after["value"] == cookie["value"]
    assert kept, "the session cookie changed"


def test_forged_forms_from_another_origin_are_refused(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    """An attacker's page on another port of this machine (the same site, so the cookie goes along,
    but another origin) auto-submits forms to the shop: to put something in a signed-in victim's
    cart, and to sign the victim (and a visitor with no session) in as the attacker. The shop
    refuses each with a 403 and nothing changes."""
    context = new_context()
    page = context.new_page()
    page.goto(shop.url)
    add_to_cart(page, "apple", 1)
    log_in(page)
    cookie = session_cookie(context)
    assert cookie is not None
    sent = f"{COOKIE}={cookie['value']}"
    stranger = new_context()
    visitor = stranger.new_page()

    def forge(victim: Page, url: str) -> tuple[dict[str, str], int]:
        target = shop.url + ("/api/cart" if "cart" in url else "/login")
        with victim.expect_response(target) as answered:
            victim.goto(url)
        response = answered.value
        return response.request.all_headers(), response.status

    with forging_site(shop.url) as port:
        sibling, foreign = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
        attacks = [
            (page, f"{sibling}/forged-cart"),
            (page, f"{sibling}/forged-login?username=mallory&password=mallory"),
            (page, f"{sibling}/forged-login?username=bob&password=builder"),  # an account the attacker holds
            (visitor, f"{sibling}/forged-login?username=bob&password=builder"),
            (visitor, f"{foreign}/forged-login?username=bob&password=builder"),
        ]
        for victim, url in attacks:
            headers, status = forge(victim, url)
            assert status == 403, url
            assert headers.get("origin") == url.split("/forged", 1)[0], headers
            if victim is page and url.startswith(sibling):  # the cookie went along: only the shop's check stopped it
                assert carries(headers, sent), "a same-site POST went without the cookie"
        shot(page, "forged-login")

    page.goto(shop.url)
    expect(page.get_by_role("heading", name="Hello, alice!")).to_be_visible()
    expect(page.locator("#cart-lines li")).to_have_count(1)
    expect(page.locator("#cart-lines li").nth(0)).to_contain_text("Apple \N{MULTIPLICATION SIGN} 1")
    after = session_cookie(context)
    assert after is not None
    kept = after["value"] == cookie["value"]
    assert kept, "the session cookie changed"
    assert context.request.get(shop.url + "/api/me").json() == {"user": "alice"}
    assert stranger.request.get(shop.url + "/api/me").json() == {"user": None}
    assert session_cookie(stranger) is None  # the forged logins started no session


def test_the_pages_own_posts_carry_the_csrf_token(shop: Shop, new_context: NewContext) -> None:
    """The page's scripts send the session's CSRF token in their header and its forms in their hidden
    field, and keep it current as the session token changes: the first item in the cart starts a
    session, signing in and confirming the password move it to a new ID."""
    context = new_context()
    page = context.new_page()
    page.goto(shop.url)
    meta = page.locator('meta[name="csrf-token"]')
    drawn = meta.get_attribute("content")
    with page.expect_request(f"{shop.url}/api/cart") as first:
        add_to_cart(page, "kiwi", 1)
    assert first.value.all_headers().get("x-csrf-token") == drawn
    renewed = meta.get_attribute("content")
    assert renewed and renewed != drawn  # the session that answer started has a token of its own
    expect(page.locator('form[action="/login"] input[name="csrf_token"]')).to_have_value(renewed)
    with page.expect_request(f"{shop.url}/api/cart") as second:
        add_to_cart(page, "pear", 2)
    assert second.value.all_headers().get("x-csrf-token") == renewed
    with page.expect_request(f"{shop.url}/login") as login:
        log_in(page)
    assert f"csrf_token={renewed}" in (login.value.post_data or "")
    signed_in = meta.get_attribute("content")
    assert signed_in and signed_in != renewed

    page.fill("#elevate-password", "wonderland")
    with page.expect_navigation():  # confirmed: the page reloads
        page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Password confirmed for this session.")).to_be_visible()
    assert meta.get_attribute("content") not in (signed_in, None)  # a new session ID, a new token
    add_to_cart(page, "apple", 3)
    page.get_by_role("button", name="Log out", exact=True).click()
    expect_signed_out(page)
    expect(page.locator("#cart-lines li")).to_have_count(0)


# What the layout test measures in the page: overflow, the header's controls, the pictures, the words.
LAYOUT_PROBE = """() => {
  const lines = (el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    return range.getClientRects().length;
  };
  const header = [...document.querySelectorAll("header .account > *")].map((el) => el.getBoundingClientRect());
  const middles = header.map((r) => Math.round(r.top + r.height / 2));
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    headerButtonLines: [...document.querySelectorAll("header button")].map(lines),
    headerMiddles: middles,
    pictures: [...document.querySelectorAll(".card svg.picture")].map((el) => el.getBoundingClientRect().width),
    emoji: /\\p{Extended_Pictographic}/u.test(document.body.innerText),
    text: document.body.innerText.toLowerCase(),
  };
}"""


def _check_layout(page: Page) -> dict[str, Any]:
    probe: dict[str, Any] = page.evaluate(LAYOUT_PROBE)
    assert probe["scrollWidth"] <= probe["innerWidth"], probe["scrollWidth"]
    assert max(probe["headerMiddles"]) - min(probe["headerMiddles"]) <= 4, probe["headerMiddles"]
    assert all(n == 1 for n in probe["headerButtonLines"]), probe["headerButtonLines"]
    assert len(probe["pictures"]) == 6 and min(probe["pictures"]) >= 40, probe["pictures"]
    assert not probe["emoji"]
    assert "checkout" not in probe["text"] and "check out" not in probe["text"]
    return probe


def test_layout_on_a_phone(shop: Shop, new_context: NewContext, shot: Shot) -> None:
    other = new_context(user_agent="AVeryLongUserAgentWithoutAnySpacesAtAll/1.0/" + "x" * 120)
    signed_in = other.request.post(shop.url + "/login", form={"username": "alice", "password": "wonderland"})
    assert signed_in.ok and "Hello, alice!" in signed_in.text()  # another device, for a row with a Sign out button

    context = new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(shop.url)
    response = context.request.post(shop.url + "/api/cart", data={"item": "W" * 64})  # no spaces to break at
    assert response.status == 200
    page.reload()
    _check_layout(page)
    expect(page.get_by_role("button", name="Log out", exact=True)).to_have_count(0)
    shot(page, "anonymous-390", full_page=True)

    log_in(page)
    probe = _check_layout(page)
    assert len(probe["headerButtonLines"]) == 1  # the header's one button: Log out
    expect(page.get_by_role("button", name="Log out", exact=True)).to_have_count(1)
    expect(page.locator("#devices").get_by_role("button", name="Sign out").first).to_be_visible()
    shot(page, "signed-in-390", full_page=True)

    page.set_viewport_size({"width": 1280, "height": 900})
    _check_layout(page)
    expect(page.get_by_role("button", name="Log out", exact=True)).to_have_count(1)
    shot(page, "signed-in-1280", full_page=True)


def test_idle_timeout_logs_the_browser_out(idle_session: IdleSession, shot: Shot) -> None:
    """Last of its shop's tests: the browser that ``idle_session`` signed in has been idle since."""
    page, idle_since = idle_session
    time.sleep(max(0.0, idle_since + IDLE_TIMEOUT + 0.5 - time.monotonic()))
    page.reload()
    expect_signed_out(page)
    shot(page, "after-idle")
