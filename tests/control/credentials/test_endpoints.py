"""Device credentials for OpenVPN through the real app, and what nodes then see of them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import new_key_pair
from burrow.control.models import Node
from burrow.control.runtime import Runtime
from burrow.wire import PeerSpec, check_openvpn_secret
from tests.control.devices.conftest import Customer, MakeCustomer, MakeNode

DEVICES = "/api/v1/devices"


async def add_device(client: httpx.AsyncClient, customer: Customer, name: str = "Laptop") -> int:
    response = await client.post(
        DEVICES, json={"name": name, "public_key": new_key_pair()[1]}, headers=customer.headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def issue(
    client: httpx.AsyncClient, customer: Customer, device_id: int, **body: Any
) -> httpx.Response:
    return await client.post(
        f"{DEVICES}/{device_id}/credentials",
        json={"protocol": "openvpn", **body},
        headers=customer.headers,
    )


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["detail"]
    return body


async def served_peers(runtime: Runtime, node: Node) -> list[PeerSpec]:
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        state = await desired_state_service.full_state(session, runtime, node)
    return list(state.peers)


async def test_issue_shows_the_password_once_and_nodes_get_only_its_verifier(
    client: httpx.AsyncClient,
    runtime: Runtime,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = await make_node()
    customer = await make_customer()
    device_id = await add_device(client, customer)
    caplog.set_level(logging.DEBUG)

    response = await issue(client, customer, device_id)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    password, username = body["password"], body["username"]
    assert body["protocol"] == "openvpn"
    assert len(password) >= 40  # 256 bits

    listed = await client.get(f"{DEVICES}/{device_id}/credentials", headers=customer.headers)
    assert listed.status_code == 200
    assert listed.json() == [
        {"protocol": "openvpn", "username": username, "created_at": body["created_at"]}
    ]
    assert password not in caplog.text

    (peer,) = await served_peers(runtime, node)
    credential = peer.credential("openvpn")
    assert credential is not None
    assert credential.username == username
    assert password not in credential.verifier
    assert check_openvpn_secret(credential.verifier, password)
    assert not check_openvpn_secret(credential.verifier, password + "x")
    # The subscription's key and per-server limits travel with the peer (strict policy:
    # one WireGuard connection per server, OpenVPN unlimited).
    assert peer.subscription
    assert peer.per_server_limit("wireguard") == 1
    assert peer.per_server_limit("openvpn") is None


async def test_devices_of_one_subscription_share_a_key_that_names_nobody(
    client: httpx.AsyncClient, runtime: Runtime, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    node = await make_node()
    first, second = await make_customer(), await make_customer()
    await add_device(client, first, "a")
    await add_device(client, first, "b")
    await add_device(client, second, "c")
    peers = await served_peers(runtime, node)
    keys = [p.subscription for p in peers]
    assert keys[0] == keys[1] != keys[2]
    assert all(str(first.account.id) != k and str(second.account.id) != k for k in keys)


async def test_rotate_replaces_the_secret_and_revoke_removes_it_from_every_node(
    client: httpx.AsyncClient, runtime: Runtime, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    node = await make_node()
    customer = await make_customer()
    device_id = await add_device(client, customer)
    first = (await issue(client, customer, device_id)).json()
    before = await desired_state_service_revision(runtime)

    rotated = await client.post(
        f"{DEVICES}/{device_id}/credentials/openvpn/rotate", headers=customer.headers
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["username"] == first["username"]
    (peer,) = await served_peers(runtime, node)
    verifier = peer.credential("openvpn").verifier  # type: ignore[union-attr]
    assert check_openvpn_secret(verifier, rotated.json()["password"])
    assert not check_openvpn_secret(verifier, first["password"])
    assert await desired_state_service_revision(runtime) > before

    gone = await client.delete(
        f"{DEVICES}/{device_id}/credentials/openvpn", headers=customer.headers
    )
    assert gone.status_code == 204
    (peer,) = await served_peers(runtime, node)
    assert peer.credentials == ()
    again = await client.delete(
        f"{DEVICES}/{device_id}/credentials/openvpn", headers=customer.headers
    )
    assert "no OpenVPN credentials" in assert_problem(again, 404)["detail"]


async def desired_state_service_revision(runtime: Runtime) -> int:
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        return await desired_state_service.current_revision(session)


async def test_clear_errors(
    client: httpx.AsyncClient, make_customer: MakeCustomer, caplog: pytest.LogCaptureFixture
) -> None:
    customer, other = await make_customer(), await make_customer()
    device_id = await add_device(client, customer)
    other_device = await add_device(client, other)

    assert (await issue(client, customer, device_id, username="laptop-vpn")).status_code == 201
    taken = await issue(client, other, other_device, username="laptop-vpn")
    assert "already in use" in assert_problem(taken, 409)["detail"]
    twice = await issue(client, customer, device_id)
    assert "already has OpenVPN credentials" in assert_problem(twice, 409)["detail"]
    bad_name = await issue(client, other, other_device, username="a b")
    assert assert_problem(bad_name, 422)["detail"]
    wireguard = await client.post(
        f"{DEVICES}/{device_id}/credentials",
        json={"protocol": "wireguard"},
        headers=customer.headers,
    )
    assert "openvpn" in assert_problem(wireguard, 422)["detail"]
    # Someone else's device is not found, and nothing of it is changed.
    foreign = await issue(client, other, device_id)
    assert_problem(foreign, 404)
    rotate_foreign = await client.post(
        f"{DEVICES}/{device_id}/credentials/openvpn/rotate", headers=other.headers
    )
    assert_problem(rotate_foreign, 404)
    unknown = await client.post(
        f"{DEVICES}/{device_id}/credentials/pptp/rotate", headers=customer.headers
    )
    assert_problem(unknown, 422)
    assert "Traceback" not in caplog.text


async def test_twenty_racing_issues_for_one_username_make_one_credential(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    customers = [await make_customer() for _ in range(4)]
    devices = [await add_device(client, c) for c in customers]
    answers = await asyncio.gather(
        *(
            issue(client, customers[n % 4], devices[n % 4], username="shared-name")
            for n in range(20)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1, codes
    assert set(codes) == {201, 409}


# --- the .ovpn profile ---------------------------------------------------------------------------


async def node_with_token(runtime: Runtime, make_node: MakeNode) -> tuple[Node, dict[str, str]]:
    from burrow.control.security import hash_token, new_token

    node = await make_node(endpoint_host="vpn1.example.net")
    token = new_token("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        row.node_token_hash = hash_token(token)
    return node, {"Authorization": f"Bearer {token}"}


def offer_body() -> dict[str, Any]:
    from burrow.node.pki import make_pki

    pki = make_pki("ams-1", "vpn1.example.net")
    return {
        "ca_certificate": pki.ca_certificate,
        "tls_crypt_key": pki.tls_crypt_key,
        "transports": ["udp:1194", "tcp:443"],
    }


async def test_the_ovpn_carries_the_nodes_ca_tls_crypt_and_both_transports(
    client: httpx.AsyncClient, runtime: Runtime, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    node, node_headers = await node_with_token(runtime, make_node)
    customer = await make_customer()
    device_id = await add_device(client, customer, "Work laptop")
    url = f"{DEVICES}/{device_id}/openvpn-config"

    # Before the node said anything about OpenVPN: a clear refusal.
    early = await client.get(url, params={"node_id": node.id}, headers=customer.headers)
    assert "does not offer OpenVPN" in assert_problem(early, 409)["detail"]

    body = offer_body()
    offered = await client.put("/node-api/v1/openvpn", json=body, headers=node_headers)
    assert offered.status_code == 204, offered.text
    username = (await issue(client, customer, device_id)).json()["username"]

    response = await client.get(url, params={"node_id": node.id}, headers=customer.headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"].endswith('.ovpn"')
    text = response.text
    lines = text.splitlines()
    assert "client" in lines
    assert "auth-user-pass" in lines
    assert "remote-cert-tls server" in lines
    assert "data-ciphers AES-256-GCM:CHACHA20-POLY1305" in lines
    assert lines.index("remote vpn1.example.net 1194 udp") < lines.index(
        "remote vpn1.example.net 443 tcp"
    )
    assert body["ca_certificate"].strip() in text
    assert body["tls_crypt_key"].strip() in text
    assert username in text
    assert "PRIVATE KEY" not in text
    for weak in ("BF-CBC", "DES", "comp-lzo", "cipher none"):
        assert weak not in text


async def test_ovpn_requests_that_cannot_be_served_get_clear_errors(
    client: httpx.AsyncClient, runtime: Runtime, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    node, node_headers = await node_with_token(runtime, make_node)
    customer, other = await make_customer(), await make_customer()
    device_id = await add_device(client, customer)
    url = f"{DEVICES}/{device_id}/openvpn-config"
    for params, status in (
        ({}, 422),
        ({"node_id": "ams"}, 422),
        ({"node_id": 0}, 422),
        ({"node_id": 999_999}, 404),
    ):
        assert_problem(await client.get(url, params=params, headers=customer.headers), status)
    # Another customer's device is not found.
    foreign = await client.get(url, params={"node_id": node.id}, headers=other.headers)
    assert_problem(foreign, 404)
    # A node's offer is checked too: no private key, real transports, a token.
    bad = offer_body()
    bad["ca_certificate"] = "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n"
    refused = await client.put("/node-api/v1/openvpn", json=bad, headers=node_headers)
    assert_problem(refused, 422)
    bad = offer_body() | {"transports": ["sctp:1"]}
    assert_problem(await client.put("/node-api/v1/openvpn", json=bad, headers=node_headers), 422)
    anonymous = await client.put("/node-api/v1/openvpn", json=offer_body())
    assert_problem(anonymous, 401)
