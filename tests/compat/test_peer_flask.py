"""Flask's own session tests (tests/test_basic.py, tests/test_testing.py), ported to FlaskSessions.

The app is Flask's test app (``TESTING``, ``SECRET_KEY="test key"``) with the ``app.config``
keys each Flask test sets, then ``FlaskSessions(app)``, on a real SQLite file (the default
store, under the test's own working directory). The extension reads ``app.config`` once, in
``init_app``, as Flask extensions do; where Flask's test changes a key between requests, the
port builds one app per value. What ``flask.session`` holds across requests must be what
Flask gives; where the cookie differs by design the test says so and checks ours.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import flask
import pytest
from flask import Flask
from flask.globals import request_ctx
from flask.testing import FlaskClient
from markupsafe import Markup
from werkzeug.http import parse_date

from session_mw import ConfigError
from session_mw.contrib.flask import FlaskSession, FlaskSessions


def make_app(**config: Any) -> Flask:
    """Flask's ``app`` fixture, with the keys a test sets before the extension reads them."""
    app = Flask("flask_test")
    app.config.update(TESTING=True, SECRET_KEY="test key")
    app.config.update(config)
    FlaskSessions(app)
    return app


def set_cookie(response: Any) -> str:
    return str(response.headers.get("Set-Cookie", ""))


def _session() -> FlaskSession:
    """The request's session without going through ``flask.session``, which (Flask >= 3.1.3) marks
    it accessed: Flask's test reads the private ``_session`` too."""
    obj = request_ctx._session
    assert isinstance(obj, FlaskSession)
    return obj


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- tests/test_basic.py -----------------------------------------------------------------


def test_session_accessed(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_accessed (its flags read after each request, in the kept context)"""

    @app.post("/")
    def do_set() -> str:
        flask.session["value"] = flask.request.form["value"]
        return "value set"

    @app.get("/")
    def do_get() -> str:
        return str(flask.session.get("value", "None"))

    @app.get("/nothing")
    def do_nothing() -> str:
        return ""

    with client:
        rv = client.get("/nothing")
        assert "cookie" not in rv.vary
        assert not _session().accessed and not _session().modified

    with client:
        rv = client.post(data={"value": "42"})
        assert rv.text == "value set" and "cookie" in rv.vary
        assert _session().accessed and _session().modified

    with client:
        rv = client.get()
        assert rv.text == "42" and "cookie" in rv.vary
        assert _session().accessed and not _session().modified

    with client:
        rv = client.get("/nothing")
        assert rv.text == "" and "cookie" not in rv.vary
        assert not _session().accessed and not _session().modified


def _write_testing(app: Flask) -> None:
    @app.route("/")
    def index() -> str:
        flask.session["testing"] = 42
        return "Hello World"


def test_session_path() -> None:
    """Flask: test_session_path"""
    app = make_app(APPLICATION_ROOT="/foo")
    _write_testing(app)
    rv = app.test_client().get("/", "http://example.com:8080/foo")
    assert "path=/foo" in rv.headers["set-cookie"].lower()


def test_session_using_application_root() -> None:
    """Flask: test_session_using_application_root"""
    app = make_app(APPLICATION_ROOT="/bar")
    inner = app.wsgi_app

    def with_prefix(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = "/bar"
        return inner(environ, start_response)

    app.wsgi_app = with_prefix  # type: ignore[method-assign]
    _write_testing(app)
    rv = app.test_client().get("/", "http://example.com:8080/")
    assert "path=/bar" in rv.headers["set-cookie"].lower()


def test_session_using_session_settings() -> None:
    """Flask: test_session_using_session_settings

    Difference by design: ``SESSION_COOKIE_HTTPONLY=False`` is ignored, the cookie is always
    HttpOnly (scripts have no use for an opaque token, and it keeps XSS from stealing it).
    """
    app = make_app(
        SERVER_NAME="www.example.com:8080",
        APPLICATION_ROOT="/test",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_PARTITIONED=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
    )
    _write_testing(app)

    @app.route("/clear")
    def clear() -> str:
        flask.session.pop("testing", None)
        return "Goodbye World"

    client = app.test_client()
    cookie = client.get("/", "http://www.example.com:8080/test/").headers["set-cookie"].lower()
    assert "domain=example.com" in cookie and "path=/" in cookie and "secure" in cookie
    assert "samesite" in cookie and "partitioned" in cookie
    assert "httponly" in cookie  # Flask's test: not in cookie

    cookie = client.get("/clear", "http://www.example.com:8080/test/").headers["set-cookie"].lower()
    assert "__secure-id=;" in cookie  # our generic cookie name (#11), not Flask's "session"
    assert "domain=example.com" in cookie and "path=/" in cookie and "secure" in cookie
    assert "samesite" in cookie and "partitioned" in cookie


def test_session_using_samesite_attribute() -> None:
    """Flask: test_session_using_samesite_attribute

    Flask raises ``ValueError`` for an invalid value at the first request; ours is a
    ``ConfigError`` (a ``ValueError``) when the extension reads the settings. Difference by
    design: ``SESSION_COOKIE_SAMESITE=None`` (Flask's default) keeps our Lax, as Flask's defaults
    never weaken ours; Flask sends no SameSite then.
    """
    with pytest.raises(ValueError, match="cookie_samesite"):
        make_app(SESSION_COOKIE_SAMESITE="invalid")
    assert issubclass(ConfigError, ValueError)

    for given, expected in ((None, "samesite=lax"), ("Strict", "samesite=strict"), ("Lax", "samesite=lax")):
        app = make_app(SESSION_COOKIE_SAMESITE=given)
        _write_testing(app)
        assert expected in app.test_client().get("/").headers["set-cookie"].lower()


def test_missing_session() -> None:
    """Flask: test_missing_session

    Difference by design: Flask's cookie session needs ``SECRET_KEY`` and without it the session
    is read-only ("session is unavailable"). Ours signs nothing, so it works without one.
    """
    app = make_app(SECRET_KEY=None)
    with app.test_request_context():
        assert flask.session.get("missing_key") is None
        flask.session["foo"] = 42
        assert flask.session.pop("foo") == 42


def test_session_secret_key_fallbacks(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_secret_key_fallbacks

    Difference by design: the cookie is a random token, not data signed with ``SECRET_KEY``, so
    changing or rotating the key never changes the session (Flask's loses it under an unknown key).
    """

    @app.post("/")
    def set_session() -> str:
        flask.session["a"] = 1
        return ""

    @app.get("/")
    def get_session() -> dict[str, Any]:
        return dict(flask.session)

    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = "0 key", ["-1 key", "-2 key"]
    client.post()
    assert client.get().json == {"a": 1}
    app.secret_key = "? key"
    assert client.get().json == {"a": 1}  # Flask's test: {}
    app.secret_key, app.config["SECRET_KEY_FALLBACKS"] = "+1 key", ["0 key", "-1 key"]
    assert client.get().json == {"a": 1}


def _expiration_app(lifetime: timedelta | None) -> tuple[Flask, Callable[[bool], None]]:
    app = make_app() if lifetime is None else make_app(PERMANENT_SESSION_LIFETIME=lifetime)
    permanent = [True]

    @app.route("/")
    def index() -> str:
        flask.session["test"] = 42
        flask.session.permanent = permanent[0]
        return ""

    @app.route("/test")
    def test() -> str:
        return str(flask.session.permanent)

    def set_permanent(value: bool) -> None:
        permanent[0] = value

    return app, set_permanent


def _expires(response: Any) -> datetime:
    match = re.search(r"(?i)\bexpires=([^;]+)", response.headers["set-cookie"])
    assert match is not None
    parsed = parse_date(match[1])
    assert parsed is not None
    return parsed


def test_session_expiration() -> None:
    """Flask: test_session_expiration, with PERMANENT_SESSION_LIFETIME set (3 days): the same dates"""
    app, set_permanent = _expiration_app(timedelta(days=3))
    client = app.test_client()
    rv = client.get("/")
    expected = datetime.now(timezone.utc) + app.permanent_session_lifetime
    assert abs(_expires(rv) - expected) < timedelta(seconds=5)
    assert client.get("/test").data == b"True"

    set_permanent(False)
    rv = client.get("/")
    assert "set-cookie" in rv.headers
    assert re.search(r"\bexpires=([^;]+)", rv.headers["set-cookie"]) is None


def test_session_expiration_with_flasks_default_lifetime() -> None:
    """Flask: test_session_expiration, as written (Flask's default lifetime, 31 days)

    Difference by design: Flask's 31-day default is not taken over (README: the key counts only
    when the app changed it); a permanent session lasts our absolute timeout, 8 hours.
    """
    app, set_permanent = _expiration_app(None)
    client = app.test_client()
    expected = datetime.now(timezone.utc) + timedelta(hours=8)
    assert abs(_expires(client.get("/")) - expected) < timedelta(seconds=5)
    assert client.get("/test").data == b"True"
    set_permanent(False)
    rv = client.get("/")
    assert "set-cookie" in rv.headers and "expires" not in rv.headers["set-cookie"].lower()


def test_session_stored_last(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_stored_last"""

    @app.after_request
    def modify_session(response: flask.Response) -> flask.Response:
        flask.session["foo"] = 42
        return response

    @app.route("/")
    def dump_session_contents() -> str:
        return repr(flask.session.get("foo"))

    assert client.get("/").data == b"None"
    assert client.get("/").data == b"42"


def test_session_special_types(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_special_types (also read back by the next request, from the store)"""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    the_uuid = uuid.uuid4()

    @app.route("/")
    def dump_session_contents() -> tuple[str, int]:
        flask.session["t"] = (1, 2, 3)
        flask.session["b"] = b"\xff"
        flask.session["m"] = Markup("<html>")
        flask.session["u"] = the_uuid
        flask.session["d"] = now
        flask.session["t_tag"] = {" t": "not-a-tuple"}
        flask.session["di_t_tag"] = {" t__": "not-a-tuple"}
        flask.session["di_tag"] = {" di": "not-a-dict"}
        return "", 204

    @app.route("/read")
    def read() -> tuple[str, int]:
        return "", 204

    def check(s: Any) -> None:
        assert s["t"] == (1, 2, 3)
        assert type(s["b"]) is bytes and s["b"] == b"\xff"
        assert type(s["m"]) is Markup and s["m"] == Markup("<html>")
        assert s["u"] == the_uuid
        assert s["d"] == now
        assert s["t_tag"] == {" t": "not-a-tuple"}
        assert s["di_t_tag"] == {" t__": "not-a-tuple"}
        assert s["di_tag"] == {" di": "not-a-dict"}

    with client:
        client.get("/")
        check(flask.session)
    with client:
        client.get("/read")
        check(flask.session)


@pytest.mark.parametrize(
    ("is_permanent", "refresh", "flask_expects_header"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_session_cookie_setting(
    is_permanent: bool, refresh: bool, flask_expects_header: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask: test_session_cookie_setting

    Difference by design, in Flask's first case only (permanent, ``SESSION_REFRESH_EACH_REQUEST``):
    Flask re-sends the cookie on a request that only reads the session, to slide its expiry.
    Ours never rewrites on a read: the idle expiry slides on the server (throttled touches) and
    the cookie already lasts to the absolute deadline; the key is named in a warning.
    """
    with caplog.at_level(logging.WARNING, logger="session_mw"):
        app = make_app(SESSION_REFRESH_EACH_REQUEST=refresh)
    warned = any("SESSION_REFRESH_EACH_REQUEST" in r.getMessage() for r in caplog.records)
    assert warned is (not refresh)  # Flask's default (True) is in every app's config: no warning

    @app.route("/bump")
    def bump() -> str:
        rv = flask.session["foo"] = flask.session.get("foo", 0) + 1
        flask.session.permanent = is_permanent
        return str(rv)

    @app.route("/read")
    def read() -> str:
        return str(flask.session.get("foo", 0))

    with app.test_client() as c:
        assert c.get("/bump").data == b"1"
        assert c.get("/bump").data == b"2"
        assert c.get("/bump").data == b"3"
        rv = c.get("/read")
        assert rv.headers.get("set-cookie") is None  # Flask: present iff flask_expects_header
        assert rv.data == b"3"


def test_flasks_default_config_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Flask: the ``app`` fixture of every session test (Flask's defaults, nothing set by the app).

    ``SESSION_REFRESH_EACH_REQUEST`` is in Flask's default config (True): only a value the app
    changed is named in a warning.
    """
    with caplog.at_level(logging.WARNING, logger="session_mw"):
        make_app()
    assert [r.getMessage() for r in caplog.records] == []


def test_session_vary_cookie(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_vary_cookie"""

    @app.route("/set")
    def set_session() -> str:
        flask.session["test"] = "test"
        return ""

    @app.route("/get")
    def get() -> str:
        return str(flask.session.get("test"))

    @app.route("/getitem")
    def getitem() -> str:
        return str(flask.session["test"])

    @app.route("/setdefault")
    def setdefault() -> str:
        return str(flask.session.setdefault("test", "default"))

    @app.route("/clear")
    def clear() -> str:
        flask.session.clear()
        return ""

    @app.route("/vary-cookie-header-set")
    def vary_cookie_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.add("Cookie")
        flask.session["test"] = "test"
        return response

    @app.route("/vary-header-set")
    def vary_header_set() -> flask.Response:
        response = flask.Response()
        response.vary.update(("Accept-Encoding", "Accept-Language"))
        flask.session["test"] = "test"
        return response

    @app.route("/no-vary-header")
    def no_vary_header() -> str:
        return ""

    def expect(path: str, header_value: str | None = "Cookie") -> None:
        rv = client.get(path)
        if header_value:
            assert len(rv.headers.get_all("Vary")) == 1  # once only
            assert rv.headers["Vary"] == header_value
        else:
            assert "Vary" not in rv.headers

    expect("/set")
    expect("/get")
    expect("/getitem")
    expect("/setdefault")
    expect("/clear")
    expect("/vary-cookie-header-set")
    expect("/vary-header-set", "Accept-Encoding, Accept-Language, Cookie")
    expect("/no-vary-header", None)


def test_session_refresh_vary(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_refresh_vary

    Difference by design (no refresh on reads, see test_session_cookie_setting): Flask re-sends
    the permanent cookie on /ignored and so adds ``Vary: Cookie``; ours sends no cookie there and
    the response does not depend on the session, so it carries neither.
    """

    @app.get("/login")
    def login() -> str:
        flask.session["user_id"] = 1
        flask.session.permanent = True
        return ""

    @app.get("/ignored")
    def ignored() -> str:
        return ""

    assert client.get("/login").headers["Vary"] == "Cookie"
    rv = client.get("/ignored")
    assert "Vary" not in rv.headers and "Set-Cookie" not in rv.headers  # Flask's test: Vary: Cookie


def test_flashes(app: Flask) -> None:
    """Flask: test_flashes"""
    with app.test_request_context():
        assert not flask.session.modified
        flask.flash("Zap")
        flask.session.modified = False
        flask.flash("Zip")
        assert flask.session.modified
        assert list(flask.get_flashed_messages()) == ["Zap", "Zip"]


def test_extended_flashing(app: Flask) -> None:
    """Flask: test_extended_flashing (the views return what Flask's views assert on)"""

    @app.route("/")
    def index() -> str:
        flask.flash("Hello World")
        flask.flash("Hello World", "error")
        flask.flash(Markup("<em>Testing</em>"), "warning")
        return ""

    def shown(messages: list[Any]) -> list[Any]:
        return [[type(m).__name__, *m] if isinstance(m, tuple) else [type(m).__name__, m] for m in messages]

    @app.route("/test/")
    def test() -> Any:
        return shown(list(flask.get_flashed_messages()))

    @app.route("/test_with_categories/")
    def test_with_categories() -> Any:
        pairs = cast(list[tuple[str, Any]], flask.get_flashed_messages(with_categories=True))
        return [[c, type(m).__name__, m] for c, m in pairs]

    @app.route("/test_filter/")
    def test_filter() -> Any:
        return [list(p) for p in flask.get_flashed_messages(category_filter=["message"], with_categories=True)]

    @app.route("/test_filters/")
    def test_filters() -> Any:
        pairs = cast(
            list[tuple[str, Any]],
            flask.get_flashed_messages(category_filter=["message", "warning"], with_categories=True),
        )
        return [[c, type(m).__name__, m] for c, m in pairs]

    @app.route("/test_filters_without_returning_categories/")
    def test_filters2() -> Any:
        return shown(list(flask.get_flashed_messages(category_filter=["message", "warning"])))

    def flashed_then(path: str) -> Any:
        client = app.test_client()  # a new client each time: a fresh session
        client.get("/")
        return client.get(path).json

    assert flashed_then("/test/") == [["str", "Hello World"], ["str", "Hello World"], ["Markup", "<em>Testing</em>"]]
    assert flashed_then("/test_with_categories/") == [
        ["message", "str", "Hello World"],
        ["error", "str", "Hello World"],
        ["warning", "Markup", "<em>Testing</em>"],
    ]
    assert flashed_then("/test_filter/") == [["message", "Hello World"]]
    assert flashed_then("/test_filters/") == [
        ["message", "str", "Hello World"],
        ["warning", "Markup", "<em>Testing</em>"],
    ]
    assert flashed_then("/test_filters_without_returning_categories/") == [
        ["str", "Hello World"],
        ["Markup", "<em>Testing</em>"],
    ]


def test_request_processing(app: Flask, client: FlaskClient) -> None:
    """Flask: test_request_processing (hooks run in order around the view, inside the middleware;
    here they also use the session, which the next request sees)"""
    evts: list[str] = []

    @app.before_request
    def before_request() -> None:
        evts.append("before")
        flask.session["seen"] = flask.session.get("seen", 0) + 1

    @app.after_request
    def after_request(response: flask.Response) -> flask.Response:
        response.data += b"|after"
        evts.append("after")
        return response

    @app.route("/")
    def index() -> str:
        assert "before" in evts and "after" not in evts
        return f"request {flask.session['seen']}"

    assert "after" not in evts
    assert client.get("/").data == b"request 1|after"
    assert "after" in evts
    evts.clear()
    assert client.get("/").data == b"request 2|after"


# -- tests/test_testing.py ---------------------------------------------------------------


def test_redirect_session(app: Flask, client: FlaskClient) -> None:
    """Flask: test_redirect_session"""

    @app.route("/redirect")
    def index() -> Any:
        flask.session["redirect"] = True
        return flask.redirect("/target")

    @app.route("/target")
    def get_session() -> str:
        flask.session["target"] = True
        return ""

    with client:
        client.get("/redirect", follow_redirects=True)
        assert flask.session["redirect"] is True
        assert flask.session["target"] is True


def test_session_transactions(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_transactions"""

    @app.route("/")
    def index() -> str:
        return str(flask.session["foo"])

    with client:
        with client.session_transaction() as sess:
            assert len(sess) == 0
            sess["foo"] = [42]
            assert len(sess) == 1
        assert client.get("/").data == b"[42]"
        with client.session_transaction() as sess:
            assert len(sess) == 1
            assert sess["foo"] == [42]


def test_session_transactions_no_null_sessions() -> None:
    """Flask: test_session_transactions_no_null_sessions

    Difference by design: a bare Flask app (no secret key) has a null session, and
    ``session_transaction()`` refuses it; with FlaskSessions the session opens without a key.
    """
    plain = Flask(__name__)
    with (
        plain.test_client() as c,
        pytest.raises(RuntimeError, match="Session backend did not open a session"),
        c.session_transaction(),
    ):
        pass
    app = make_app(SECRET_KEY=None)
    with app.test_client() as c:
        with c.session_transaction() as sess:
            sess["foo"] = "bar"
        with c.session_transaction() as sess:
            assert sess["foo"] == "bar"


def test_session_transactions_keep_context(app: Flask, client: FlaskClient) -> None:
    """Flask: test_session_transactions_keep_context"""
    with app.test_request_context():
        client.get("/")
        req = flask.request._get_current_object()  # type: ignore[attr-defined]
        assert req is not None
        with client.session_transaction():
            assert req is flask.request._get_current_object()  # type: ignore[attr-defined]


def test_session_transaction_needs_cookies(app: Flask) -> None:
    """Flask: test_session_transaction_needs_cookies"""
    c = app.test_client(use_cookies=False)
    with pytest.raises(TypeError, match=r"Cookies are disabled\."), c.session_transaction():
        pass
