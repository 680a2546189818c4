"""OpenVPN connections under both privacy modes: metered records and usage counters exactly as
for WireGuard; strict mode writes nothing of them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import ConnectionRecord, UsageCounter
from burrow.control.runtime import Runtime
from tests.conftest import ROOT
from tests.control.connections.conftest import REPORT, MakeCustomer, MakeNode, ReportingNode, Wall

METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"


async def report(
    node: ReportingNode, key: str, *, connected: bool, rx: int = 0, tx: int = 0
) -> dict[str, Any]:
    node.seq += 1
    peer = {
        "public_key": key,
        "protocol": "openvpn",
        "connected": connected,
        "rx_bytes": rx,
        "tx_bytes": tx,
    }
    body = {"boot_id": node.boot_id, "seq": node.seq, "revision": 0, "peers": [peer]}
    response = await node.client.post(REPORT, json=body, headers=node.headers)
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


async def rows(runtime: Runtime) -> tuple[list[ConnectionRecord], int]:
    async with unit_of_work(runtime.sessionmaker) as session:
        records = list((await session.scalars(select(ConnectionRecord))).all())
        counters = int(await session.scalar(select(func.count()).select_from(UsageCounter)) or 0)
    return records, counters


async def openvpn_session(node: ReportingNode, key: str, wall: Wall) -> None:
    await report(node, key, connected=True, rx=100, tx=200)
    wall.advance(10)
    await report(node, key, connected=True, rx=1_000, tx=2_000)
    wall.advance(10)
    await report(node, key, connected=False)


class TestMetered:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"policy_path": METERED_POLICY})

    async def test_an_openvpn_connection_gets_its_record_and_counts_as_usage(
        self, customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
    ) -> None:
        alice = await customer("personal-monthly", devices=1)
        ams = await node("ams-1")
        started = wall.now
        await openvpn_session(ams, alice.key(0), wall)
        records, _counters = await rows(runtime)
        [row] = records
        assert (row.account_id, row.device_id, row.node_name) == (
            alice.account.id,
            alice.devices[0].id,
            "ams-1",
        )
        assert row.started_at == started
        assert (row.rx_bytes, row.tx_bytes) == (1_100, 2_200)
        assert row.ended_at is not None


async def test_strict_mode_writes_nothing_of_openvpn_connections(
    customer: MakeCustomer, node: MakeNode, runtime: Runtime, wall: Wall
) -> None:
    alice = await customer("personal-monthly", devices=1)
    ams = await node("ams-1")
    await openvpn_session(ams, alice.key(0), wall)
    assert await rows(runtime) == ([], 0)
