"""Helpers of the door suites: counting stores, clients, cookies."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from starlette.testclient import TestClient

from session_mw.stores import Store
from session_mw.stores.base import UNBOUNDED, Create, Delete, Load, Record, Rotate, SessionsOf, Update

IDLE, ABSOLUTE = 1000, 5000
COOKIE = "__Host-id"
_KINDS = {Load: "load", Create: "write", Update: "write", Rotate: "write", Delete: "delete"}


class Counting:
    """A real store (sync or async) with call counters in front; it still does all the work."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.calls: Counter[str] = Counter()

    def execute(self, op: Any) -> Any:
        kind = _KINDS.get(type(op))
        if kind is not None:
            self.calls[kind] += 1
        return self.inner.execute(op)


def live_keys(view: Store, user: str) -> list[str]:
    return [key for key, _ in view.execute(SessionsOf(user, UNBOUNDED))]


def stored(view: Store, key: str) -> Record | None:
    return view.execute(Load(key, UNBOUNDED))


class Clients:
    """Makes HTTP clients for the app under test, all closed at the end."""

    def __init__(self, door: str, app: Any) -> None:
        self.door, self.app = door, app
        self._open: list[httpx.Client] = []

    def new(self) -> httpx.Client:
        client: httpx.Client
        if self.door == "asgi":
            # every browser shares the first TestClient's event loop (the store's connections live there)
            first = next((c for c in self._open if isinstance(c, TestClient)), None)
            if first is None:
                client = TestClient(self.app, base_url="https://shop.test").__enter__()
            else:
                client = httpx.Client(transport=first._transport, base_url="https://shop.test")
        else:
            client = httpx.Client(transport=httpx.WSGITransport(app=self.app), base_url="https://shop.test")
        self._open.append(client)
        return client

    def close(self) -> None:
        for c in reversed(self._open):
            if isinstance(c, TestClient):
                c.__exit__(None, None, None)
            else:
                c.close()


def token_of(response: httpx.Response) -> str | None:
    header = response.headers.get("set-cookie")
    if header is None:
        return None
    return str(header.split(";", 1)[0].split("=", 1)[1])


def cookie(token: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={token}"}


def expired(response: httpx.Response) -> bool:
    return str(response.headers.get("set-cookie", "")).startswith(f"{COOKIE}=;")
