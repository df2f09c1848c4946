"""What the browser tests share: whether a missing browser is a failure, the shops they visit,
and a second site (another host name on this machine) that forges requests to them."""

from __future__ import annotations

import contextlib
import html
import os
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import free_port
from tests.examples.shop_suite import Kind, Shop, running_shop, store_settings

REQUIRE_BROWSER = os.environ.get("SESSION_MW_REQUIRE_BROWSER") == "1"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
COOKIE = "__Host-id"  # the library's default: Secure, so the __Host- prefix


def browser_missing(reason: str) -> NoReturn:
    """Skip, or fail when ``SESSION_MW_REQUIRE_BROWSER=1`` (CI): a browser test must never silently vanish."""
    if REQUIRE_BROWSER:
        pytest.fail(f"a browser is required (SESSION_MW_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


def chromium_path() -> str:
    path = os.environ.get("SESSION_MW_CHROMIUM") or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        browser_missing(f"there is no Chromium at {path} (apt-get install chromium, or set SESSION_MW_CHROMIUM)")
    return path


class Fleet:
    """Shops started in the background, two at a time, as the contract serves them (uvicorn;
    gunicorn ``--workers 2 --threads 4``) with the library's default cookie (``__Host-id``,
    Secure: Chromium takes it on http://127.0.0.1).

    Starting a server is mostly Python importing its app: done on the second core while the
    browser drives the shops already up, it costs the tests no time.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pool = ThreadPoolExecutor(2)
        self._stacks: dict[str, contextlib.ExitStack] = {}
        self._futures: dict[str, Future[Shop]] = {}
        self.unavailable: dict[str, str] = {}  # store -> why there is none here

    def start(self, name: str, kind: Kind, store: str, redis_url: str | None, extra: dict[str, str]) -> None:
        folder = self.folder / name
        folder.mkdir()
        settings = {**store_settings(kind, store, redis_url, folder), "SESSION_MW_COOKIE_SECURE": "true", **extra}
        stack = self._stacks[name] = contextlib.ExitStack()
        workers = 2 if kind == "flask" else 1
        self._futures[name] = self._pool.submit(
            stack.enter_context, running_shop(kind, settings, folder / "server.log", workers)
        )

    def shop(self, name: str) -> Shop:
        """The shop ``name``, once it answers (or the error that kept it from starting)."""
        return self._futures[name].result()

    def stop(self, name: str) -> None:
        """Stop one shop; its log must show no traceback."""
        future = self._futures.pop(name)
        try:
            shop = future.result()
        finally:
            self._stacks.pop(name).close()
        assert "Traceback" not in shop.log_text(), shop.log_text()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for stack in self._stacks.values():
            stack.close()


class _Forger(BaseHTTPRequestHandler):
    target = ""  # the shop's base URL

    def do_GET(self) -> None:
        shop = html.escape(self.target, quote=True)
        path, _, query = self.path.partition("?")
        # pages that post a form to the shop as soon as they load
        submit = '<script>document.getElementById("f").submit()</script>'
        if path == "/forged-logout":
            body = f'<form id="f" method="post" action="{shop}/logout"></form>{submit}'
        elif path == "/forged-login":  # login CSRF: sign the visitor in as the attacker (?username=&password=)
            fields = "".join(
                f'<input type="hidden" name="{html.escape(name, quote=True)}" value="{html.escape(value, quote=True)}">'
                for name, value in urllib.parse.parse_qsl(query)
            )
            body = f'<form id="f" method="post" action="{shop}/login">{fields}</form>{submit}'
        elif path == "/forged-cart":  # a text/plain form whose body reads as JSON: {"item": "poison", "x": "="}
            body = (
                f'<form id="f" method="post" action="{shop}/api/cart" enctype="text/plain">'
                """<input type="hidden" name='{"item": "poison", "x": "' value='"}'></form>"""
                f"{submit}"
            )
        elif path == "/link":
            body = f'<a id="go" href="{shop}/">The best fruit in town</a>'
        else:
            self.send_error(404)
            return
        data = f"<!doctype html><html><head><title>Another site</title></head><body>{body}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def forging_site(target: str) -> Iterator[int]:
    """A second web server, on another port, whose pages forge requests to ``target``; yields its port.

    Visited as ``http://localhost:PORT`` it is another *site* than a shop on ``127.0.0.1``; as
    ``http://127.0.0.1:PORT`` it is the same site (ports do not count for SameSite) but another origin.
    """
    handler = type("Forger", (_Forger,), {"target": target})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
