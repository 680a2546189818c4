"""Usage: strict mode says nothing is recorded; metered mode shows the records and a chart."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import ConnectionRecord, utcnow
from burrow.control.runtime import Runtime
from burrow.control.web.usage_pages import bar_chart, traffic_per_day
from tests.control.web.conftest import MakeWebCustomer

ROOT = Path(__file__).resolve().parents[3]
METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"


async def test_strict_mode_states_that_nothing_is_recorded(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    page = await client.get("/usage")
    assert page.status_code == 200
    assert "Nothing is recorded" in page.text
    assert 'id="connection-records"' not in page.text
    assert 'id="traffic-chart"' not in page.text
    assert "No device is connected right now." in page.text


class TestMetered:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"policy_path": METERED_POLICY})

    async def test_records_table_and_traffic_per_day(
        self, client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
    ) -> None:
        customer = await web_customer()
        now = utcnow().replace(hour=12)
        async with unit_of_work(runtime.sessionmaker) as session:
            for days_ago, down in ((2, 3_000_000), (2, 1_000_000), (0, 500_000)):
                start = now - timedelta(days=days_ago)
                session.add(
                    ConnectionRecord(
                        account_id=customer.account.id,
                        node_name="ams-1",
                        node_country="nl",
                        node_city="Amsterdam",
                        started_at=start,
                        ended_at=start + timedelta(minutes=90),
                        duration_seconds=5400,
                        rx_bytes=1000,
                        tx_bytes=down,
                    )
                )
        page = await client.get("/usage")
        assert page.status_code == 200
        assert "Records are deleted" in page.text
        rows = re.findall(r"<td[^>]*>ams-1 · Amsterdam, NL</td>", page.text)
        assert len(rows) == 3
        assert "1h 30m" in page.text
        chart = re.search(r'id="traffic-chart">(<svg.*?</svg>)', page.text, re.S)
        assert chart is not None
        # Two days with traffic: two stacked bars (down and up each).
        assert chart.group(1).count("<rect") == 4


def test_traffic_is_summed_per_start_day_and_the_tallest_bar_fills_the_plot() -> None:
    from burrow.control.connections.schemas import ConnectionRecordRead

    now = utcnow()

    def record(days_ago: int, down: int, up: int) -> ConnectionRecordRead:
        return ConnectionRecordRead(
            id=days_ago,
            device_id=None,
            node_name="n",
            node_country="nl",
            node_city="A",
            started_at=now - timedelta(days=days_ago),
            duration_seconds=1,
            rx_bytes=up,
            tx_bytes=down,
        )

    days = traffic_per_day([record(1, 100, 10), record(1, 50, 5), record(0, 10, 0)])
    assert [(down, up) for _day, down, up in days] == [(150, 15), (10, 0)]
    svg = bar_chart(days)
    heights = [float(h) for h in re.findall(r'height="([0-9.]+)"', svg)]
    plot = 200 - 16 - 28
    assert max(h for h in heights[:2]) == pytest.approx(plot * 150 / 165, abs=0.1)
    assert "<script" not in svg
