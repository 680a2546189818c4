"""One lease broker for every protocol: per-server rules per protocol, the simultaneous limit
across nodes and protocols, and the cuts a node is told to make for OpenVPN."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from burrow.control.connections.limits import per_server_reason
from tests.control.connections.conftest import REPORT, MakeCustomer, MakeNode, ReportingNode

pytestmark = pytest.mark.usefixtures("clock")

BUSINESS_REASON = "Your plan allows 1 simultaneous connection; disconnect another device."


async def report(node: ReportingNode, *connections: tuple[str, str]) -> dict[str, Any]:
    """Report (protocol, public key) connections; returns the whole acknowledgement."""
    node.seq += 1
    peers = [
        {"public_key": key, "protocol": protocol, "connected": True, "rx_bytes": 0, "tx_bytes": 0}
        for protocol, key in connections
    ]
    body = {"boot_id": node.boot_id, "seq": node.seq, "revision": 0, "peers": peers}
    response = await node.client.post(REPORT, json=body, headers=node.headers)
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


async def test_per_server_rule_is_per_protocol(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    # Strict policy, personal plan: one WireGuard connection per server, OpenVPN unlimited.
    alice = await customer("personal-monthly", devices=3)
    ams = await node("ams-1")

    ack = await report(ams, ("openvpn", alice.key(0)), ("openvpn", alice.key(1)))
    assert ack["blocked"] == []
    assert ack["blocked_connections"] == []
    # A WireGuard device next to them is the first WireGuard connection here: admitted.
    ack = await report(
        ams, ("openvpn", alice.key(0)), ("openvpn", alice.key(1)), ("wireguard", alice.key(2))
    )
    assert ack["blocked"] == []
    assert ack["blocked_connections"] == []
    # A second WireGuard device on this node is blocked; the OpenVPN ones still pass.
    ack = await report(
        ams,
        ("openvpn", alice.key(0)),
        ("openvpn", alice.key(1)),
        ("wireguard", alice.key(2)),
        ("wireguard", alice.key(0)),
    )
    assert ack["blocked"] == [alice.key(0)]
    assert ack["blocked_connections"] == []
    device = await client.get(f"/api/v1/devices/{alice.devices[0].id}", headers=alice.headers)
    # The device is connected (over OpenVPN) even though its WireGuard attempt is refused.
    assert device.json()["connection"]["state"] == "connected"
    assert per_server_reason(1, "wireguard", "ams-1").startswith("Your plan allows 1 WireGuard")


async def test_simultaneous_limit_counts_across_nodes_and_protocols(
    customer: MakeCustomer, node: MakeNode, client: httpx.AsyncClient
) -> None:
    bob = await customer("business-monthly", devices=2)
    ams, fra = await node("ams-1"), await node("fra-1")

    assert (await report(ams, ("wireguard", bob.key(0))))["blocked"] == []
    ack = await report(fra, ("openvpn", bob.key(1)))
    assert ack["blocked"] == []
    assert ack["blocked_connections"] == [
        {"protocol": "openvpn", "public_key": bob.key(1), "reason": BUSINESS_REASON}
    ]
    device = await client.get(f"/api/v1/devices/{bob.devices[1].id}", headers=bob.headers)
    assert device.json()["connection"] == {
        "state": "blocked",
        "reason": BUSINESS_REASON,
        "node_name": "fra-1",
    }
    # The WireGuard device leaves ams: the OpenVPN connection on fra passes at its next report.
    assert (await report(ams))["blocked"] == []
    ack = await report(fra, ("openvpn", bob.key(1)))
    assert ack["blocked_connections"] == []
