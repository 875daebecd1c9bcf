"""Headless Chromium (Debian's `chromium` package) driven by Playwright, against a real local stack.

Playwright cannot download its own browser here, so it launches the system one. A missing
Chromium fails the tests with the line that installs it: skipping would hide a broken set-up.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, ViewportSize, sync_playwright

from prreview.config import load_settings
from serve_app.client import client_api_key

CHROMIUM = os.environ.get("PR_REVIEW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
VIEWPORT: ViewportSize = {"width": 1100, "height": 900}
TIMEOUT_MS = 60_000  # the machine is shared with other test runs: generous, but bounded
KEY_STORAGE = "pr-review.api-key"  # where the page keeps the key its form was given (static/auth.js)
_CSP_REPORT = re.compile(r"Content[ -]Security[ -]Policy", re.I)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}; the browser tests need it. Install it with "
                    "`apt-get update && apt-get install -y chromium` (scripts/install.sh does), or point "
                    "PR_REVIEW_CHROMIUM at a Chromium executable.", pytrace=False)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
    yield browser
    browser.close()


@dataclass
class PageProblems:
    """What the page reported that a test should never see: script errors and CSP violations."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if _CSP_REPORT.search(message.text):
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def api_key(request: pytest.FixtureRequest) -> str | None:
    """The key the page's tab starts with, as if typed into its key form: for a test that uses the
    test stack, the key the local CLI would send it (PR_REVIEW_API_KEY, else the stack's key
    file), if any. Parametrize `api_key` to start with another one, or none."""
    if "stack" not in request.fixturenames:
        return None
    request.getfixturevalue("stack")  # its environment names the key
    return client_api_key(load_settings())


@pytest.fixture
def page(chromium: Browser, artifacts: Path, request: pytest.FixtureRequest, api_key: str | None) -> Iterator[Page]:
    """A fresh browser context per test; its last view is saved as a screenshot, and any script
    error or CSP violation fails the test."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    if api_key:
        context.add_init_script(script=f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(api_key)});")
    page = context.new_page()
    problems = PageProblems()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    yield page
    try:
        page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not problems.errors, "the page reported problems:\n" + "\n".join(problems.errors)
