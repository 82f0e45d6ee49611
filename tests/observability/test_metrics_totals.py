"""Tests for the metrics that must stay honest over time: processed items and durations.

Batches run through the API (tasks inline) and the metrics are scraped over HTTP; the
counter and the histogram must never go down, whatever is deleted, purged or re-run.
"""

from __future__ import annotations

import platform
from datetime import timedelta
from importlib import metadata

import django
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from batches import services
from batches.engine import sweep
from batches.models import Batch, Item, ItemTally
from batches.models.tallies import DURATION_BUCKETS, RETIRED
from tests.factories import BatchFactory, ItemFactory, WebhookDeliveryFactory
from tests.helpers.api import batch_url

TOKEN = "metrics-token-for-totals"
PROCESSED = "batchsite_items_processed_total"
DURATION = "batchsite_item_duration_seconds"


@pytest.fixture
def metrics(client, settings):
    """Return a function that scrapes /metrics/ and returns its families by name."""
    settings.BATCHSITE_METRICS_TOKEN = TOKEN

    def scrape() -> dict:
        response = client.get("/metrics/", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        return {
            family.name: family
            for family in text_string_to_metric_families(response.content.decode())
        }

    return scrape


def processed(families: dict) -> dict[tuple[str, str], float]:
    """Return the processed-items counter by (type, outcome)."""
    return {
        (sample.labels["type"], sample.labels["outcome"]): sample.value
        for sample in families["batchsite_items_processed"].samples
        if sample.name == PROCESSED
    }


def histogram(families: dict, job_type: str) -> dict[str, float]:
    """Return one type's histogram: bucket bounds ("0.01", ..., "+Inf"), "sum" and "count"."""
    found = {}
    for sample in families[DURATION].samples:
        if sample.labels.get("type") != job_type:
            continue
        if sample.name == f"{DURATION}_bucket":
            found[sample.labels["le"]] = sample.value
        elif sample.name == f"{DURATION}_sum":
            found["sum"] = sample.value
        elif sample.name == f"{DURATION}_count":
            found["count"] = sample.value
    return found


def gauge(families: dict, name: str, **labels) -> float:
    """Return the value of the gauge's sample with these labels."""
    (value,) = [s.value for s in families[name].samples if s.labels == labels]
    return value


def run_batch(client, capture, items, **body) -> Batch:
    """Create and commit a batch through the API; its tasks run inline. Return it ended."""
    with capture(execute=True):
        response = client.post(
            "/api/v1/batches/", {"items": items, "commit": True, **body}, format="json"
        )
    assert response.status_code == 201, response.content
    return Batch.objects.get(pk=response.json()["id"])


def rerun(client, capture, batch: Batch, which: str) -> None:
    """Re-run a batch's items through the API; they run inline."""
    with capture(execute=True):
        response = client.post(batch_url(batch, "rerun/"), {"items": which}, format="json")
    assert response.status_code == 200, response.content


def assert_not_lower(later: dict, earlier: dict) -> None:
    """Assert that no series of `earlier` went down or vanished in `later`."""
    for key, value in earlier.items():
        assert later.get(key, 0) >= value, (key, earlier[key], later.get(key))


def recount() -> dict[tuple[str, str], int]:
    """Count the ended items kept in the database, by (type, outcome)."""
    counted: dict[tuple[str, str], int] = {}
    for key in Item.objects.filter(status__in=Item.ENDED).values_list("type", "status"):
        counted[key] = counted.get(key, 0) + 1
    return counted


MIXED = [{"payload": {"n": 1}}, {"payload": {"fail": True}}, {"payload": {"n": 3}}]


def test_items_processed__equal_the_ended_items_of_ended_and_active_batches(
    client_a, metrics, django_capture_on_commit_callbacks
):
    run_batch(client_a, django_capture_on_commit_callbacks, MIXED)
    run_batch(client_a, django_capture_on_commit_callbacks, MIXED[:1], type="test.flaky")
    # An active batch: its ended items are read from the items, not from tallies.
    active = BatchFactory(status=Batch.Status.RUNNING, started_at=timezone.now())
    ItemFactory(batch=active, status=Item.Status.FAILED, finished_at=timezone.now())
    ItemFactory(batch=active, status=Item.Status.RUNNING)

    counter = processed(metrics())

    assert counter == recount()
    assert counter == {
        ("echo", "succeeded"): 2,
        ("echo", "failed"): 2,
        ("test.flaky", "succeeded"): 1,
    }


def test_items_processed__never_go_down_after_rerun_delete_and_purge(
    client_a, metrics, django_capture_on_commit_callbacks, settings
):
    capture = django_capture_on_commit_callbacks
    first = run_batch(client_a, capture, MIXED)
    second = run_batch(client_a, capture, MIXED)
    before = processed(metrics())
    assert before == {("echo", "succeeded"): 4, ("echo", "failed"): 2}

    # The failed item fails again: one more failure, the first one still counted.
    rerun(client_a, capture, first, "failed")
    after_rerun = processed(metrics())
    assert after_rerun == {("echo", "succeeded"): 4, ("echo", "failed"): 3}

    rerun(client_a, capture, first, "all")
    after_rerun_all = processed(metrics())
    assert after_rerun_all == {("echo", "succeeded"): 6, ("echo", "failed"): 4}

    assert client_a.delete(batch_url(first)).status_code == 204
    after_delete = processed(metrics())
    assert after_delete == after_rerun_all

    # Retention: the sweep purges the second batch once it is old enough.
    settings.BATCHSITE_RETENTION_DAYS = 1
    Batch.objects.filter(pk=second.pk).update(finished_at=timezone.now() - timedelta(days=2))
    assert sweep.batches_purge(timezone.now()) == 1
    after_purge = processed(metrics())
    assert after_purge == after_rerun_all

    third = run_batch(client_a, capture, MIXED)
    services.batches_purge_older(older_than=timedelta(0), dry_run=False, actor="test")
    assert not Batch.objects.filter(pk=third.pk).exists()
    final = processed(metrics())
    assert final == {("echo", "succeeded"): 8, ("echo", "failed"): 5}
    for earlier in (before, after_rerun, after_rerun_all, after_delete, after_purge):
        assert_not_lower(final, earlier)
    assert set(ItemTally.objects.values_list("batch_id", flat=True)) == {RETIRED}


def test_items_processed__delete_of_a_running_batch_keeps_its_ended_items(client_a, metrics, db):
    batch = BatchFactory(status=Batch.Status.RUNNING, started_at=timezone.now())
    ItemFactory(batch=batch, status=Item.Status.SUCCEEDED, finished_at=timezone.now())
    ItemFactory(batch=batch, status=Item.Status.QUEUED)
    before = processed(metrics())

    services.batch_delete(batch=batch, actor="test")

    assert before == processed(metrics()) == {("echo", "succeeded"): 1}


def test_items_processed__atomic_batch_discarding_results_keeps_their_success(
    client_a, metrics, django_capture_on_commit_callbacks
):
    batch = run_batch(client_a, django_capture_on_commit_callbacks, MIXED, options={"atomic": True})

    assert batch.status == Batch.Status.FAILED
    # The first item succeeded before the second failed; its result was then discarded
    # (it is cancelled now), and the third never ran. The success still counts, and the
    # discarded item counts as cancelled too.
    assert list(Item.objects.filter(batch=batch).values_list("status", flat=True)) == [
        "cancelled",
        "failed",
        "cancelled",
    ]
    assert processed(metrics()) == {
        ("echo", "succeeded"): 1,
        ("echo", "failed"): 1,
        ("echo", "cancelled"): 2,
    }


def durations(job_type: str) -> list[float]:
    """Return the run times of the type's items kept in the database."""
    return [
        (finished - started).total_seconds()
        for started, finished in Item.objects.filter(
            type=job_type, status__in=Item.ENDED, started_at__isnull=False
        ).values_list("started_at", "finished_at")
    ]


def assert_cumulative(found: dict[str, float]) -> None:
    """Assert Prometheus' histogram rules: buckets never fall as bounds rise; +Inf is count."""
    counts = [found[str(float(bound))] for bound in DURATION_BUCKETS] + [found["+Inf"]]
    assert counts == sorted(counts)
    assert found["+Inf"] == found["count"]


def test_item_durations__a_cumulative_histogram_that_survives_a_purge(
    client_a, metrics, django_capture_on_commit_callbacks
):
    items = [{"payload": {"sleep_ms": ms}} for ms in (0, 30, 120, 300)]
    batch = run_batch(client_a, django_capture_on_commit_callbacks, items, type="test.flaky")
    seconds = durations("test.flaky")
    found = histogram(metrics(), "test.flaky")

    assert_cumulative(found)
    assert found["count"] == len(seconds) == 4
    assert found["sum"] == pytest.approx(sum(seconds), abs=0.01)
    for bound in DURATION_BUCKETS:
        assert found[str(float(bound))] == sum(1 for s in seconds if s <= bound), bound

    services.batch_delete(batch=batch, actor="test")
    after_purge = histogram(metrics(), "test.flaky")
    assert after_purge == found

    run_batch(client_a, django_capture_on_commit_callbacks, items[:2], type="test.flaky")
    later = histogram(metrics(), "test.flaky")
    assert_cumulative(later)
    assert later["count"] == 6
    for key, value in found.items():
        assert later[key] >= value, key


def test_items_pending__unended_items_of_committed_and_running_batches(
    client_a, metrics, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):  # no worker takes them
        client_a.post("/api/v1/batches/", {"items": MIXED * 2, "commit": True}, format="json")
    paused = BatchFactory(
        status=Batch.Status.RUNNING, paused_at=timezone.now(), total_items=5, succeeded_items=2
    )
    BatchFactory(status=Batch.Status.OPEN, total_items=7, pending_items=7)
    BatchFactory(status=Batch.Status.FINISHED, total_items=3, succeeded_items=3)

    families = metrics()

    assert gauge(families, "batchsite_items_pending") == 6 + 3
    assert paused.total_items - paused.succeeded_items == 3


def test_webhooks__backlog_by_state_and_failed_deliveries(metrics, db):
    WebhookDeliveryFactory()
    WebhookDeliveryFactory(attempts=2, last_status_code=500)
    WebhookDeliveryFactory(attempts=1, last_status_code=503)
    WebhookDeliveryFactory(status="succeeded", attempts=1)
    WebhookDeliveryFactory(status="failed", attempts=8)

    families = metrics()

    assert gauge(families, "batchsite_webhook_backlog", state="waiting") == 1
    assert gauge(families, "batchsite_webhook_backlog", state="retrying") == 2
    assert gauge(families, "batchsite_webhook_deliveries_failed") == 1


def test_build_info__names_the_version_python_and_django(metrics, db):
    (sample,) = metrics()["batchsite_build_info"].samples

    assert sample.value == 1
    assert sample.labels == {
        "version": metadata.version("batchsite"),
        "python": platform.python_version(),
        "django": django.get_version(),
    }
