"""Black-box tests of examples/fastapi_app.py: a real uvicorn process, driven over HTTP.

The contract tests live in ``shop_suite.ShopContract`` (shared with the Flask shop): each runs
against ``memory://`` and against a real Redis; more servers cover an unreachable Redis and
``uvicorn --workers 2``. Below them, what only an in-process FastAPI app can show.
"""

from __future__ import annotations

import pytest

from tests.examples.shop_suite import ShopContract, ShopInputs, check_outage_inside_a_handler, hide_session_mw_env


class TestFastAPIShop(ShopContract):
    kind = "fastapi"


class TestFastAPIShopInputs(ShopInputs):
    kind = "fastapi"


def test_store_outage_inside_a_handler_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: listing or revoking sessions hits the store from inside the handler."""
    hide_session_mw_env(monkeypatch)  # before the example is imported
    from starlette.testclient import TestClient

    from examples.fastapi_app import create_app
    from session_mw import SessionConfig, StoreUnavailable
    from session_mw.stores.base import Op, R, RevokeAll, SessionsOf
    from session_mw.stores.memory import MemoryStore
    from session_mw.stores.threaded import AsyncFromSync

    class Flaky(AsyncFromSync):
        down = False

        async def execute(self, op: Op[R]) -> R:
            if self.down and isinstance(op, (SessionsOf, RevokeAll)):
                raise StoreUnavailable("the store is down")
            return await super().execute(op)

    store = Flaky(MemoryStore(), offload=False)
    app = create_app(SessionConfig(cookie_secure=False, retry_after=7), store=store)
    with TestClient(app, follow_redirects=False) as client:
        check_outage_inside_a_handler(client, store)
