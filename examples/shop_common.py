"""The framework-free half of the example shops: catalogue, demo accounts, cart rules, pages,
and what the routes decide (the JSON API's errors, adding to the cart, signing in, elevating,
the CSRF settings).

Both example apps (FastAPI and Flask) import this module, so they sell the same fruit, know
the same users, answer the same errors and render the same HTML; only the request/response
plumbing differs. Nothing here knows about HTTP frameworks or imports session_mw: a session
is any mutable mapping, a request body is bytes, an error is an ``ApiError`` with a status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

SHOP_NAME = "The Little Fruit Shop"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

MAX_ITEM_LENGTH = 64  # characters in one cart item
MAX_CART_ITEMS = 100  # a session is not a warehouse
MAX_JSON_BODY = 4096  # bytes in a JSON request body
MAX_USERNAME_SHOWN = 64  # characters of a rejected username echoed back in the login form


# -- catalogue -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Product:
    id: str  # also names the product's picture, the SVG symbol ``fruit-<id>`` in shop.html
    name: str
    price_cents: int
    blurb: str

    @property
    def price(self) -> str:
        return format_price(self.price_cents)


PRODUCTS: tuple[Product, ...] = (
    Product("apple", "Apple", 50, "Crisp and sweet, from the orchard up the hill."),
    Product("banana", "Banana", 30, "Ripe today, perfect for breakfast."),
    Product("cherry", "Cherries", 320, "A 250 g punnet of dark, juicy cherries."),
    Product("pear", "Pear", 60, "Buttery Williams pears."),
    Product("orange", "Orange", 45, "Sweet navel oranges, easy to peel."),
    Product("kiwi", "Kiwi", 40, "Tangy green kiwis, full of vitamin C."),
)
PRODUCTS_BY_ID: Mapping[str, Product] = {p.id: p for p in PRODUCTS}


def format_price(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def catalog_json() -> dict[str, dict[str, Any]]:
    """What the page's script needs to redraw the cart: names and prices by id."""
    return {p.id: {"name": p.name, "price_cents": p.price_cents} for p in PRODUCTS}


# -- cart ------------------------------------------------------------------------------


class InvalidItem(ValueError):
    """A cart item that cannot be accepted; the message is safe to show to the client."""


def validate_item(value: object) -> str:
    """The cart item to store for a request's ``item`` value, or ``InvalidItem``."""
    if value is None:
        raise InvalidItem("'item' is required")
    if not isinstance(value, str):
        raise InvalidItem("'item' must be a string")
    item = value.strip()
    if not item:
        raise InvalidItem("'item' must not be empty")
    if len(item) > MAX_ITEM_LENGTH:
        raise InvalidItem(f"'item' must be at most {MAX_ITEM_LENGTH} characters")
    if not item.isprintable():
        raise InvalidItem("'item' must not contain control characters")
    return item


def cart_items(value: object) -> list[str]:
    """The cart as stored in a session (anything, or missing), cleaned up for display."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


@dataclass(frozen=True, slots=True)
class CartLine:
    label: str
    quantity: int
    subtotal: str  # "" for an item that is not in the catalogue
    product_id: str = ""  # the catalogue product (its picture), "" for an item that is not in it


def cart_lines(items: Sequence[str]) -> tuple[list[CartLine], str]:
    """Items grouped by product, in order of first appearance, and the formatted total."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    lines: list[CartLine] = []
    total = 0
    for item, quantity in counts.items():
        product = PRODUCTS_BY_ID.get(item)
        if product is None:
            lines.append(CartLine(item, quantity, ""))
            continue
        total += product.price_cents * quantity
        subtotal = format_price(product.price_cents * quantity)
        lines.append(CartLine(product.name, quantity, subtotal, product.id))
    return lines, format_price(total)


# -- demo accounts ---------------------------------------------------------------------

# The demo passwords are printed on the login page, so there is nothing to hide here; a
# real shop keeps slow, salted hashes (argon2, scrypt, bcrypt) in a database instead.
DEMO_ACCOUNTS: Mapping[str, str] = {"alice": "wonderland", "bob": "builder"}

_PEPPER = secrets.token_bytes(32)


def _password_digest(password: str) -> bytes:
    return hmac.new(_PEPPER, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


_DIGESTS: Mapping[str, bytes] = {user: _password_digest(pw) for user, pw in DEMO_ACCOUNTS.items()}
_NO_SUCH_USER = _password_digest(secrets.token_urlsafe(32))  # compared against, never matched


def check_password(username: str, password: str) -> bool:
    """True for a demo account's right password.

    The same work is done whether the user exists or not (a digest comparison in constant
    time against a stand-in digest), so timing does not tell which usernames exist.
    """
    expected = _DIGESTS.get(username, _NO_SUCH_USER)
    matches = hmac.compare_digest(_password_digest(password), expected)
    return matches and username in _DIGESTS


# -- pages -----------------------------------------------------------------------------

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,  # every {{ value }} is HTML-escaped: user agents and usernames are hostile
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def new_nonce() -> str:
    """A fresh Content-Security-Policy nonce for one page."""
    return secrets.token_urlsafe(16)


def page_headers(nonce: str) -> dict[str, str]:
    """Security headers for a rendered page: only this page's own inline script and style run, and
    no cache keeps it (it shows a cart and maybe a signed-in user: after logging out, Back and a
    reload must ask the server again rather than show the signed-in page from a cache)."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def format_time(iso: str) -> str:
    """``2024-05-01T12:34:56.789+00:00`` -> ``2024-05-01 12:34:56 UTC``."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str  # the opaque id of /api/sessions, which POST /api/sessions/revoke takes
    created: str
    last_seen: str
    user_agent: str
    device: str
    current: bool


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("python-httpx/", "httpx"),
    ("python-requests/", "requests"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def device_label(user_agent: str) -> str:
    """ "Chrome on Linux" from a User-Agent header: enough to tell one's devices apart."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), "")
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or (user_agent[:40] if user_agent else "unknown device")


def session_rows(sessions: Sequence[Mapping[str, Any]]) -> list[SessionRow]:
    """Rows of the "active sessions" table from ``SessionInfo.as_dict()`` dicts."""
    return [
        SessionRow(
            str(s.get("id") or ""),
            format_time(str(s.get("created_at", ""))),
            # the store refreshes last_seen only every touch interval; this request is "now"
            "now" if s.get("current") else format_time(str(s.get("last_seen", ""))),
            str(s.get("user_agent") or ""),
            device_label(str(s.get("user_agent") or "")),
            bool(s.get("current")),
        )
        for s in sessions
    ]


LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def cookie_will_be_refused(scheme: str, host: str | None, cookie_secure: bool) -> bool:
    """Browsers drop a Secure cookie sent over plain http, except to localhost: warn on the page."""
    return cookie_secure and scheme == "http" and (host or "").lower() not in LOCAL_HOSTS


@dataclass(frozen=True, slots=True)
class Csrf:
    """What a page needs to pass session_mw's CSRF check: the session's token, and where it goes
    (the forms' hidden field, the scripts' request header; the settings ``csrf_field``, ``csrf_header``)."""

    token: str
    field: str = "csrf_token"
    header: str = "X-CSRF-Token"


def render_home(
    *,
    user: str | None,
    cart: Sequence[str],
    sessions: Sequence[Mapping[str, Any]] = (),
    elevated: bool = False,
    error: str | None = None,
    username: str = "",
    nonce: str,
    csrf: Csrf,
    cookie_warning: bool = False,
) -> str:
    """The shop's one page: catalogue and cart, plus a login form or the account panel."""
    lines, total = cart_lines(cart)
    return _env.get_template("shop.html").render(
        shop_name=SHOP_NAME,
        products=PRODUCTS,
        catalog=catalog_json(),
        user=user,
        cart_count=len(cart),
        lines=lines,
        total=total,
        sessions=session_rows(sessions),
        elevated=elevated,
        cookie_warning=cookie_warning,
        error=error,
        username=username[:MAX_USERNAME_SHOWN],
        demo_accounts=DEMO_ACCOUNTS,
        nonce=nonce,
        csrf=csrf,
    )


def shop_page(
    session: Mapping[str, Any],
    *,
    user: str | None,
    sessions: Sequence[Mapping[str, Any]],
    error: str | None = None,
    csrf: Csrf,
    username: str = "",
    cookie_warning: bool = False,
) -> tuple[str, dict[str, str]]:
    """The shop page for ``session`` and its security headers (with the page's own nonce)."""
    nonce = new_nonce()
    html = render_home(
        user=user,
        cart=cart_items(session.get("cart")),  # .get: reading must not create a session
        sessions=sessions,
        elevated="elevated_at" in session,
        error=error,
        username=username,
        nonce=nonce,
        csrf=csrf,
        cookie_warning=cookie_warning,
    )
    return html, page_headers(nonce)


# -- what the routes decide ------------------------------------------------------------

NOT_LOGGED_IN = {"error": "not logged in"}
NO_SUCH_SESSION = {"error": "no such session"}
LOGIN_FAILED = "Wrong username or password."


class ApiError(Exception):
    """A client error on a JSON route; answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- cross-site request forgery ---------------------------------------------------------

#: What the shops add to the session settings the environment gives: session_mw's CSRF check.
#: A browser's POST from another origin is refused (login CSRF included), and one that rides on
#: the session cookie must carry the session's CSRF token (the pages' forms and scripts do); a
#: client that sends neither ``Origin`` nor ``Sec-Fetch-Site`` (curl, a test, a server) is no
#: browser a forged request could come from, and is served as before.
CSRF_SETTINGS: Mapping[str, Any] = {"csrf_protect": True, "csrf_trust_plain_clients": True}


def require_json(mimetype: str) -> None:
    """A JSON route takes only ``application/json`` (which a cross-site form cannot send)."""
    if mimetype != "application/json":
        raise ApiError(415, "expected a JSON body (Content-Type: application/json)")


def check_body_size(size: int) -> None:
    """Called with the length announced or read so far: past ``MAX_JSON_BODY``, a 413."""
    if size > MAX_JSON_BODY:
        raise ApiError(413, f"request body larger than {MAX_JSON_BODY} bytes")


def session_id_of(data: dict[str, Any]) -> str:
    """The ``id`` of a revoke request (one from ``/api/sessions``), or a 404 ``ApiError``."""
    session_id = data.get("id")
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 64:
        raise ApiError(404, NO_SUCH_SESSION["error"])
    return session_id


def json_object(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``, or an ``ApiError`` (never a 500) for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def authenticate(username: object, password: object) -> str | None:
    """The user that a login form's fields sign in, or None."""
    if isinstance(username, str) and isinstance(password, str) and check_password(username, password):
        return username
    return None


def add_to_cart(session: MutableMapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Add ``data["item"]`` to the session's cart; the cart as the API shows it."""
    try:
        item = validate_item(data.get("item"))
    except InvalidItem as exc:
        raise ApiError(422, str(exc)) from None
    cart = session.get("cart")
    if not isinstance(cart, list):
        cart = session["cart"] = []
    if len(cart) >= MAX_CART_ITEMS:
        raise ApiError(422, f"the cart is full ({MAX_CART_ITEMS} items)")
    cart.append(item)  # a nested change: the session notices it and saves it
    return cart_items(cart)


def elevate(session: MutableMapping[str, Any], user: str, data: Mapping[str, Any]) -> None:
    """Mark the session elevated if ``data["password"]`` is ``user``'s; the caller then regenerates it."""
    password = data.get("password")
    if not isinstance(password, str):
        raise ApiError(422, "'password' must be a string")
    if not check_password(user, password):
        raise ApiError(403, "wrong password")
    session["elevated_at"] = time.time()
