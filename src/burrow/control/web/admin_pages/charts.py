"""Bar charts drawn on the server as inline SVG: geometry here, markup in the template.

No script and nothing from another host (the CSP allows neither); each chart carries its
numbers as text too (a title per bar and a table for screen readers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from burrow.control.overview.schemas import DayCount

WIDTH = 600
HEIGHT = 140
PAD_TOP = 12
PAD_BOTTOM = 18


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    bars: tuple[Bar, ...]
    total: int
    peak: int
    first: str
    last: str
    width: int = WIDTH
    height: int = HEIGHT
    baseline: int = HEIGHT - PAD_BOTTOM


def bars(id: str, title: str, series: Sequence[DayCount]) -> Chart:
    peak = max((d.count for d in series), default=0)
    slot = WIDTH / max(1, len(series))
    room = HEIGHT - PAD_TOP - PAD_BOTTOM
    drawn = []
    for i, d in enumerate(series):
        h = room * d.count / peak if peak else 0.0
        drawn.append(
            Bar(
                x=round(i * slot + slot * 0.1, 2),
                y=round(HEIGHT - PAD_BOTTOM - h, 2),
                width=round(max(1.0, slot * 0.8), 2),
                height=round(h, 2),
                label=d.day.isoformat(),
                value=d.count,
            )
        )
    return Chart(
        id=id,
        title=title,
        bars=tuple(drawn),
        total=sum(d.count for d in series),
        peak=peak,
        first=series[0].day.isoformat() if series else "",
        last=series[-1].day.isoformat() if series else "",
    )
