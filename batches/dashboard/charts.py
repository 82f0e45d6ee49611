"""Small server-rendered SVG charts: plain numbers a template draws, no JavaScript."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

WIDTH = 640
HEIGHT = 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 10, 24


@dataclass(frozen=True)
class Tick:
    """A labelled position on an axis, in SVG user units."""

    position: str
    label: str


@dataclass(frozen=True)
class LineChart:
    """Everything a template needs to draw a line chart as inline SVG."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    y_label_x: int
    x_label_y: int
    points: str
    area: str
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    peak: str
    unit: str
    empty: bool


def nice_ceiling(value: float) -> float:
    """Return the smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power


def number_label(value: float) -> str:
    """Format a rate for an axis or a caption: few digits, no trailing zeros."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _coord(value: float) -> str:
    return f"{value:.1f}"


def line_chart(
    values: list[float],
    times: list[datetime],
    *,
    unit: str = "items/s",
    time_format: str = "%H:%M",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> LineChart:
    """Lay out `values` (one per time in `times`) as a polyline with axes and ticks."""
    plot_width = width - LEFT - RIGHT
    plot_height = height - TOP - BOTTOM
    base = TOP + plot_height
    top_value = nice_ceiling(max(values, default=0.0))
    buckets = len(values)
    if buckets == 1:
        # One bucket: draw it as a level line across the whole plot.
        values, times = values * 2, times * 2
    count = len(values)
    step = plot_width / (count - 1) if count > 1 else 0.0
    xs = [LEFT + index * step for index in range(count)]
    ys = [base - plot_height * (value / top_value) for value in values]
    points = " ".join(f"{_coord(x)},{_coord(y)}" for x, y in zip(xs, ys, strict=True))
    area = (
        f"M{_coord(xs[0])},{_coord(base)} L{points.replace(' ', ' L')} "
        f"L{_coord(xs[-1])},{_coord(base)} Z"
        if count
        else ""
    )
    y_ticks = [
        Tick(position=_coord(base - plot_height * share), label=number_label(top_value * share))
        for share in (0, 0.5, 1)
    ]
    x_ticks = []
    if count:
        positions = {0} if buckets == 1 else {0, (count - 1) // 2, count - 1}
        for position in sorted(positions):
            x_ticks.append(
                Tick(position=_coord(xs[position]), label=times[position].strftime(time_format))
            )
    return LineChart(
        width=width,
        height=height,
        left=LEFT,
        right=width - RIGHT,
        top=TOP,
        bottom=base,
        y_label_x=LEFT - 6,
        x_label_y=base + 16,
        points=points,
        area=area,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        peak=number_label(max(values, default=0.0)),
        unit=unit,
        empty=not any(values),
    )
