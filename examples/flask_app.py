# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "flask>=3.0",
#     "gunicorn>=22.0",
#     "jinja2>=3.1",
#     "redis>=5.0",
# ]
# ///
"""A small fruit shop on Flask with server-side sessions from session_mw.

Run it from the repository root (session_mw itself is imported from the checkout)::

    export SESSION_MW_COOKIE_SECURE=false
    python -m gunicorn --workers 2 --threads 4 --bind 127.0.0.1:8000 examples.flask_app:app
    uv run examples/flask_app.py        # or Flask's development server; port from $PORT or 8000

then open http://127.0.0.1:8000/ and sign in as ``alice`` / ``wonderland`` or ``bob`` / ``builder``.
``SESSION_MW_COOKIE_SECURE=false`` is only for plain-http development: in production keep
the default (``true``) and serve over HTTPS. Keep ``--threads``: a browser's speculative
pre-connections would otherwise block a single-threaded worker.

Settings come from ``SESSION_MW_*`` environment variables, copied into ``app.config`` (where
``FlaskSessions`` reads them, see ``config_from_flask``); the memory store lives inside one
process, so use a shared store with several workers, e.g.::

    SESSION_MW_STORE_URL=redis://127.0.0.1:6379/0 python -m gunicorn --workers 4 --threads 4 examples.flask_app:app
    SESSION_MW_STORE_URL=memory:// python -m gunicorn --workers 1 --threads 4 examples.flask_app:app

Routes (the same as the FastAPI example's):

* ``GET /``: the shop page; a login form, or the account panel with the active sessions.
* ``POST /login`` (form ``username``, ``password``), ``POST /logout``.
* ``GET /api/me``; ``GET|POST /api/cart`` (JSON ``{"item": "apple"}``, works anonymously).
* ``GET /api/sessions``, ``POST /api/sessions/revoke`` (JSON ``{"id": ...}``: sign one of your devices out),
  ``POST /api/logout-everywhere``, ``POST /api/elevate`` (JSON ``{"password": ...}``).

``flask.session`` is the server-side session (no ``SECRET_KEY``: nothing is signed, the cookie
is a random token); ``current_session()`` is the same object, typed, for ``user_id``,
``regenerate()`` and ``invalidate()``.

Cross-site request forgery: session_mw's CSRF check (``csrf_protect``, turned on by the shop,
``shop_common.CSRF_SETTINGS``) refuses with a 403 a POST whose ``Origin`` or ``Sec-Fetch-Site``
says it comes from another origin (a forged login included), and a browser's POST that rides on
the session cookie without the session's CSRF token: the page's forms carry it in a hidden
``csrf_token`` field, its scripts in an ``X-CSRF-Token`` header. Behind that, the session cookie
is ``SameSite=Lax`` (session_mw's default), so browsers do not send it with cross-site POSTs, and
the JSON routes insist on a JSON content type, which a cross-site form cannot send. The pages are
``Cache-Control: no-store``: Back after logging out asks the server again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `examples` and the checkout's `session_mw` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask, Response, current_app, jsonify, redirect, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from examples import shop_common as shop
from examples.shop_common import MAX_JSON_BODY, NOT_LOGGED_IN, ApiError
from session_mw import SessionConfig
from session_mw.contrib.flask import FlaskSessions, config_from_flask, current_session, session_manager
from session_mw.stores.base import Store

MAX_FORM_BYTES = 16 * 1024  # the login form is two short fields


def _json_object() -> dict[str, Any]:
    """The request's JSON object body, or an ``ApiError`` (never a 500) for anything else."""
    shop.require_json(request.mimetype)
    shop.check_body_size(request.content_length or 0)
    body = bytearray()
    while chunk := request.stream.read(MAX_JSON_BODY + 1):  # bounded even for a chunked body
        body += chunk
        shop.check_body_size(len(body))
    return shop.json_object(bytes(body))


def _not_logged_in() -> tuple[Response, int]:
    return jsonify(NOT_LOGGED_IN), 401


def _csrf() -> shop.Csrf:
    """The session's CSRF token and where the page puts it (session_mw's settings)."""
    config: SessionConfig = current_app.extensions["session_mw"].config
    return shop.Csrf(current_session().csrf_token, config.csrf_field, config.csrf_header)


def _home_page(*, status: int = 200, error: str | None = None, username: str = "") -> Response:
    user = current_session().user_id
    sessions = [info.as_dict() for info in session_manager().list()] if user else []
    secure = current_app.extensions["session_mw"].config.cookie_secure
    warn = shop.cookie_will_be_refused(request.scheme, request.host.rsplit(":", 1)[0], secure)
    html, headers = shop.shop_page(
        session, user=user, sessions=sessions, csrf=_csrf(), error=error, username=username, cookie_warning=warn
    )
    return Response(html, status=status, headers=headers, mimetype="text/html")


def create_app(config: SessionConfig | None = None, *, store: Store | None = None) -> Flask:
    """The shop, with session settings from ``config`` (default: the ``SESSION_MW_*`` environment)."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_FORM_BYTES, MAX_FORM_MEMORY_SIZE=MAX_FORM_BYTES, MAX_FORM_PARTS=10)
    # With no config, SESSION_MW_* settings come from app.config and then from the environment;
    # the shop adds session_mw's CSRF check to them.
    config = (config if config is not None else config_from_flask(app.config)).replace(**shop.CSRF_SETTINGS)
    FlaskSessions(app, config=config, store=store)  # also answers StoreUnavailable with a 503

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> BaseResponse:
        response = exc.get_response()  # Flask's own short HTML page (never a traceback: debug stays off)
        if request.path.startswith("/api/"):  # ... or JSON, for the API
            response.set_data(json.dumps({"error": exc.description}))
            response.mimetype = "application/json"
        return response

    @app.get("/")
    def home() -> Response:
        return _home_page()

    @app.post("/login")
    def login() -> BaseResponse:
        username, password = request.form.get("username"), request.form.get("password")
        user = shop.authenticate(username, password)
        if user is None:
            return _home_page(status=401, error=shop.LOGIN_FAILED, username=username or "")
        current_session().user_id = user  # a new owner: session_mw moves the session to a new ID
        session.pop("elevated_at", None)
        return redirect(url_for("home"), 303)

    @app.post("/logout")
    def logout() -> BaseResponse:
        current_session().invalidate()
        return redirect(url_for("home"), 303)

    @app.get("/api/me")
    def me() -> tuple[Response, int]:
        user = current_session().user_id
        return jsonify(user=user), 200 if user else 401

    @app.get("/api/cart")
    def get_cart() -> Response:
        return jsonify(items=shop.cart_items(session.get("cart")))

    @app.post("/api/cart")
    def add_to_cart() -> Response:
        response = jsonify(items=shop.add_to_cart(session, _json_object()))
        csrf = _csrf()  # this may have started the session: the page's script takes the token that goes with it
        response.headers[csrf.header] = csrf.token
        return response

    @app.get("/api/sessions")
    def sessions() -> Response | tuple[Response, int]:
        if current_session().user_id is None:
            return _not_logged_in()
        return jsonify(sessions=[info.as_dict() for info in session_manager().list()])

    @app.post("/api/sessions/revoke")
    def revoke() -> Response | tuple[Response, int]:
        if current_session().user_id is None:
            return _not_logged_in()
        if not session_manager().revoke(shop.session_id_of(_json_object())):  # only this user's own sessions
            return jsonify(shop.NO_SUCH_SESSION), 404
        return jsonify(revoked=1)

    @app.post("/api/logout-everywhere")
    def logout_everywhere() -> Response | tuple[Response, int]:
        if current_session().user_id is None:
            return _not_logged_in()
        return jsonify(revoked=session_manager().revoke_all())  # this session included

    @app.post("/api/elevate")
    def elevate() -> Response | tuple[Response, int]:
        user = current_session().user_id
        if user is None:
            return _not_logged_in()
        shop.elevate(session, user, _json_object())  # or a 422, 403 ApiError
        current_session().regenerate()  # a change of privilege: a new session ID, the old one dies
        return jsonify(elevated=True)

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True)
