"""One tiny app, written once, served through each door: ASGI (Starlette), bare WSGI, Flask.

Each route is a plain function of the session and the JSON body; the doors only adapt
requests and responses, so the behaviour suite is the same for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from session_mw import Session, SessionConfig
from session_mw.engine import Engine
from session_mw.manage import SessionInfo

Handler = Callable[[Callable[[], Session], dict[str, Any]], tuple[int, Any]]


def _cart(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    return 200, {"cart": s.get("cart", []), "user": s.user_id}


def _add(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.setdefault("cart", []).append(body["item"])
    return 200, {"cart": s["cart"]}


def _login(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.user_id = body["user"]
    return 200, "ok"


def _elevate(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.regenerate()
    s["admin"] = True
    return 200, "ok"


def _logout(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.invalidate()
    return 200, "bye"


def _boom(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s["lost"] = True
    return 500, "oops"


def _remember(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s["x"] = 1
    s.remember = True
    return 200, "ok"


HOOKS: dict[str, Callable[[], None]] = {}


def _race(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.setdefault("cart", []).append(body["item"])
    HOOKS["race"]()  # the test does something concurrent here, while this request runs
    return 200, "ok"


def _slow_add(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    cart = list(s.get("cart", []))
    time.sleep(float(body.get("sleep", 0.3)))  # a slow read-modify-write: the classic lost update
    s["cart"] = [*cart, body["item"]]
    return 200, {"cart": s["cart"]}


def _plain(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    return 200, "hello"


def _race_login(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.get("cart")  # loaded before whatever the test does meanwhile
    HOOKS["race"]()
    s.user_id = body["user"]
    return 200, "ok"


def _race_regenerate(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s["admin"] = True
    HOOKS["race"]()
    s.regenerate()
    return 200, "ok"


def _clear(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    get().clear()
    return 200, "bye"


def _note(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s["note"] = body["note"]
    return 200, {"note": s["note"]}


def _whoami(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    return 200, {"user": s.user_id, "note": s.get("note"), "cart": s.get("cart", [])}


def _many(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.update({f"k{i}": i for i in range(int(body["n"]))})
    return 200, "ok"


def _store(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    """Store what the test says cannot be stored: a huge value, NaN, a lone surrogate as user."""
    s = get()
    kind = body["kind"]
    if kind == "huge":
        s["blob"] = "x" * 20_000_000
    elif kind == "nan":
        s["x"] = float("nan")
    elif kind == "deep":
        deep: list[Any] = []
        for _ in range(500):
            deep = [deep]
        s["x"] = deep
    elif kind == "user":
        s.user_id = "\ud800"
    elif kind == "key":
        s["bad\udc80key"] = 1
    return 200, "stored?"


def _logout_then_fail(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    get().invalidate()
    return 503, "try again later"


def _cached_login(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    get().user_id = body["user"]
    return 200, "ok"


def _reauth(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    get().reauthenticated()
    return 200, "ok"


def _csrf(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"csrf": get().csrf_token}


def _auth_info(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    return 200, {"user": s.user_id, "authenticated_at": s.authenticated_at, "created_at": s.created_at}


def _sensitive(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    if s.user_id is None:
        return 401, "sign in"
    if s.requires_reauth(float(body.get("max_age", 300))):
        return 403, "reauth"
    return 200, "done"


def _logout_flash(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s.clear()
    s["flash"] = "signed out"  # the usual logout: a message for the next page, in a new session
    return 200, "bye"


def _form(get: Callable[[], Session], body: dict[str, Any]) -> tuple[int, Any]:
    s = get()
    s["note"] = "from a form"  # the form's fields are not this handler's business: only that it ran
    return 200, "saved"


ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/reauth"): _reauth,
    ("GET", "/csrf"): _csrf,
    ("GET", "/auth-info"): _auth_info,
    ("POST", "/sensitive"): _sensitive,
    ("POST", "/form"): _form,
    ("POST", "/logout-flash"): _logout_flash,
    ("GET", "/cart"): _cart,
    ("POST", "/cart"): _add,
    ("POST", "/login"): _login,
    ("POST", "/elevate"): _elevate,
    ("POST", "/logout"): _logout,
    ("POST", "/boom"): _boom,
    ("POST", "/remember"): _remember,
    ("POST", "/race"): _race,
    ("POST", "/slow-add"): _slow_add,
    ("GET", "/plain"): _plain,
    ("POST", "/race-login"): _race_login,
    ("POST", "/race-regenerate"): _race_regenerate,
    ("POST", "/clear"): _clear,
    ("POST", "/note"): _note,
    ("GET", "/whoami"): _whoami,
    ("GET", "/cached-whoami"): _whoami,
    ("POST", "/many"): _many,
    ("POST", "/store"): _store,
    ("POST", "/cached-login"): _cached_login,
    ("POST", "/logout-then-fail"): _logout_then_fail,
}
# routes that need the per-user manager: name of the manager call, and how to show its result
MANAGED: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("POST", "/everywhere"): ("revoke_all", lambda n: {"revoked": n}),
    ("GET", "/sessions"): ("list", lambda infos: [i.as_dict() for i in infos]),
    ("POST", "/revoke"): ("revoke", lambda done: {"revoked": int(done)}),
}
# the same calls on the admin manager (bound to no user): the user comes in the body's "args"
ADMIN: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("POST", "/admin/everywhere"): ("revoke_all", lambda n: {"revoked": n}),
    ("POST", "/admin/sessions"): ("list", lambda infos: [i.as_dict() for i in infos]),
}
PLAIN_HEADERS = {
    "/plain": {"Cache-Control": "max-age=60"},
    "/cached-login": {"Cache-Control": "public, max-age=3600", "Vary": "Accept-Encoding"},
    "/cached-whoami": {"Cache-Control": "public, max-age=3600"},
}


def asgi_app(config: SessionConfig, store: Any, engine: Engine) -> Any:
    import anyio.to_thread
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from session_mw import SessionMiddleware, admin_session_manager, session_manager, session_of

    async def dispatch(request: Request) -> Response:
        key = (request.method, request.url.path)
        if key[1].startswith("/assets/"):  # an excluded path: served without a session
            return PlainTextResponse("body { }")
        json_body = request.headers.get("content-type", "").startswith("application/json")
        body = await request.json() if request.method == "POST" and json_body and await request.body() else {}
        if key in MANAGED:
            call, show = MANAGED[key]
            status, result = 200, show(await getattr(session_manager(request), call)(*body.get("args", [])))
        elif key in ADMIN:
            call, show = ADMIN[key]
            status, result = 200, show(await getattr(admin_session_manager(request), call)(*body.get("args", [])))
        else:
            # handlers are sync: run them in a thread so concurrent requests really overlap
            status, result = await anyio.to_thread.run_sync(ROUTES[key], lambda: session_of(request), body)
        headers = PLAIN_HEADERS.get(request.url.path)
        if isinstance(result, str):
            return PlainTextResponse(result, status, headers=headers)
        return JSONResponse(result, status, headers=headers)

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "POST"])])
    app.add_middleware(SessionMiddleware, config=config, store=store, engine=engine)
    return app


def _wsgi_handler(
    session: Callable[[], Session],
    manager: Callable[[], Any],
    method: str,
    path: str,
    body: dict[str, Any],
    admin: Callable[[], Any] | None = None,
) -> tuple[int, Any]:
    key = (method, path)
    if key in MANAGED:
        call, show = MANAGED[key]
        return 200, show(getattr(manager(), call)(*body.get("args", [])))
    if key in ADMIN and admin is not None:
        call, show = ADMIN[key]
        return 200, show(getattr(admin(), call)(*body.get("args", [])))
    return ROUTES[key](session, body)


def wsgi_app(config: SessionConfig, store: Any, engine: Engine) -> Any:
    import json

    from werkzeug.wrappers import Request, Response

    from session_mw.wsgi import WSGISessionMiddleware, admin_session_manager, session_manager, session_of

    @Request.application
    def app(request: Request) -> Response:
        if request.path.startswith("/assets/"):
            return Response("body { }")
        body = request.get_json() if request.method == "POST" and request.is_json and request.data else {}
        status, result = _wsgi_handler(
            lambda: session_of(request.environ),
            lambda: session_manager(request.environ),
            request.method,
            request.path,
            body,
            lambda: admin_session_manager(request.environ),
        )
        headers = PLAIN_HEADERS.get(request.path)
        if isinstance(result, str):
            return Response(result, status, headers=headers)
        return Response(json.dumps(result), status, headers=headers, mimetype="application/json")

    return WSGISessionMiddleware(app, config, store=store, engine=engine)


def flask_app(config: SessionConfig, store: Any, engine: Engine) -> Any:
    from flask import Flask, Response, jsonify, request

    from session_mw.contrib.flask import FlaskSessions, admin_session_manager, current_session, session_manager

    app = Flask(__name__)

    @app.route("/<path:path>", methods=["GET", "POST"])
    def dispatch(path: str) -> Any:
        if request.path.startswith("/assets/"):
            return "body { }"
        body = request.get_json() if request.method == "POST" and request.is_json and request.data else {}
        status, result = _wsgi_handler(
            current_session, session_manager, request.method, request.path, body, admin_session_manager
        )
        headers = PLAIN_HEADERS.get(request.path)
        if isinstance(result, str):
            return Response(result, status, headers=headers)
        response = jsonify(result)
        response.status_code = status
        response.headers.update(headers or {})
        return response

    FlaskSessions(app, config=config, store=store)
    ours = app.extensions["session_mw"].engine
    ours.clock = engine.clock
    ours.events = engine.events  # the test's listeners and clock
    ours.account_active = engine.account_active
    return app


DOORS: dict[str, Callable[[SessionConfig, Any, Engine], Any]] = {
    "asgi": asgi_app,
    "wsgi": wsgi_app,
    "flask": flask_app,
}
__all__ = ["DOORS", "HOOKS", "SessionInfo"]
