"""Serve Prometheus metrics at `/metrics` (the probes `/healthz`, `/readyz` are in probes.py).

Workers are separate processes on several hosts, so nothing here counts in memory: every
metric is computed from the database, the broker and the shared cache when Prometheus
scrapes, by a custom collector on a registry of our own. A scrape runs four queries
whatever the data (plus the broker's queue size: one more with the ORM broker, none with
Redis; and the session's, for a staff user), and reads the cluster stats from the cache:

- `batchsite_batches{status}`, `batchsite_oldest_running_batch_age_seconds` and
  `batchsite_items_pending`: one GROUP BY over batches by status (index `batch_status`).
  Items pending are the committed and running (paused or not) batches' items not yet
  ended, from their counters (a worker's last slice may be folded in a moment later).
- `batchsite_items_processed_total{type,outcome}` (a counter) and
  `batchsite_item_duration_seconds{type}` (a histogram: cumulative buckets, `_sum`,
  `_count`, for `rate()` and `histogram_quantile()`): the ended items of active batches,
  in one GROUP BY over their items (index `item_batch_status`), plus the running totals
  of every other batch, in one GROUP BY over ItemTally. A batch's items move from the
  first to the second as it ends, and stay counted when it is deleted (purge, retention),
  re-run, or its atomic results are discarded (batches.tallies), so neither ever goes
  down. On a table of millions of items the scan costs what the active batches' ended
  items do; ItemTally holds a few rows per batch kept (one per type and outcome), plus
  one per type and outcome for all the deleted ones. Durations run from an item's start
  to its end; `started_at` is set when its slice starts, so they include waiting behind
  the slice's earlier items. Items cancelled before they started have no duration: they
  are counted by the counter, not the histogram.
- `batchsite_webhook_backlog{state}` (deliveries waiting for a first try, or retrying
  after a failed one) and `batchsite_webhook_deliveries_failed` (deliveries that gave up,
  among those kept; a redelivery or a deleted batch takes one away, so it is a gauge):
  one aggregate over deliveries by status (index `delivery_status_due`).
- `batchsite_queue_depth`: the broker's `queue_size()` (tasks waiting to be taken).
- `batchsite_workers{cluster,host}`: each django-q2 cluster's workers, from the stats the
  clusters keep in the shared cache (as the dashboard reads them); left out when the
  cache cannot be read. A cluster that stops drops out once its stats expire.
- `batchsite_build_info{version,python,django}`: 1.
"""

from __future__ import annotations

import logging
import platform
import secrets
from importlib import metadata

import django
from django.conf import settings
from django.db.models import Count, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from batches.dashboard.queries import clusters_alive
from batches.models import Batch, Item, ItemTally, WebhookDelivery
from batches.models.tallies import BUCKET_FIELDS, DURATION_BUCKETS
from batches.tallies import (
    TOTAL_FIELDS,
    Totals,
    item_duration,
    item_totals_annotations,
    totals_from_rows,
)

logger = logging.getLogger(__name__)

# generate_latest() writes the classic text format, version 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Batches whose items are still to end: what `batchsite_items_pending` counts.
PENDING_STATUSES = frozenset({Batch.Status.COMMITTED, Batch.Status.RUNNING})


class BatchsiteCollector:
    """Collect batchsite's metrics from the database, the broker and the cache at scrape time."""

    def describe(self):
        """Describe nothing up front, so registering never queries the database."""
        return []

    def collect(self):
        """Yield every metric family, computed now."""
        now = timezone.now()
        yield from self._batches(now)
        totals = self._item_totals()
        yield self._items_processed(totals)
        yield self._item_durations(totals)
        yield from self._webhooks()
        queue = self._queue_depth()
        if queue is not None:
            yield queue
        workers = self._workers()
        if workers is not None:
            yield workers
        yield self._build_info()

    def _batches(self, now):
        unended = F("total_items") - F("succeeded_items") - F("failed_items") - F("cancelled_items")
        rows = (
            Batch.objects.order_by()
            .values("status")
            .annotate(n=Count("pk"), oldest=Min("started_at"), unended=Sum(unended))
            .values_list("status", "n", "oldest", "unended")
        )
        counts = dict.fromkeys(Batch.Status.values, 0)
        oldest_running = None
        pending = 0
        for status, n, oldest, unended_items in rows:
            counts[status] = n
            if status == Batch.Status.RUNNING:
                oldest_running = oldest
            if status in PENDING_STATUSES:
                pending += unended_items or 0
        batches = GaugeMetricFamily(
            "batchsite_batches", "Batches in each status.", labels=["status"]
        )
        for status, n in counts.items():
            batches.add_metric([status], n)
        yield batches
        age = (now - oldest_running).total_seconds() if oldest_running else 0.0
        yield GaugeMetricFamily(
            "batchsite_oldest_running_batch_age_seconds",
            "Seconds since the oldest running batch started; 0 when none runs.",
            value=max(age, 0.0),
        )
        yield GaugeMetricFamily(
            "batchsite_items_pending",
            "Items not yet ended in committed or running batches (paused ones included).",
            value=max(pending, 0),
        )

    def _item_totals(self) -> Totals:
        """Return every ended item counted, by (type, outcome): tallies plus active batches'."""
        sums = {field: Sum(field) for field in TOTAL_FIELDS}
        tallied = (
            ItemTally.objects.order_by()
            .values("type", "outcome")
            .annotate(**sums)
            .values_list("type", "outcome", *TOTAL_FIELDS)
        )
        totals: Totals = {
            (job_type, outcome): dict(zip(TOTAL_FIELDS, values, strict=True))
            for job_type, outcome, *values in tallied
        }
        active = Batch.objects.filter(status__in=Batch.ACTIVE).values("pk")
        live = totals_from_rows(
            Item.objects.filter(batch_id__in=active, status__in=Item.ENDED)
            .alias(duration=item_duration())
            .order_by()
            .values("type", "status")
            .annotate(**item_totals_annotations())
        )
        for key, values in live.items():
            into = totals.setdefault(key, dict.fromkeys(TOTAL_FIELDS, 0))
            for field in TOTAL_FIELDS:
                into[field] = (into[field] or 0) + values[field]
        return totals

    def _items_processed(self, totals: Totals):
        family = CounterMetricFamily(
            "batchsite_items_processed",
            "Items that ended, by job type and outcome, since the service began counting "
            "(deleted and re-run items included).",
            labels=["type", "outcome"],
        )
        for (job_type, outcome), values in sorted(totals.items()):
            family.add_metric([job_type, outcome], values["items"] or 0)
        return family

    def _item_durations(self, totals: Totals):
        by_type: dict[str, dict[str, float]] = {}
        for (job_type, _outcome), values in totals.items():
            into = by_type.setdefault(job_type, dict.fromkeys(TOTAL_FIELDS, 0))
            for field in TOTAL_FIELDS:
                into[field] += values[field] or 0
        family = HistogramMetricFamily(
            "batchsite_item_duration_seconds",
            "Seconds from an item's start to its end, over every item that ran.",
            labels=["type"],
        )
        for job_type, values in sorted(by_type.items()):
            if not values["timed"]:
                continue
            buckets = [
                (_bound_label(bound), values[field])
                for field, bound in zip(BUCKET_FIELDS, DURATION_BUCKETS, strict=True)
            ]
            buckets.append(("+Inf", values["timed"]))
            family.add_metric([job_type], buckets, sum_value=float(values["seconds"]))
        return family

    def _webhooks(self):
        status = WebhookDelivery.Status
        pending = Q(status=status.PENDING)
        counts = WebhookDelivery.objects.filter(
            status__in=[status.PENDING, status.FAILED]
        ).aggregate(
            waiting=Count("pk", filter=pending & Q(attempts=0)),
            retrying=Count("pk", filter=pending & Q(attempts__gt=0)),
            failed=Count("pk", filter=Q(status=status.FAILED)),
        )
        backlog = GaugeMetricFamily(
            "batchsite_webhook_backlog",
            "Webhook deliveries not yet made: waiting for a first try, or retrying after "
            "a failed one.",
            labels=["state"],
        )
        backlog.add_metric(["waiting"], counts["waiting"])
        backlog.add_metric(["retrying"], counts["retrying"])
        yield backlog
        yield GaugeMetricFamily(
            "batchsite_webhook_deliveries_failed",
            "Webhook deliveries that gave up (among the deliveries kept).",
            value=counts["failed"],
        )

    def _queue_depth(self):
        from django_q.brokers import get_broker

        try:
            size = get_broker().queue_size()
        except Exception:  # the broker is down: leave the metric out, keep the rest
            logger.warning("cannot read the broker's queue size", exc_info=True)
            return None
        return GaugeMetricFamily(
            "batchsite_queue_depth",
            "Tasks waiting in the broker's queue to be taken by a worker.",
            value=size or 0,
        )

    def _workers(self):
        clusters = clusters_alive()
        if clusters is None:  # the cache cannot be read: unknown, not zero
            return None
        family = GaugeMetricFamily(
            "batchsite_workers",
            "Workers of each django-q2 cluster that reported itself alive.",
            labels=["cluster", "host"],
        )
        for cluster in clusters:
            family.add_metric([cluster.cluster_id, cluster.host], cluster.workers)
        return family

    def _build_info(self):
        family = GaugeMetricFamily(
            "batchsite_build_info",
            "Always 1; the labels say which batchsite, Python and Django serve.",
            labels=["version", "python", "django"],
        )
        family.add_metric([batchsite_version(), platform.python_version(), django.get_version()], 1)
        return family


def batchsite_version() -> str:
    """Return the installed batchsite's version, or "unknown" when it is not installed."""
    try:
        return metadata.version("batchsite")
    except metadata.PackageNotFoundError:
        return "unknown"


def _bound_label(bound: float) -> str:
    return str(float(bound))


def metrics_registry() -> CollectorRegistry:
    """Return a registry holding only batchsite's collector (not the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchsiteCollector())
    return registry


def metrics_token_valid(request: HttpRequest) -> bool | None:
    """Return True for the configured bearer token, False for another, None without one."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    expected = settings.BATCHSITE_METRICS_TOKEN
    presented = presented.strip()
    # An empty setting means "staff only": no presented token matches it.
    if not expected or not presented:
        return False
    return secrets.compare_digest(presented.encode(), expected.encode())


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the metrics to a holder of BATCHSITE_METRICS_TOKEN or a staff session."""
    token = metrics_token_valid(request)
    if not token:
        user = request.user
        if token is False or not user.is_authenticated:
            response = HttpResponse(
                "Authentication required.\n", status=401, content_type="text/plain; charset=utf-8"
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not user.is_staff:
            return HttpResponse(
                "Staff only.\n", status=403, content_type="text/plain; charset=utf-8"
            )
    return HttpResponse(generate_latest(metrics_registry()), content_type=METRICS_CONTENT_TYPE)
