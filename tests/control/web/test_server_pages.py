"""Servers by country and city, with load and the recommended one."""

from __future__ import annotations

import re

import httpx

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import Node
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.node.pki import make_pki
from burrow.wire import API_PREFIX
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_subscription,
)


async def test_servers_are_grouped_with_a_recommended_one(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    empty = await client.get("/servers")
    assert empty.status_code == 200
    assert 'id="no-servers"' in empty.text
    async with unit_of_work(runtime.sessionmaker) as session:
        ams = await create_node(session, name="ams-1")
        fra = await create_node(session, name="fra-1")
        fra.country, fra.city = "de", "Frankfurt"
    page = await client.get("/servers")
    assert page.status_code == 200
    assert page.text.index('id="h-country-DE"') < page.text.index('id="h-country-NL"')
    assert "Frankfurt" in page.text
    assert "Amsterdam" in page.text
    assert 'id="recommended-server"' in page.text
    assert "least busy" not in page.text  # no server has said how busy it is
    assert page.text.count('badge-ok">Recommended') == 1
    assert f'id="server-{ams.id}"' in page.text
    # Neither has reported: their load is unknown, not zero.
    assert page.text.count('<span class="server-load" title="No recent report') == 2


async def test_a_server_lists_ikev2_once_its_agent_announced_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ca = make_pki("ams-1", "ike.example.net").ca_certificate
    async with unit_of_work(runtime.sessionmaker) as session:
        ams = await create_node(session, name="ams-1", ikev2_host="ike.example.net", ikev2_ca=ca)
        fra = await create_node(session, name="fra-1")
    page = await client.get("/servers")
    protocols = dict(
        re.findall(r'<tr id="server-(\d+)">.*?class="server-protocols">([^<]*)<', page.text, re.S)
    )
    assert protocols == {str(ams.id): "WireGuard, IKEv2", str(fra.id): "WireGuard"}


async def _reporting_node(
    client: httpx.AsyncClient, runtime: Runtime, name: str, capacity: int, connected: int
) -> Node:
    """A node whose agent reports ``connected`` devices (each its own customer's) through the
    node API; ``connected=-1``: a node that never reported."""
    token = new_token("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await create_node(session, name=name, capacity=capacity)
        row.node_token_hash = hash_token(token)
        keys = []
        for _ in range(max(0, connected)):
            account = await create_account(session)
            await create_subscription(session, account)
            keys.append((await create_device(session, account)).public_key)
            await desired_state_service.refresh_account(session, runtime, account.id)
    if connected >= 0:
        peers = [{"public_key": key, "connected": True} for key in keys]
        response = await client.post(
            f"{API_PREFIX}/report",
            json={"boot_id": "boot-1", "seq": 1, "revision": 0, "peers": peers},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "accepted": True,
            "last_seq": 1,
            "blocked": [],
            "blocked_connections": [],
        }
    return row


def _shown_load(page: httpx.Response, node: Node) -> str:
    found = re.search(
        rf'<tr id="server-{node.id}">.*?<span class="server-load"[^>]*>([^<]*)</span>',
        page.text,
        re.S,
    )
    assert found is not None, f"no load shown for {node.name}"
    return found.group(1)


async def test_live_load_is_each_nodes_report_and_the_least_loaded_is_recommended(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ams = await _reporting_node(client, runtime, "ams-1", capacity=4, connected=3)
    fra = await _reporting_node(client, runtime, "fra-1", capacity=10, connected=1)
    par = await _reporting_node(client, runtime, "par-1", capacity=8, connected=2)
    # Never reported: its load is unknown (shown as such, not as 0%), so it is not recommended.
    waw = await _reporting_node(client, runtime, "waw-1", capacity=10, connected=-1)

    page = await client.get("/servers")
    assert page.status_code == 200, page.text
    shown = {n.name: _shown_load(page, n) for n in (ams, fra, par, waw)}
    assert shown == {"ams-1": "75%", "fra-1": "10%", "par-1": "25%", "waw-1": "—"}

    # The page recommends what the API (the nodes service) recommends: the least loaded node
    # among those reporting.
    api = await client.get("/api/v1/servers")
    assert api.status_code == 200, api.text
    assert [s["name"] for s in api.json() if s["recommended"]] == ["fra-1"]
    recommended = re.search(r'id="recommended-server"[^>]*>(.*?)</p>', page.text, re.S)
    assert recommended is not None
    assert "<strong>fra-1</strong>" in recommended.group(1)
    assert "the least busy server" in recommended.group(1)
    badge = re.search(r'<tr id="server-(\d+)">(?:(?!</tr>).)*Recommended</span>', page.text, re.S)
    assert badge is not None
    assert int(badge.group(1)) == fra.id
    assert page.text.count('badge-ok">Recommended') == 1
