"""The server-side throughput chart: its layout and the per-bucket counts behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batches.dashboard import charts, queries
from batches.models import Batch, Item
from tests.factories import BatchFactory, ItemFactory

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (0.3, 0.5), (1, 1), (1.2, 2), (2.2, 2.5), (7, 10), (180, 200), (3000, 5000)],
)
def test_nice_ceiling__rounds_up_to_a_readable_axis_top(value, expected):
    assert charts.nice_ceiling(value) == pytest.approx(expected)


def test_line_chart__scales_values_to_the_plot():
    times = [T0 + timedelta(minutes=n) for n in range(3)]

    chart = charts.line_chart([0, 5, 10], times)

    points = [tuple(map(float, point.split(","))) for point in chart.points.split()]
    assert [x for x, _ in points] == [charts.LEFT, (charts.LEFT + chart.right) / 2, chart.right]
    assert [y for _, y in points] == [chart.bottom, (chart.top + chart.bottom) / 2, chart.top]
    assert [tick.label for tick in chart.y_ticks] == ["0", "5", "10"]
    assert [tick.label for tick in chart.x_ticks] == ["12:00", "12:01", "12:02"]
    assert chart.area.startswith(f"M{charts.LEFT:.1f},{chart.bottom:.1f} L")
    assert chart.area.endswith("Z")
    assert chart.peak == "10"
    assert not chart.empty


def test_line_chart__one_bucket_is_a_level_line_and_zeros_are_empty():
    chart = charts.line_chart([0.0], [T0])

    assert len(chart.points.split()) == 2
    assert [tick.label for tick in chart.x_ticks] == ["12:00"]
    assert chart.empty


@pytest.mark.django_db
def test_throughput_series__counts_ended_items_per_second_for_a_short_run():
    batch = BatchFactory(
        status=Batch.Status.FINISHED,
        started_at=T0,
        committed_at=T0,
        finished_at=T0 + timedelta(seconds=4, milliseconds=500),
    )
    offsets = [0.1, 0.2, 0.9, 2.5, 4.2]
    for index, offset in enumerate(offsets):
        ItemFactory(
            batch=batch, index=index, status=Item.Status.SUCCEEDED,
            finished_at=T0 + timedelta(seconds=offset),
        )  # fmt: skip
    ItemFactory(
        batch=batch, index=9, status=Item.Status.CANCELLED, finished_at=T0 + timedelta(seconds=1)
    )

    series = queries.throughput_series(batch)

    assert series.bucket_seconds == 1
    assert series.starts[0] == T0
    assert series.counts == [3, 0, 1, 0, 1]


@pytest.mark.django_db
def test_throughput_series__keeps_the_last_buckets_of_a_long_run_in_minutes():
    batch = BatchFactory(
        status=Batch.Status.FINISHED,
        started_at=T0,
        committed_at=T0,
        finished_at=T0 + timedelta(hours=3),
    )
    ItemFactory(batch=batch, index=0, status="succeeded", finished_at=T0 + timedelta(minutes=5))
    ItemFactory(batch=batch, index=1, status="failed", finished_at=T0 + timedelta(minutes=179))
    ItemFactory(batch=batch, index=2, status="succeeded", finished_at=T0 + timedelta(minutes=179))

    series = queries.throughput_series(batch, buckets=60)

    assert series.bucket_seconds == 60
    assert len(series.counts) == 60
    assert series.starts[-1] == T0 + timedelta(hours=3)
    assert series.counts[-2:] == [2, 0]
    assert sum(series.counts) == 2  # the item of minute 5 is outside the window
    assert series.rates[-2] == pytest.approx(2 / 60)


@pytest.mark.django_db
def test_throughput_series__none_before_the_batch_was_committed():
    assert queries.throughput_series(BatchFactory(status=Batch.Status.OPEN)) is None


@pytest.mark.django_db
def test_throughput_series__a_running_batch_leaves_out_the_bucket_still_filling():
    batch = BatchFactory(status=Batch.Status.RUNNING, started_at=T0, committed_at=T0)
    for index, offset in enumerate([0.5, 1.5, 2.5, 3.2]):
        ItemFactory(
            batch=batch, index=index, status=Item.Status.SUCCEEDED,
            finished_at=T0 + timedelta(seconds=offset),
        )  # fmt: skip

    series = queries.throughput_series(batch, now=T0 + timedelta(seconds=3, milliseconds=400))

    # Second 3 has barely begun: its one item so far would read as a drop in the rate.
    assert series.starts[-1] == T0 + timedelta(seconds=2)
    assert series.counts == [1, 1, 1]
