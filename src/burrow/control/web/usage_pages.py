"""Usage: what the policy keeps of the account's connections. In metered mode the connection
records as a table and a bar chart of traffic per day; in strict mode a plain statement that
nothing is recorded. Connections open right now (kept in memory only) show in both."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from fastapi import Request, Response

from burrow.control.connections.schemas import ConnectionRecordRead
from burrow.control.connections.service import connection as connection_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.terms.render import data_size
from burrow.control.web.auth import WebAccount
from burrow.control.web.routing import page_router
from burrow.control.web.templating import render, trusted_svg

router = page_router()

RECORDS_SHOWN = 500
CHART_DAYS = 31


def traffic_per_day(records: list[ConnectionRecordRead]) -> list[tuple[date, int, int]]:
    """(day, bytes down, bytes up) for each day with traffic, oldest first, by start day."""
    days: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        totals = days[record.started_at.date()]
        totals[0] += record.tx_bytes  # the server sent it: the device's download
        totals[1] += record.rx_bytes
    return [(day, down, up) for day, (down, up) in sorted(days.items())][-CHART_DAYS:]


def bar_chart(days: list[tuple[date, int, int]]) -> str:
    """A small SVG of stacked bars (down and up) per day; drawn from numbers and dates only."""
    width, height, top, bottom, left = 640, 200, 16, 28, 8
    plot = height - top - bottom
    peak = max((down + up for _, down, up in days), default=0) or 1
    slot = (width - left * 2) / max(len(days), 1)
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="chart-title">',
        f'<title id="chart-title">Traffic per day, highest {data_size(peak)}</title>',
        f'<line x1="{left}" y1="{top + plot}" x2="{width - left}" y2="{top + plot}" '
        'stroke="#9aa5b3"/>',
    ]
    for index, (day, down, up) in enumerate(days):
        x = left + index * slot + (slot - bar) / 2
        down_h = plot * down / peak
        up_h = plot * up / peak
        label = f"{day.isoformat()}: {data_size(down)} down, {data_size(up)} up"
        parts.append(f"<g><title>{label}</title>")
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - down_h:.1f}" width="{bar:.1f}" '
            f'height="{down_h:.1f}" fill="#1f5fae"/>'
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot - down_h - up_h:.1f}" width="{bar:.1f}" '
            f'height="{up_h:.1f}" fill="#8db3e8"/>'
        )
        parts.append("</g>")
        if len(days) <= 10 or index % max(1, len(days) // 6) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 8}" font-size="11" '
                f'text-anchor="middle" fill="#5a6472">{day.strftime("%d %b")}</text>'
            )
    parts.append(
        f'<text x="{left}" y="{top - 4}" font-size="11" fill="#5a6472">'
        f"{data_size(peak)}</text></svg>"
    )
    return "".join(parts)


@router.get("/usage")
async def usage_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    recorded = await connection_service.records(session, runtime, account, RECORDS_SHOWN)
    live = await connection_service.current(session, runtime, account)
    days = traffic_per_day(recorded.records) if recorded.recorded else []
    return render(
        request,
        "usage.html",
        {
            "recorded": recorded,
            "live": live,
            "days": days,
            "chart": trusted_svg(bar_chart(days)) if days else None,
        },
    )
