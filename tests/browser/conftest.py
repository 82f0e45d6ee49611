"""Fixtures for real-browser tests: Debian's Chromium driven by Playwright against a live server.

Playwright's own browser download does not work on our machines, so the tests drive the
system Chromium at /usr/bin/chromium, and skip (saying why) where it or Playwright is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import get_user_model

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
OPERATOR = "operator"
OPERATOR_PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Launch headless Chromium once for all browser tests; skip them where it cannot run.

    Package-scoped rather than session-scoped: while Playwright's sync API is started it keeps
    an asyncio loop marked as running on this thread, which would make Django refuse every ORM
    call of the tests that run after these ones in the same session.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with pytest.MonkeyPatch.context() as patch:
        # The loop Playwright leaves "running" is idle whenever test code runs, so the ORM
        # calls Django would refuse here cannot block it.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()


def is_csp_violation(text: str) -> bool:
    """Say whether a console message is Chromium reporting a Content-Security-Policy refusal."""
    return "Content Security Policy" in text or "Content-Security-Policy" in text


@pytest.fixture
def csp_violations() -> list[str]:
    """The Content-Security-Policy refusals the browser reported during the test."""
    return []


@pytest.fixture
def page(browser: Browser, live_server, csp_violations) -> Iterator[Page]:
    """Return a fresh browser tab (no cookies) whose relative URLs point at the live server.

    Every test that uses it fails if the browser refused anything under the site's
    Content-Security-Policy: the policy is enforced, so a refusal is a broken page.
    """
    context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
    page = context.new_page()
    page.on(
        "console",
        lambda message: is_csp_violation(message.text) and csp_violations.append(message.text),
    )
    yield page
    context.close()
    assert csp_violations == [], "the browser refused content under the CSP"


@pytest.fixture
def staff_user(transactional_db):
    return get_user_model().objects.create_user(OPERATOR, password=OPERATOR_PASSWORD, is_staff=True)


@pytest.fixture
def log_in(page: Page, staff_user, live_server) -> Callable[[], Page]:
    """Return a function that logs the staff user in through the real login form.

    A function, not a logged-in page: the dashboard polls only while it shows live batches
    when it loads, so tests create their batches first and log in after.
    """
    from playwright.sync_api import expect

    def log_in() -> Page:
        page.goto("/admin/login/?next=/")
        page.get_by_label("Username").fill(OPERATOR)
        page.get_by_label("Password").fill(OPERATOR_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(rf"^{re.escape(live_server.url)}/$"))
        expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
        expect(page.get_by_test_id("logout")).to_be_visible()
        return page

    return log_in
