"""The operators' dashboard in a real browser, with a real qcluster running the batches."""

from __future__ import annotations

import json
import os
import re

import pytest
from PIL import Image

from batches import services
from batches.models import Batch, Item
from tests.conftest import ROOT, wait_for
from tests.e2e.helpers import wait_terminal

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ROOT / "docs" / "screenshots"
# Live changes arrive by htmx polling every 2 s; a worker writes progress every slice (1 s).
LIVE_WAIT_MS = 30_000


def slow_batch(account, *, items: int, sleep_ms: int, label: str = "", failing=()) -> Batch:
    """Create and commit an echo batch that takes about `items * sleep_ms` on one worker."""
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        label=label,
        items=[
            {
                "external_id": f"item-{n}",
                "payload": {
                    "n": n,
                    "sleep_ms": sleep_ms,
                    **({"fail": True} if n in failing else {}),
                },
            }
            for n in range(items)
        ],
        commit=True,
    )
    return batch


@pytest.mark.cluster
def test_dashboard__running_batch_progress_increases_without_reload(log_in, cluster):
    account = services.account_create(name="acme")
    batch = slow_batch(account, items=400, sleep_ms=30, label="live progress")

    page = log_in()

    row = page.get_by_test_id(f"batch-row-{batch.number}")
    expect(row).to_be_visible()
    expect(row.get_by_test_id("status")).to_have_text(re.compile(r"^(committed|running)$"))
    polls = []
    page.on("request", lambda request: "/_/batch-rows/" in request.url and polls.append(request))
    # A full reload would lose this; htmx swapping the rows in place keeps it.
    page.evaluate("window.batchsiteSamePage = true")
    progress = row.get_by_test_id("progress")
    first_text = progress.inner_text()
    first = float(first_text)
    assert first < 100, "the batch ended before the page could watch it"
    expect(progress).not_to_have_text(first_text, timeout=LIVE_WAIT_MS)
    second = float(progress.inner_text())
    assert second > first
    assert page.evaluate("window.batchsiteSamePage") is True
    assert polls, "the rows changed without htmx fetching them"
    services.batch_cancel(batch=batch, actor="test")  # lets the cluster stop at once


@pytest.mark.cluster
def test_dashboard__cancel_through_the_confirmation_ends_the_batch_cancelled(log_in, cluster):
    account = services.account_create(name="acme")
    batch = slow_batch(account, items=400, sleep_ms=50, label="to cancel")
    page = log_in()

    page.get_by_test_id(f"batch-row-{batch.number}").get_by_role(
        "link", name=str(batch.number), exact=True
    ).click()
    expect(page).to_have_url(re.compile(rf"/batches/{batch.pk}/$"))
    status = page.get_by_test_id("batch-header").get_by_test_id("status")
    expect(status).to_have_text(re.compile(r"^(committed|running)$"))
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("confirm-page")).to_be_visible()
    batch.refresh_from_db()
    assert batch.status in Batch.ACTIVE, "the confirmation page must not cancel by itself"
    page.get_by_test_id("confirm").click()

    expect(page.get_by_test_id("message")).to_contain_text(f"Cancel batch {batch.number}: done")
    expect(status).to_have_text("cancelled", timeout=LIVE_WAIT_MS)
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.CANCELLED
    assert batch.cancelled_items > 0
    assert batch.succeeded_items + batch.cancelled_items == 400
    expect(page.get_by_test_id("count-cancelled")).to_have_text(str(batch.cancelled_items))


def test_dashboard__export_jsonl_downloads_the_batch_items(log_in):
    account = services.account_create(name="acme")
    # Without a cluster the chunks run inline (sync mode) when the commit is saved.
    batch, _ = services.batch_create(
        account=account,
        actor="test",
        items=[
            {"external_id": f"x-{n}", "payload": {"n": n, **({"fail": True} if n == 3 else {})}}
            for n in range(7)
        ],
        commit=True,
    )
    services.batch_create(account=account, actor="test", items=[{"payload": {}}], commit=True)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED
    page = log_in()
    page.goto(f"/batches/{batch.pk}/")

    with page.expect_download() as download_info:
        page.get_by_test_id("export-jsonl").click()

    download = download_info.value
    assert download.suggested_filename == f"batch-{batch.number}-items.jsonl"
    with open(download.path(), encoding="utf-8") as file:
        lines = [json.loads(line) for line in file.read().splitlines()]
    assert [line["index"] for line in lines] == list(range(7))
    assert [line["external_id"] for line in lines] == [f"x-{n}" for n in range(7)]
    statuses = dict(Item.objects.filter(batch=batch).values_list("index", "status"))
    assert {line["index"]: line["status"] for line in lines} == statuses
    assert statuses[3] == Item.Status.FAILED
    assert lines[3]["error_code"] == "echo_failed"
    assert lines[0]["result"] == {"n": 0}


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.mark.cluster
def test_dashboard__screenshots_of_the_list_and_a_running_batch(log_in, cluster, tmp_path):
    """Take the README's pictures; BATCHSITE_WRITE_SCREENSHOTS=1 writes them to docs/."""
    folder = SCREENSHOTS if os.environ.get("BATCHSITE_WRITE_SCREENSHOTS") == "1" else tmp_path
    acme = services.account_create(name="acme")
    globex = services.account_create(name="globex")
    nightly = slow_batch(acme, items=300, sleep_ms=2, label="nightly sync", failing={7, 150, 299})
    report = slow_batch(globex, items=120, sleep_ms=2, label="monthly report")
    replay = slow_batch(globex, items=1000, sleep_ms=5, label="webhook replay")
    wait_for(lambda: Batch.objects.get(pk=replay.pk).succeeded_items, timeout=30)
    services.batch_cancel(batch=replay, actor="test")
    nightly, report, replay = (wait_terminal(b.pk, cluster) for b in (nightly, report, replay))
    services.batch_create(
        account=acme,
        actor="test",
        label="draft import",
        items=[{"payload": {"n": n}} for n in range(40)],
    )
    running = slow_batch(
        globex, items=800, sleep_ms=25, label="thumbnails", failing={3, 40, 150, 500}
    )

    def well_under_way():
        running.refresh_from_db()
        return running.progress >= 0.3 and running.failed_items >= 3

    wait_for(well_under_way, timeout=30)
    assert nightly.status == Batch.Status.FINISHED
    assert nightly.failed_items == 3
    folder.mkdir(parents=True, exist_ok=True)
    page = log_in()

    expect(page.get_by_test_id(f"batch-row-{nightly.number}")).to_contain_text("3 failed")
    expect(
        page.get_by_test_id(f"batch-row-{running.number}").get_by_test_id("status")
    ).to_have_text("running")
    page.screenshot(path=folder / "dashboard-list.png", full_page=True)
    page.get_by_test_id(f"batch-row-{running.number}").get_by_role(
        "link", name=str(running.number), exact=True
    ).click()
    expect(page.get_by_test_id("failed-items")).to_be_visible()
    expect(page.get_by_test_id("batch-header").get_by_test_id("status")).to_have_text("running")
    page.screenshot(path=folder / "dashboard-detail.png", full_page=True)

    for name in ("dashboard-list.png", "dashboard-detail.png"):
        width, height = png_size(folder / name)
        assert width == 1280
        assert height >= 800
    services.batch_cancel(batch=running, actor="test")  # lets the cluster stop at once
