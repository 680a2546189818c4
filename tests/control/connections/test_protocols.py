"""One lease broker for every protocol: per-server rules per protocol, the simultaneous limit
across nodes and protocols, and the cuts a node is told to make for OpenVPN."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from burrow.control.connections.limits import per_server_reason
from burrow.control.runtime import Runtime
from tests.control.connections.conftest import (
    REPORT,
    FakeClock,
    MakeCustomer,
    MakeNode,
    ReportingNode,
)

pytestmark = pytest.mark.usefixtures("clock")

BUSINESS_REASON = "Your plan allows 1 simultaneous connection; disconnect another device."


async def report(
    node: ReportingNode,
    *connections: tuple[str, str],
    refused: tuple[dict[str, str], ...] = (),
) -> dict[str, Any]:
    """Report (protocol, public key) connections; returns the whole acknowledgement."""
    node.seq += 1
    peers = [
        {"public_key": key, "protocol": protocol, "connected": True, "rx_bytes": 0, "tx_bytes": 0}
        for protocol, key in connections
    ]
    body: dict[str, Any] = {"boot_id": node.boot_id, "seq": node.seq, "revision": 0}
    body["peers"] = peers
    if refused:
        body["refused"] = list(refused)
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


# What the node says (a hostile node could write anything) and what the customer reads: the
# control plane's own words (this plan sets no OpenVPN per-server limit).
NODE_REASON = "Call +1 555 0100 to unlock your account."
SHOWN_REASON = (
    "ams-1 refused this device over OpenVPN; try again in a minute, or connect to another server."
)


async def test_a_refusal_the_node_made_shows_on_the_device_until_it_expires(
    customer: MakeCustomer,
    node: MakeNode,
    client: httpx.AsyncClient,
    runtime: Runtime,
    clock: FakeClock,
) -> None:
    alice = await customer("personal-monthly", devices=3)
    ams = await node("ams-1")

    async def connection(index: int) -> dict[str, Any]:
        url = f"/api/v1/devices/{alice.devices[index].id}"
        answer: dict[str, Any] = (await client.get(url, headers=alice.headers)).json()
        return answer["connection"]  # type: ignore[no-any-return]

    refusal = {"public_key": alice.key(1), "protocol": "openvpn", "reason": NODE_REASON}
    # Device 0 is connected; device 1 was refused by the node itself at connect time; a key
    # the control plane does not know, and a WireGuard "refusal" (WireGuard refuses nothing
    # at connect time), are ignored.
    ack = await report(
        ams,
        ("openvpn", alice.key(0)),
        refused=(
            refusal,
            {"public_key": "A" * 43 + "=", "protocol": "openvpn", "reason": "x"},
            {"public_key": alice.key(0), "protocol": "openvpn", "reason": "older try"},
            {"public_key": alice.key(2), "protocol": "wireguard", "reason": "made up"},
        ),
    )
    # A refusal is no lease: nothing to block or cut for it.
    assert (ack["blocked"], ack["blocked_connections"]) == ([], [])
    assert await connection(1) == {"state": "blocked", "reason": SHOWN_REASON, "node_name": "ams-1"}
    # A connected device stays connected, whatever else it tried.
    assert (await connection(0))["state"] == "connected"
    assert (await connection(2))["state"] == "idle"
    listing = await client.get("/api/v1/devices", headers=alice.headers)
    states = {d["id"]: d["connection"]["state"] for d in listing.json()}
    assert states[alice.devices[1].id] == "blocked"

    # Renewed by every report that lists it; gone once no report did for the lease TTL.
    ttl = runtime.settings.connection_lease_ttl_seconds
    clock.advance(ttl - 1)
    await report(ams, ("openvpn", alice.key(0)), refused=(refusal,))
    clock.advance(ttl - 1)
    assert (await connection(1))["state"] == "blocked"
    clock.advance(2)
    assert await connection(1) == {"state": "idle", "reason": None, "node_name": None}


async def test_a_malformed_refusal_is_a_clear_error(node: MakeNode) -> None:
    ams = await node("ams-1")
    body = {
        "boot_id": ams.boot_id,
        "seq": 1,
        "revision": 0,
        "refused": [{"public_key": "k", "protocol": "openvpn", "reason": "x" * 301}],
    }
    response = await ams.client.post(REPORT, json=body, headers=ams.headers)
    assert response.status_code == 422
    assert "reason" in response.text
