"""Flask-Session's own tests (tests/conftest.py, tests/test_redis.py, tests/abs_test.py), ported.

Flask-Session's test app (its five routes, ``SESSION_SERIALIZATION_FORMAT="json"``,
``SESSION_PERMANENT=False``) with ``SESSION_TYPE="redis"`` and ``SESSION_REDIS`` a client of
our private Redis, then ``FlaskSessions(app)`` instead of ``flask_session.Session(app)``.
Flask-Session's conftest sets its two keys after the test's; here the test's keys come last,
so that the ``SESSION_PERMANENT`` a test passes is the one used (as Flask-Session's
parametrized tests mean it).

Differences by design, each checked below: the store key is a digest of the cookie's token,
never the token itself (a leaked key list opens no session); ``SESSION_USE_SIGNER`` is
ignored with a warning (the token is 256 random bits: a signature adds nothing); the default
key prefix is ours, ``session_mw:``, not ``session:``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import flask
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from session_mw.contrib.flask import FlaskSessions, current_session
from session_mw.stores.base import UNBOUNDED, Load
from session_mw.stores.redis import RedisStore
from session_mw.stores.sealed import SealedStore
from session_mw.wsgi import WSGISessionMiddleware


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def create_app(config: dict[str, Any]) -> Flask:
    """Flask-Session's ``app_utils.create_app``, on FlaskSessions."""
    app = Flask(__name__)
    app.config.update(SESSION_SERIALIZATION_FORMAT="json", SESSION_PERMANENT=False)
    app.config.update(config)

    @app.route("/", methods=["GET"])
    def app_hello() -> str:
        return "hello world"

    @app.route("/set", methods=["POST"])
    def app_set() -> str:
        flask.session["value"] = flask.request.form["value"]
        return "value set"

    @app.route("/modify", methods=["POST"])
    def app_modify() -> str:
        flask.session["value"] = flask.request.form["value"]
        return "value set"

    @app.route("/delete", methods=["POST"])
    def app_del() -> str:
        del flask.session["value"]
        return "value deleted"

    @app.route("/get")
    def app_get() -> str:
        return str(flask.session.get("value", "no value set"))

    FlaskSessions(app)
    return app


def keys(r: redis.Redis, pattern: str = "*") -> set[str]:
    return {k.decode() if isinstance(k, bytes) else str(k) for k in r.keys(pattern)}


def middleware(app: Flask) -> WSGISessionMiddleware:
    mw = app.extensions["session_mw"]
    assert isinstance(mw, WSGISessionMiddleware)
    return mw


def token_of(response: Any) -> str:
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if "id=" in c)
    return str(cookie.split(";", 1)[0].split("=", 1)[1])


def stored_value(app: Flask, token: str) -> Any:
    """The session's stored ``value``, read back through the app's own store (None: no session)."""
    mw = middleware(app)
    record = mw.store.execute(Load(mw.engine.digest(token), UNBOUNDED))
    return None if record is None else json.loads(record.data["value"])


def check_session(app: Flask) -> None:
    """Flask-Session's ``app_utils.test_session``."""
    client = app.test_client()
    assert client.get("/get").data not in [b"42", b"43", b"44"]
    assert "Vary" not in client.get("/").headers
    assert client.post("/set", data={"value": "42"}).data == b"value set"
    assert client.get("/get").data == b"42"
    assert client.get("/get").headers["Vary"] == "Cookie"
    assert client.post("/modify", data={"value": "43"}).data == b"value set"
    assert client.get("/get").data == b"43"
    assert client.post("/delete").data == b"value deleted"
    assert client.get("/get").data == b"no value set"


def test_session_type_redis_uses_that_client(r: redis.Redis, key_prefix: str) -> None:
    """Flask-Session: test_redis_default's ``isinstance(flask.session, RedisSession)``: the
    session lives in the Redis that SESSION_REDIS names."""
    app = create_app({"SESSION_TYPE": "redis", "SESSION_REDIS": r, "SESSION_KEY_PREFIX": key_prefix})
    store = middleware(app).store
    assert isinstance(store, RedisStore) and store.client is r and store.prefix == key_prefix


@pytest.mark.parametrize("permanent", [True, False])
@pytest.mark.parametrize("refresh_each_request", [True, False])
def test_redis_default(r: redis.Redis, key_prefix: str, permanent: bool, refresh_each_request: bool) -> None:
    """Flask-Session: TestRedisSession.test_default (test_session, test_session_with_cookie)"""
    app = create_app(
        {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": r,
            "SESSION_KEY_PREFIX": key_prefix,
            "SESSION_PERMANENT": permanent,
            "SESSION_REFRESH_EACH_REQUEST": refresh_each_request,
        }
    )
    check_session(app)

    response = app.test_client().post("/set", data={"value": "44"})
    token = token_of(response)
    assert ("Expires" in response.headers["Set-Cookie"]) is permanent
    assert stored_value(app, token) == "44"
    # difference by design: Flask-Session stores under "session:<the cookie's value>"; ours under
    # a digest of it, so no key in Redis gives away a cookie
    written = keys(r, f"{key_prefix}*")
    assert written and not any(token in k for k in written)


def test_redis_key_prefix(r: redis.Redis, key_prefix: str) -> None:
    """Flask-Session: test_redis_key_prefix"""
    prefix = f"{key_prefix}sess-prefix:"
    app = create_app({"SESSION_TYPE": "redis", "SESSION_REDIS": r, "SESSION_KEY_PREFIX": prefix})
    before = keys(r)
    client = app.test_client()
    assert client.post("/set", data={"value": "42"}).data == b"value set"
    assert client.get("/get").data == b"42"
    new = keys(r) - before
    assert new and all(k.startswith(prefix) for k in new)


def test_redis_default_key_prefix_is_ours(r: redis.Redis) -> None:
    """Flask-Session: test_redis_default's ``session:`` keys. Difference by design: without
    SESSION_KEY_PREFIX the keys are under our default prefix, ``session_mw:``."""
    app = create_app({"SESSION_TYPE": "redis", "SESSION_REDIS": r})
    before = keys(r)
    app.test_client().post("/set", data={"value": "42"})
    new = keys(r) - before
    try:
        assert new and all(k.startswith("session_mw:") for k in new)
    finally:
        if new:
            r.delete(*new)


def test_redis_with_signer(r: redis.Redis, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """Flask-Session: test_redis_with_signer

    Difference by design: Flask-Session signs its session id with SECRET_KEY (``<sid>.<sig>``).
    Our cookie is a random token of 256 bits, unguessable by itself; SESSION_USE_SIGNER is named
    in a warning and the session works as without it.
    """
    with caplog.at_level(logging.WARNING, logger="session_mw"):
        app = create_app(
            {"SESSION_TYPE": "redis", "SESSION_REDIS": r, "SESSION_KEY_PREFIX": key_prefix, "SESSION_USE_SIGNER": True}
        )
    assert any("SESSION_USE_SIGNER" in rec.getMessage() for rec in caplog.records)
    app.secret_key = "test_key"
    client = app.test_client()
    response = client.post("/set", data={"value": "42"})
    assert response.data == b"value set" and client.get("/get").data == b"42"
    token = token_of(response)
    assert "." not in token and len(token) >= 43 and stored_value(app, token) == "42"


@pytest.mark.parametrize("permanent", [True, False])
def test_lifetime(r: redis.Redis, key_prefix: str, permanent: bool) -> None:
    """Flask-Session: ABSTestSession._test_lifetime (PERMANENT_SESSION_LIFETIME of 1 s, not 5 s)

    Flask-Session reads ``session.sid`` to see a new session after the expiry; ours has none
    (see test_session_sid), so the test compares the cookie's tokens.
    """
    app = create_app(
        {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": r,
            "SESSION_KEY_PREFIX": key_prefix,
            "SESSION_PERMANENT": permanent,
            "PERMANENT_SESSION_LIFETIME": timedelta(seconds=1),
        }
    )
    client = app.test_client()
    response = client.post("/set", data={"value": "44"})
    cookie = response.headers.getlist("Set-Cookie")[0]
    if not permanent:
        assert "Expires" not in cookie
        return
    assert "Expires" in cookie and "Max-Age=1" in cookie
    token = token_of(response)
    assert stored_value(app, token) == "44"
    time.sleep(1.2)
    assert stored_value(app, token) is None
    # the client still sends the expired cookie (Flask's test client ignores Expires): the server refuses it
    client.set_cookie("__Host-id", token)
    assert client.get("/get").data == b"no value set"
    assert token_of(client.post("/set", data={"value": "45"})) != token


def _regenerating_app(r: redis.Redis, prefix: str, regenerate: Callable[[], None]) -> tuple[Flask, FlaskClient, str]:
    """Flask-Session's app with a /regenerate view calling ``regenerate``; a session holding 42."""
    app = create_app({"SESSION_TYPE": "redis", "SESSION_REDIS": r, "SESSION_KEY_PREFIX": prefix})

    @app.post("/regenerate")
    def regenerate_view() -> str:
        regenerate()
        return "value regenerated"

    client = app.test_client()
    return app, client, token_of(client.post("/set", data={"value": "42"}))


def test_regenerate_session(r: redis.Redis, key_prefix: str) -> None:
    """Flask-Session: app_utils.test_regenerate_session (``app.session_interface.regenerate``,
    Flask-Session's documented way to get a new session id after a login)"""

    def regenerate() -> None:
        interface: Any = flask.current_app.session_interface
        interface.regenerate(flask.session)

    app, client, old = _regenerating_app(r, key_prefix, regenerate)
    response = client.post("/regenerate")
    assert response.data == b"value regenerated"
    assert token_of(response) != old and stored_value(app, old) is None
    assert client.get("/get").data == b"42"


def test_regenerate_session_our_way(r: redis.Redis, key_prefix: str) -> None:
    """Flask-Session: app_utils.test_regenerate_session, with our call for it
    (``current_session().regenerate()``): a new token, the data kept, the old token dead."""
    app, client, old = _regenerating_app(r, key_prefix, lambda: current_session().regenerate())
    response = client.post("/regenerate")
    new = token_of(response)
    assert new != old and stored_value(app, old) is None and stored_value(app, new) == "42"
    assert client.get("/get").data == b"42"


def test_session_sid(r: redis.Redis, key_prefix: str) -> None:
    """Flask-Session: ABSTestSession._test_lifetime's ``/get-session-id`` view (``session.sid``).

    Difference by design: Flask-Session's ``sid`` is the cookie's value, a bearer credential;
    ours never shows the token to the app. ``session.sid`` is the session's opaque public id
    (the one ``session_manager().list()`` shows), stable across requests, changed by a login.
    """
    app = create_app({"SESSION_TYPE": "redis", "SESSION_REDIS": r, "SESSION_KEY_PREFIX": key_prefix})

    @app.get("/get-session-id")
    def get_session_id() -> str:
        return str(flask.session.sid)  # type: ignore[attr-defined]

    client = app.test_client()
    token = token_of(client.post("/set", data={"value": "44"}))
    first = client.get("/get-session-id")
    assert first.status_code == 200 and first.data and first.data != b"None"
    assert client.get("/get-session-id").data == first.data
    assert token is not None and token.encode() not in first.data


def test_session_type_redis_is_sealed_too_when_encryption_is_on(r: redis.Redis, key_prefix: str) -> None:
    """Not Flask-Session's: with SESSION_MW_ENCRYPTION_KEYS, the SESSION_REDIS client's store seals values."""
    app = create_app(
        {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS": r,
            "SESSION_KEY_PREFIX": key_prefix,
            "SESSION_MW_ENCRYPTION_KEYS": "k" * 32,
        }
    )
    store = middleware(app).store
    assert isinstance(store, SealedStore) and isinstance(store.inner, RedisStore) and store.inner.client is r
    response = app.test_client().post("/set", data={"value": "44"})
    assert token_of(response)
    raw = [v for key in r.scan_iter(f"{key_prefix}s:*") for f, v in r.hgetall(key).items() if f.startswith(b"k:")]
    assert raw and all(value.startswith(b"\xfe") and b"44" not in value for value in raw)
