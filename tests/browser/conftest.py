"""One headless Chromium for the browser tests (Debian's, driven by Playwright), and where their
screenshots go. Without playwright or Chromium the tests are skipped, unless
``SESSION_MW_REQUIRE_BROWSER=1`` (CI), which makes that a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.support import browser_missing, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """The browser, for this package only: Playwright's sync API keeps an event loop of its own
    running, which must be gone before the rest of the suite runs its own loops."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    with sync_playwright() as playwright:
        # Playwright turns the back/forward cache off; a real browser has it, and it is what would
        # show a signed-in page again on Back after logging out if the page were not no-store
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, ignore_default_args=["--disable-back-forward-cache"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package")
def artifacts(request: pytest.FixtureRequest) -> Path:
    """The screenshots' folder: ``SESSION_MW_ARTIFACTS``, else ``artifacts/browser/`` in the checkout."""
    configured = os.environ.get("SESSION_MW_ARTIFACTS")
    folder = REPO_ROOT / "artifacts" / "browser"
    if configured:  # relative to where pytest was started
        folder = Path(request.config.invocation_params.dir, configured)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
