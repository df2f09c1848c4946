"""Black-box tests of examples/flask_app.py: a real gunicorn process, driven over HTTP.

The contract tests live in ``shop_suite.ShopContract`` (shared with the FastAPI shop): each runs
against ``memory://`` (``gunicorn --workers 1 --threads 4``: a memory store is per process) and
against a real Redis (``--workers 2 --threads 4``); more servers cover an unreachable Redis and
two workers that must see each other's sessions. Below them, what only an in-process Flask app
can show.
"""

from __future__ import annotations

import httpx
import pytest

from session_mw import StoreUnavailable
from session_mw.stores.base import Op, R, RevokeAll, SessionsOf
from session_mw.stores.memory import MemoryStore
from tests.examples.shop_suite import ShopContract, ShopInputs, check_outage_inside_a_handler, hide_session_mw_env


class TestFlaskShop(ShopContract):
    kind = "flask"
    workers_on_redis = 2


class TestFlaskShopInputs(ShopInputs):
    kind = "flask"


class FlakyStore(MemoryStore):
    """A memory store whose per-user index can be switched off, as a Redis outage would."""

    down = False

    def execute(self, op: Op[R]) -> R:
        if self.down and isinstance(op, (SessionsOf, RevokeAll)):
            raise StoreUnavailable("the store is down")
        return super().execute(op)


def test_store_outage_inside_a_view_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: listing or revoking sessions hits the store from inside the view."""
    hide_session_mw_env(monkeypatch)  # before the example is imported
    from examples.flask_app import create_app
    from session_mw import SessionConfig

    store = FlakyStore()
    app = create_app(SessionConfig(cookie_secure=False, retry_after=7), store=store)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://localhost") as client:
        check_outage_inside_a_handler(client, store)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    hide_session_mw_env(monkeypatch)
    from examples.flask_app import create_app

    monkeypatch.setenv("SESSION_MW_STORE_URL", "memory://")
    monkeypatch.setenv("SESSION_MW_IDLE_TIMEOUT", "600")
    monkeypatch.setenv("SESSION_MW_ABSOLUTE_TIMEOUT", "3600")
    app = create_app()
    config = app.extensions["session_mw"].config
    assert (config.idle_timeout, config.absolute_timeout, config.store_url) == (600, 3600, "memory://")
    assert "SECRET_KEY" not in app.config or app.config["SECRET_KEY"] is None

    # SESSION_MW_COOKIE_SECURE unset: the library's default, a Secure __Host- cookie
    response = app.test_client().post("/api/cart", json={"item": "apple"})
    assert response.status_code == 200 and response.json == {"items": ["apple"]}
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-id=") and "; Secure" in cookie and "HttpOnly" in cookie

    monkeypatch.setenv("SESSION_MW_COOKIE_SECURE", "false")
    response = create_app().test_client().post("/api/cart", json={"item": "apple"})
    assert response.headers["Set-Cookie"].startswith("id=") and "Secure" not in response.headers["Set-Cookie"]

    monkeypatch.setenv("SESSION_MW_IDEL_TIMEOUT", "600")  # a typo in the environment is reported, not silent
    create_app()
    assert "unknown setting 'SESSION_MW_IDEL_TIMEOUT'" in caplog.text
