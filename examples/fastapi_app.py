# /// script
# requires-python = ">=3.10"
# dependencies = [
#     "werkzeug>=3.0",
#     "fastapi>=0.110",
#     "uvicorn>=0.29",
#     "jinja2>=3.1",
#     "python-multipart>=0.0.9",
#     "redis>=5.0",
# ]
# ///
"""A small fruit shop on FastAPI with server-side sessions from session_mw.

Run it from the repository root (session_mw itself is imported from the checkout)::

    SESSION_MW_COOKIE_SECURE=false python -m uvicorn examples.fastapi_app:app --host 127.0.0.1 --port 8000
    SESSION_MW_COOKIE_SECURE=false uv run examples/fastapi_app.py          # same, port from $PORT or 8000

then open http://127.0.0.1:8000/ and sign in as ``alice`` / ``wonderland`` or ``bob`` / ``builder``.
``SESSION_MW_COOKIE_SECURE=false`` is only for plain-http development: in production keep
the default (``true``) and serve over HTTPS.

Settings come from ``SESSION_MW_*`` environment variables (see ``SessionConfig``), e.g.::

    SESSION_MW_STORE_URL=redis://127.0.0.1:6379/0 python -m uvicorn examples.fastapi_app:app --workers 2
    SESSION_MW_IDLE_TIMEOUT=600 SESSION_MW_ABSOLUTE_TIMEOUT=3600 ...

Routes (the same as the Flask example's):

* ``GET /``: the shop page; a login form, or the account panel with the active sessions.
* ``POST /login`` (form ``username``, ``password``), ``POST /logout``.
* ``GET /api/me``; ``GET|POST /api/cart`` (JSON ``{"item": "apple"}``, works anonymously).
* ``GET /api/sessions``, ``POST /api/sessions/revoke`` (JSON ``{"id": ...}``: sign one of your devices out),
  ``POST /api/logout-everywhere``, ``POST /api/elevate`` (JSON ``{"password": ...}``).

Cross-site request forgery: session_mw's CSRF check (``csrf_protect``, turned on by the shop,
``shop_common.CSRF_SETTINGS``) refuses with a 403 a POST whose ``Origin`` or ``Sec-Fetch-Site``
says it comes from another origin (a forged login included), and a browser's POST that rides on
the session cookie without the session's CSRF token: the page's forms carry it in a hidden
``csrf_token`` field, its scripts in an ``X-CSRF-Token`` header (a repeated ``Origin`` is
refused too: the door reads repeated headers joined, as WSGI servers pass them). Behind that, the
session cookie is ``SameSite=Lax`` (session_mw's default), so browsers do not send it with
cross-site POSTs, and the JSON routes insist on a JSON content type, which a cross-site form
cannot send. The pages are
``Cache-Control: no-store``: Back after logging out asks the server again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make `examples` and the checkout's `session_mw` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from examples import shop_common as shop
from examples.shop_common import NOT_LOGGED_IN, ApiError
from session_mw import Session, SessionConfig, SessionMiddleware, session_manager
from session_mw.stores.base import AsyncStore


def _session(request: Request) -> Session:
    """``request.session``, typed as session_mw's ``Session`` (Starlette types it as a dict)."""
    session = request.session
    if not isinstance(session, Session):
        raise RuntimeError("session_mw.SessionMiddleware must be installed")
    return session


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or an ``ApiError`` (never a 500) for anything else."""
    shop.require_json(request.headers.get("content-type", "").split(";", 1)[0].strip().lower())
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        shop.check_body_size(len(body))
    return shop.json_object(bytes(body))


def _csrf(request: Request) -> shop.Csrf:
    """The session's CSRF token and where the page puts it (session_mw's settings)."""
    config: SessionConfig = request.app.state.session_config
    return shop.Csrf(_session(request).csrf_token, config.csrf_field, config.csrf_header)


async def _home_page(request: Request, *, status: int = 200, error: str | None = None, username: str = "") -> Response:
    session = _session(request)
    user = session.user_id
    sessions = [info.as_dict() for info in await session_manager(request).list()] if user else []
    config: SessionConfig = request.app.state.session_config
    warn = shop.cookie_will_be_refused(request.url.scheme, request.url.hostname, config.cookie_secure)
    html, headers = shop.shop_page(
        session, user=user, sessions=sessions, csrf=_csrf(request), error=error, username=username, cookie_warning=warn
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def create_app(config: SessionConfig | None = None, *, store: AsyncStore | None = None) -> FastAPI:
    """The shop, with session settings from ``config`` (default: the ``SESSION_MW_*`` environment)."""
    config = (config if config is not None else SessionConfig.from_env()).replace(**shop.CSRF_SETTINGS)
    app = FastAPI(title=shop.SHOP_NAME, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, config=config, store=store)
    app.state.session_config = config

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    # A StoreUnavailable raised by a handler's store call (listing, revoking) is answered by
    # the middleware with the same 503 it sends when a load or a save fails.
    app.add_exception_handler(ApiError, api_error)

    @app.get("/")
    async def home(request: Request) -> Response:
        return await _home_page(request)

    @app.post("/login")
    async def login(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=10) as form:
            username, password = form.get("username"), form.get("password")
        user = shop.authenticate(username, password)
        if user is None:
            shown = username if isinstance(username, str) else ""
            return await _home_page(request, status=401, error=shop.LOGIN_FAILED, username=shown)
        session = _session(request)
        session.user_id = user  # a new owner: session_mw moves the session to a new ID
        if "elevated_at" in session:
            del session["elevated_at"]
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        _session(request).invalidate()
        return RedirectResponse("/", status_code=303)

    @app.get("/api/me")
    async def me(request: Request) -> Response:
        user = _session(request).user_id
        return JSONResponse({"user": user}, status_code=200 if user else 401)

    @app.get("/api/cart")
    async def get_cart(request: Request) -> Response:
        return JSONResponse({"items": shop.cart_items(_session(request).get("cart"))})

    @app.post("/api/cart")
    async def add_to_cart(request: Request) -> Response:
        data = await _json_object(request)
        items = shop.add_to_cart(_session(request), data)
        # this may have started the session: the page's script takes the CSRF token that goes with it
        return JSONResponse({"items": items}, headers={_csrf(request).header: _csrf(request).token})

    @app.get("/api/sessions")
    async def sessions(request: Request) -> Response:
        if _session(request).user_id is None:
            return JSONResponse(NOT_LOGGED_IN, status_code=401)
        infos = await session_manager(request).list()
        return JSONResponse({"sessions": [info.as_dict() for info in infos]})

    @app.post("/api/sessions/revoke")
    async def revoke(request: Request) -> Response:
        if _session(request).user_id is None:
            return JSONResponse(NOT_LOGGED_IN, status_code=401)
        session_id = shop.session_id_of(await _json_object(request))
        if not await session_manager(request).revoke(session_id):  # only this user's own sessions
            return JSONResponse(shop.NO_SUCH_SESSION, status_code=404)
        return JSONResponse({"revoked": 1})

    @app.post("/api/logout-everywhere")
    async def logout_everywhere(request: Request) -> Response:
        if _session(request).user_id is None:
            return JSONResponse(NOT_LOGGED_IN, status_code=401)
        revoked = await session_manager(request).revoke_all()  # this session included
        return JSONResponse({"revoked": revoked})

    @app.post("/api/elevate")
    async def elevate(request: Request) -> Response:
        session = _session(request)
        user = session.user_id
        if user is None:
            return JSONResponse(NOT_LOGGED_IN, status_code=401)
        shop.elevate(session, user, await _json_object(request))  # or a 422, 403 ApiError
        session.regenerate()  # a change of privilege: a new session ID, the old one dies
        return JSONResponse({"elevated": True})

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
