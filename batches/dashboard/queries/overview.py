"""The overview: batches by status, live clusters, recent throughput and stuck batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from batches.dashboard.queries.common import (
    LIVE_STATUSES,
    _duration_label,
    _last_sign_of_life,
    stuck_minutes,
)
from batches.dashboard.queries.lists import BatchRow, batch_row
from batches.models import Batch, Item

logger = logging.getLogger(__name__)

STATUS_ORDER = list(Batch.Status.values)
STUCK_SHOWN = 20


@dataclass(frozen=True)
class ClusterInfo:
    """One django-q2 cluster that reported itself alive."""

    host: str
    cluster_id: str
    pid: int
    workers: int
    status: str
    uptime: str


@dataclass(frozen=True)
class StatusCount:
    """How many batches are in one status."""

    status: str
    count: int
    live: bool


@dataclass
class Overview:
    """The overview panel: batches by status, recent work, workers and stuck batches."""

    by_status: list[StatusCount]
    total: int
    live: bool
    items_last_hour: int
    clusters: list[ClusterInfo] | None
    workers_alive: int
    stuck: list[BatchRow] = field(default_factory=list)
    stuck_minutes: int = 10


def clusters_alive() -> list[ClusterInfo] | None:
    """Return the django-q2 clusters whose stats are in the shared cache; None if unreadable."""
    from django_q.status import Stat

    try:
        stats = Stat.get_all()
    except Exception:  # the cache or broker is down: say "unknown", keep the page up
        logger.warning("cannot read django-q2 cluster stats", exc_info=True)
        return None
    clusters = []
    for stat in stats:
        uptime = ""
        if getattr(stat, "tob", None):
            uptime = _duration_label((timezone.now() - stat.tob).total_seconds())
        clusters.append(
            ClusterInfo(
                host=str(getattr(stat, "host", "")),
                cluster_id=str(getattr(stat, "cluster_id", "")),
                pid=int(getattr(stat, "pid", 0) or 0),
                workers=len(getattr(stat, "workers", None) or []),
                status=str(getattr(stat, "status", "")),
                uptime=uptime,
            )
        )
    return sorted(clusters, key=lambda cluster: (cluster.host, cluster.pid))


def items_processed_since(since: datetime) -> int:
    """Return how many items succeeded or failed since `since`, over every batch."""
    recent_batches = Batch.objects.filter(
        Q(finished_at__isnull=True) | Q(finished_at__gte=since)
    ).exclude(status__in=[Batch.Status.CREATED, Batch.Status.OPEN])
    return Item.objects.filter(
        batch__in=recent_batches,
        status__in=[Item.Status.SUCCEEDED, Item.Status.FAILED],
        finished_at__gte=since,
    ).count()


def stuck_batches(*, now: datetime, minutes: int) -> list[Batch]:
    """Return active batches that have not moved for `minutes`, longest-stuck first."""
    return list(
        Batch.objects.with_unfolded_counts()
        .filter(status__in=Batch.ACTIVE, paused_at__isnull=True)
        .exclude(not_before__gt=now)
        .annotate(last_progress=_last_sign_of_life())
        .filter(last_progress__lt=now - timedelta(minutes=minutes))
        .select_related("account")
        .defer("metadata")
        .order_by("last_progress")[:STUCK_SHOWN]
    )


def overview() -> Overview:
    """Return the overview panel's figures."""
    now = timezone.now()
    minutes = stuck_minutes()
    counts = dict(Batch.objects.order_by().values_list("status").annotate(n=Count("pk")))
    by_status = [
        StatusCount(status=status, count=counts.get(status, 0), live=status in LIVE_STATUSES)
        for status in STATUS_ORDER
    ]
    clusters = clusters_alive()
    stuck = stuck_batches(now=now, minutes=minutes)
    return Overview(
        by_status=by_status,
        total=sum(counts.values()),
        live=any(counts.get(status) for status in LIVE_STATUSES),
        items_last_hour=items_processed_since(now - timedelta(hours=1)),
        clusters=clusters,
        workers_alive=sum(cluster.workers for cluster in clusters or []),
        stuck=[batch_row(batch, now=now, minutes=minutes) for batch in stuck],
        stuck_minutes=minutes,
    )
