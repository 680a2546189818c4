"""The nodes admin API and the customers' server list, through the real app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from burrow.control.db import unit_of_work
from burrow.control.models import NodeStatus
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.wire import API_PREFIX, NodeReport, PeerStatus
from tests.support.factories import (
    create_account,
    create_node,
    create_session_token,
    new_public_key,
)

NODES = "/api/v1/admin/nodes"
SERVERS = "/api/v1/servers"
AMS = {
    "name": "ams-1",
    "country": "nl",
    "city": "Amsterdam",
    "endpoint_host": "ams-1.vpn.example.net",
    "endpoint_port": 51820,
    "egress_ipv4": "203.0.113.7",
    "capacity": 200,
}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def bearer(runtime: Runtime, *, admin: bool) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        token = await create_session_token(session, account)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin(runtime: Runtime) -> dict[str, str]:
    return await bearer(runtime, admin=True)


async def test_creating_a_node_returns_the_enrollment_command_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(NODES, json=AMS, headers=admin)

    assert response.status_code == 201, response.text
    body = response.json()
    node, enrollment = body["node"], body["enrollment"]
    assert (node["name"], node["country"], node["status"]) == ("ams-1", "NL", "pending")
    assert node["endpoint"] == "ams-1.vpn.example.net:51820"
    assert node["egress_ipv4"] == "203.0.113.7"
    assert node["health"]["state"] == "never-reported"
    assert enrollment["token"].startswith("bwe_")
    assert enrollment["command"] == (
        f"burrow node enroll --control http://testserver --token {enrollment['token']}"
    )
    assert node["enrollment_expires_at"] == enrollment["expires_at"]
    # The token is not shown again.
    listed = await client.get(f"{NODES}/{node['id']}", headers=admin)
    assert enrollment["token"] not in listed.text
    # And it works, once.
    enroll = {"token": enrollment["token"], "public_key": new_public_key()}
    assert (await client.post(f"{API_PREFIX}/enroll", json=enroll)).status_code == 200


async def test_a_duplicate_name_is_a_conflict(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert (await client.post(NODES, json=AMS, headers=admin)).status_code == 201
    again = await client.post(NODES, json={**AMS, "name": "AMS-1"}, headers=admin)
    assert assert_problem(again, 409)["field"] == "name"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "-ams"}, "name"),
        ({"name": "ams_1"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"country": "XX"}, "country"),
        ({"country": "Netherlands"}, "country"),
        ({"city": "   "}, "city"),
        ({"city": "Ams\x00terdam"}, "city"),
        ({"endpoint_host": "not a host"}, "endpoint_host"),
        ({"endpoint_port": 0}, "endpoint_port"),
        ({"egress_ipv4": "2001:db8::1"}, "egress_ipv4"),
        ({"egress_ipv6": "203.0.113.7"}, "egress_ipv6"),
        ({"capacity": 0}, "capacity"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_node_fields_are_refused_with_the_field_named(
    client: httpx.AsyncClient, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    response = await client.post(NODES, json={**AMS, **change}, headers=admin)
    body = assert_problem(response, 422)
    assert field in body["detail"]


async def test_only_admins_manage_nodes(client: httpx.AsyncClient, runtime: Runtime) -> None:
    customer = await bearer(runtime, admin=False)
    assert_problem(await client.post(NODES, json=AMS, headers=customer), 403)
    assert_problem(await client.get(NODES, headers=customer), 403)
    assert_problem(await client.get(NODES), 401)


async def test_list_show_and_update_a_node(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (await client.post(NODES, json=AMS, headers=admin)).json()["node"]
    await client.post(NODES, json={**AMS, "name": "fra-1", "country": "DE"}, headers=admin)
    url = f"{NODES}/{created['id']}"

    listed = await client.get(NODES, headers=admin)
    assert [n["name"] for n in listed.json()] == ["ams-1", "fra-1"]

    patched = await client.patch(
        url,
        json={"endpoint_port": 51821, "egress_ipv4": None, "egress_ipv6": "2001:db8::7"},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["endpoint"], body["egress_ipv4"], body["egress_ipv6"]) == (
        "ams-1.vpn.example.net:51821",
        None,
        "2001:db8::7",
    )
    assert body["city"] == "Amsterdam"  # untouched
    assert (await client.get(url, headers=admin)).json()["endpoint_port"] == 51821
    assert_problem(await client.patch(url, json={"name": "fra-1"}, headers=admin), 409)
    assert_problem(await client.patch(url, json={"capacity": -5}, headers=admin), 422)


async def test_a_node_has_several_egress_addresses(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(
        NODES, json={**AMS, "egress_ipv4_extra": ["203.0.113.8", "203.0.113.9"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    node = created.json()["node"]
    assert (node["egress_ipv4"], node["egress_ipv4_extra"]) == (
        "203.0.113.7",
        ["203.0.113.8", "203.0.113.9"],
    )
    url = f"{NODES}/{node['id']}"
    patched = await client.patch(url, json={"egress_ipv4_extra": "203.0.113.10"}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["egress_ipv4_extra"] == ["203.0.113.10"]
    for body, words in (
        ({"egress_ipv4_extra": ["203.0.113.7"]}, "more than once"),
        ({"egress_ipv4_extra": ["2001:db8::1"]}, "not an IPv4 address"),
        ({"egress_ipv4": None}, "first egress address"),
    ):
        refused = await client.patch(url, json=body, headers=admin)
        assert_problem(refused, 422)
        assert words in refused.text, refused.text
    cleared = await client.patch(url, json={"egress_ipv4_extra": []}, headers=admin)
    assert cleared.json()["egress_ipv4_extra"] == []
    lone = await client.post(
        NODES,
        json={**AMS, "name": "fra-1", "egress_ipv4": None, "egress_ipv4_extra": ["192.0.2.1"]},
        headers=admin,
    )
    assert_problem(lone, 422)
    assert "first egress address" in lone.text


@pytest.mark.parametrize("node_id", ["0", "999999", str(2**63), "abc"])
async def test_an_unknown_node_is_not_found_or_invalid(
    client: httpx.AsyncClient, admin: dict[str, str], node_id: str
) -> None:
    response = await client.get(f"{NODES}/{node_id}", headers=admin)
    assert response.status_code in (404, 422)
    assert_problem(response, response.status_code)


async def test_retiring_a_node_ends_its_enrollment_and_its_token(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (await client.post(NODES, json=AMS, headers=admin)).json()
    node_id = created["node"]["id"]

    retired = await client.post(f"{NODES}/{node_id}/retire", headers=admin)

    assert retired.status_code == 200, retired.text
    assert retired.json()["status"] == "retired"
    assert retired.json()["retired_at"] is not None
    enroll = {"token": created["enrollment"]["token"], "public_key": new_public_key()}
    assert_problem(await client.post(f"{API_PREFIX}/enroll", json=enroll), 401)
    assert_problem(await client.post(f"{NODES}/{node_id}/enrollment-token", headers=admin), 409)


async def test_a_new_enrollment_token_voids_the_previous_one(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (await client.post(NODES, json=AMS, headers=admin)).json()
    node_id = created["node"]["id"]

    fresh = await client.post(f"{NODES}/{node_id}/enrollment-token", headers=admin)

    assert fresh.status_code == 201, fresh.text
    old = {"token": created["enrollment"]["token"], "public_key": new_public_key()}
    assert_problem(await client.post(f"{API_PREFIX}/enroll", json=old), 401)
    new = {"token": fresh.json()["token"], "public_key": new_public_key()}
    assert (await client.post(f"{API_PREFIX}/enroll", json=new)).status_code == 200


async def test_health_comes_from_the_nodes_reports(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, capacity=10)
    peers = tuple(PeerStatus(public_key=new_public_key(), connected=True) for _ in range(3))
    async with unit_of_work(runtime.sessionmaker) as session:
        await node_service.record_report(
            session, runtime, node, NodeReport(boot_id="b", seq=1, revision=7, peers=peers)
        )

    body = (await client.get(f"{NODES}/{node.id}", headers=admin)).json()

    health = body["health"]
    assert health["state"] == "online"
    assert health["connected_devices"] == 3
    assert health["applied_revision"] == 7
    assert 0 <= health["last_report_age_seconds"] < 5


async def test_the_server_list_shows_active_nodes_and_recommends_the_least_loaded(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        busy = await create_node(session, name="ams-1", capacity=10)
        quiet = await create_node(session, name="ams-2", capacity=10)
        await create_node(session, name="ams-3", status=NodeStatus.pending, wg_public_key=None)
        await create_node(session, name="ams-4", status=NodeStatus.retired)

    async def report(node_id: int, connected: int) -> None:
        peers = tuple(
            PeerStatus(public_key=new_public_key(), connected=True) for _ in range(connected)
        )
        row = busy if node_id == busy.id else quiet
        async with unit_of_work(runtime.sessionmaker) as session:
            await node_service.record_report(
                session, runtime, row, NodeReport(boot_id="b", seq=1, revision=0, peers=peers)
            )

    await report(busy.id, 5)
    await report(quiet.id, 1)

    response = await client.get(SERVERS)  # no sign-in needed

    assert response.status_code == 200, response.text
    servers = {s["name"]: s for s in response.json()}
    assert set(servers) == {"ams-1", "ams-2"}
    assert (servers["ams-1"]["load"], servers["ams-2"]["load"]) == (0.5, 0.1)
    assert [s["name"] for s in response.json() if s["recommended"]] == ["ams-2"]
    assert servers["ams-2"]["endpoint"] == "vpn.example.net:51820"
    assert servers["ams-2"]["public_key"] == quiet.wg_public_key


async def test_a_nodes_uplink_bandwidth_is_set_cleared_and_checked(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post(NODES, json={**AMS, "uplink_mbit": 1000}, headers=admin)
    assert created.status_code == 201, created.text
    node = created.json()["node"]
    assert node["uplink_mbit"] == 1000
    url = f"{NODES}/{node['id']}"
    assert (await client.patch(url, json={"uplink_mbit": None}, headers=admin)).json()[
        "uplink_mbit"
    ] is None
    body = assert_problem(await client.patch(url, json={"uplink_mbit": 0}, headers=admin), 422)
    assert "uplink_mbit" in body["detail"]
