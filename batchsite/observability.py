"""Serve Prometheus metrics at `/metrics` (the probes `/healthz`, `/readyz` are in probes.py).

Workers are separate processes, so nothing here counts in memory: every metric is computed
from the database and the broker when Prometheus scrapes, by a custom collector on a
registry of our own. A scrape runs four queries whatever the data (plus the session's, for
a staff user):

- `batchsite_batches{status}` and `batchsite_oldest_running_batch_age_seconds`: one
  GROUP BY over batches by status (the oldest running batch is that group's MIN(started_at)).
- `batchsite_items_processed_total{type,outcome}`: one GROUP BY over ended items. It is
  derived from rows, so it drops when batches are deleted (retention) or items re-run;
  Prometheus' `rate()`/`increase()` read such a drop as a counter reset.
- `batchsite_item_duration_seconds{type}`: a histogram of `finished_at - started_at` over
  the items that ended in the last hour (DURATION_WINDOW), every bucket a conditional COUNT
  in one aggregate query. It is a sliding window, not a running total: read it with
  `histogram_quantile()` on the raw buckets, not on `rate()`. An item's `started_at` is
  set when its slice starts, so the duration includes waiting behind the slice's earlier
  items.
- `batchsite_queue_depth`: the broker's `queue_size()` (tasks waiting to be taken).
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
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

from batches.models import Batch, Item

logger = logging.getLogger(__name__)

# generate_latest() writes the classic text format, version 0.0.4.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The item duration histogram covers items that ended this recently.
DURATION_WINDOW = timedelta(hours=1)
# Upper bounds (seconds) of the duration histogram's buckets; +Inf is added.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class BatchsiteCollector:
    """Collect batchsite's metrics from the database and the broker at scrape time."""

    def describe(self):
        """Describe nothing up front, so registering never queries the database."""
        return []

    def collect(self):
        """Yield every metric family, computed now."""
        now = timezone.now()
        yield from self._batches(now)
        yield self._items_processed()
        yield self._item_durations(now)
        queue = self._queue_depth()
        if queue is not None:
            yield queue

    def _batches(self, now):
        rows = (
            Batch.objects.order_by()
            .values("status")
            .annotate(n=Count("pk"), oldest=Min("started_at"))
            .values_list("status", "n", "oldest")
        )
        counts = dict.fromkeys(Batch.Status.values, 0)
        oldest_running = None
        for status, n, oldest in rows:
            counts[status] = n
            if status == Batch.Status.RUNNING:
                oldest_running = oldest
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

    def _items_processed(self):
        family = CounterMetricFamily(
            "batchsite_items_processed",
            "Items that ended, by job type and outcome (derived from the items kept).",
            labels=["type", "outcome"],
        )
        rows = (
            Item.objects.filter(status__in=Item.ENDED)
            .order_by()
            .values("type", "status")
            .annotate(n=Count("pk"))
            .values_list("type", "status", "n")
        )
        for job_type, status, n in sorted(rows):
            family.add_metric([job_type, status], n)
        return family

    def _item_durations(self, now):
        cutoff = now - DURATION_WINDOW
        # Items that ended in the window belong to batches still active or finished in it;
        # narrowing to those lets the database use the (batch, status, index) index
        # instead of scanning every item ever kept.
        recent_batches = Batch.objects.filter(
            Q(status__in=Batch.ACTIVE) | Q(finished_at__gte=cutoff)
        ).values("pk")
        bounds = [timedelta(seconds=bound) for bound in DURATION_BUCKETS]
        buckets = {
            f"le_{n}": Count("pk", filter=Q(duration__lte=bound)) for n, bound in enumerate(bounds)
        }
        rows = (
            Item.objects.filter(
                batch_id__in=recent_batches,
                status__in=Item.ENDED,
                started_at__isnull=False,
                finished_at__gte=cutoff,
            )
            .alias(
                duration=ExpressionWrapper(
                    F("finished_at") - F("started_at"), output_field=DurationField()
                )
            )
            .order_by()
            .values("type")
            .annotate(count=Count("pk"), total=Sum("duration"), **buckets)
        )
        family = HistogramMetricFamily(
            "batchsite_item_duration_seconds",
            "Seconds from an item's start to its end, over the items that ended in the "
            f"last {int(DURATION_WINDOW.total_seconds())} s.",
            labels=["type"],
        )
        for row in sorted(rows, key=lambda row: row["type"]):
            cumulative = [
                # django-stubs types the row from the literal annotate() keywords only and
                # drops the **buckets ones, so it knows no "le_<n>" key.
                (_bound_label(bound), row[f"le_{n}"])  # type: ignore[literal-required]
                for n, bound in enumerate(DURATION_BUCKETS)
            ]
            cumulative.append(("+Inf", row["count"]))
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            family.add_metric([row["type"]], cumulative, sum_value=total)
        return family

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
