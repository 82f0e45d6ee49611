"""The Content-Security-Policy in a real browser: enforced, and nothing of ours breaks under it.

The `page` fixture fails any test during which Chromium reported a refusal; these tests
walk the pages that the other browser tests do not: the admin, the API docs, the
browsable API, and htmx fragments.
"""

from __future__ import annotations

import re

import pytest

from batches import services

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def ended_batch(account):
    """Create a batch of three echo items, one failing, run inline to its end."""
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        label="csp",
        items=[{"payload": {"n": n, **({"fail": True} if n == 1 else {})}} for n in range(3)],
        commit=True,
    )
    batch.refresh_from_db()
    return batch


def test_csp__the_browser_enforces_it_on_the_dashboard(log_in, csp_violations):
    page = log_in()

    ran = page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.appendChild(script);
            return window.injected === true;
        }"""
    )

    assert ran is False
    assert csp_violations, "Chromium must report the refused inline script"
    csp_violations.clear()


def test_csp__dashboard_pages_and_htmx_fragments_work_under_it(log_in):
    account = services.account_create(name="acme")
    batch = ended_batch(account)
    page = log_in()

    response = page.goto(f"/batches/{batch.pk}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.get_by_test_id("item-1").click()  # htmx fetches the item into the page
    expect(page.locator("#item-detail")).to_contain_text("echo_failed")
    expect(page).to_have_url(re.compile(rf"/batches/{batch.pk}/$"))
    page.goto("/accounts/")
    page.get_by_test_id(f"key-create-{account.number}").get_by_role("button").click()
    expect(page.get_by_test_id("raw-key")).to_be_visible()


def test_csp__admin_pages_work_under_it(log_in, staff_user):
    staff_user.is_superuser = True  # the admin shows a staff user only what it may change
    staff_user.save(update_fields=["is_superuser"])
    account = services.account_create(name="acme")
    batch = ended_batch(account)
    page = log_in()

    for path in (
        "/admin/",
        "/admin/batches/batch/",
        f"/admin/batches/batch/{batch.pk}/change/",
        "/admin/batches/account/add/",
        "/admin/batches/item/",
    ):
        response = page.goto(path)
        assert response.status == 200, path
        assert "content-security-policy" in response.headers
    page.goto("/admin/batches/batch/")
    page.get_by_role("checkbox").first.check()  # the admin's own scripts run: actions appear
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")


def test_csp__api_docs_render_under_it(page):
    page.goto("/api/v1/docs/")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("batchsite API")
    expect(page.locator(".opblock").first).to_be_visible()


def test_csp__the_browsable_api_works_under_it(log_in):
    account = services.account_create(name="acme")
    ended_batch(account)
    page = log_in()

    page.goto("/api/v1/batches/")

    expect(page.locator(".response-info")).to_contain_text('"label": "csp"')
