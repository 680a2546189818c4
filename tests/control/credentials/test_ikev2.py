"""IKEv2 credentials: the password shown once, nodes get only its NT hash (EAP-MSCHAPv2)."""

from __future__ import annotations

import base64
import json
import logging
import plistlib

import httpx
import pytest
from cryptography import x509

from burrow.control.db import unit_of_work
from burrow.control.models import Node
from burrow.control.runtime import Runtime
from burrow.wire import ikev2_nt_hash, ikev2_verifier
from tests.control.credentials.test_endpoints import add_device, assert_problem, served_peers
from tests.control.devices.conftest import MakeCustomer, MakeNode
from tests.node.drivers.ikev2_lab import make_pki

DEVICES = "/api/v1/devices"


def test_the_verifier_is_the_nt_hash() -> None:
    # MD4 of UTF-16LE "password": the value Samba's and Microsoft's documentation give.
    assert ikev2_verifier("password") == "nt$8846f7eaee8fb117ad06bdd830b7586c"
    assert ikev2_nt_hash("nt$8846f7eaee8fb117ad06bdd830b7586c") == (
        "8846f7eaee8fb117ad06bdd830b7586c"
    )
    assert ikev2_nt_hash("sha256$00$11") is None
    assert ikev2_nt_hash("nt$not-hex") is None


async def test_ikev2_credentials_reach_nodes_as_an_nt_hash_only(
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
    response = await client.post(
        f"{DEVICES}/{device_id}/credentials",
        json={"protocol": "ikev2"},
        headers=customer.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    password, username = body["password"], body["username"]
    assert body["protocol"] == "ikev2"
    assert password not in caplog.text

    (peer,) = await served_peers(runtime, node)
    credential = peer.credential("ikev2")
    assert credential is not None
    assert credential.username == username
    assert credential.verifier == ikev2_verifier(password)
    assert password not in credential.verifier
    # The strict policy: one IKEv2 connection per server per subscription.
    assert peer.per_server_limit("ikev2") == 1


async def _node_with_ikev2(runtime: Runtime, node: Node, host: str, ca_pem: str) -> None:
    """As if the node's agent had announced IKEv2 (``PUT /node-api/v1/ikev2``)."""
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        row.ikev2_host = host
        row.ikev2_ca = ca_pem


async def test_profiles_per_node_carry_its_ca_and_the_devices_username(
    client: httpx.AsyncClient,
    runtime: Runtime,
    make_customer: MakeCustomer,
    make_node: MakeNode,
) -> None:
    # IKEv2 is served under a name of its own: the profiles name it, not the endpoint.
    node = await make_node(endpoint_host="vpn7.example.net")
    pki = make_pki("ike7.example.net")
    await _node_with_ikev2(runtime, node, "ike7.example.net", pki.ca_pem)
    customer = await make_customer()
    device_id = await add_device(client, customer)
    issued = await client.post(
        f"{DEVICES}/{device_id}/credentials", json={"protocol": "ikev2"}, headers=customer.headers
    )
    username = issued.json()["username"]
    url = f"{DEVICES}/{device_id}/ikev2-profile"

    apple = await client.get(
        url, params={"node_id": node.id, "kind": "mobileconfig"}, headers=customer.headers
    )
    assert apple.status_code == 200, apple.text
    assert apple.headers["content-type"] == "application/x-apple-aspen-config"
    assert apple.headers["content-disposition"].endswith('.mobileconfig"')
    assert apple.headers["cache-control"] == "no-store"
    vpn = plistlib.loads(apple.content)["PayloadContent"][1]["IKEv2"]
    assert vpn["RemoteAddress"] == "ike7.example.net"
    assert vpn["LocalIdentifier"] == username

    android = await client.get(
        url, params={"node_id": node.id, "kind": "sswan"}, headers=customer.headers
    )
    assert android.status_code == 200, android.text
    assert android.headers["content-type"] == "application/vnd.strongswan.profile"
    sswan = json.loads(android.content)
    assert sswan["local"]["eap_id"] == username
    assert x509.load_der_x509_certificate(base64.b64decode(sswan["remote"]["cert"])) == (
        x509.load_pem_x509_certificate(pki.ca_pem.encode())
    )

    windows = await client.get(
        url, params={"node_id": node.id, "kind": "windows"}, headers=customer.headers
    )
    assert windows.status_code == 200, windows.text
    assert "-ServerAddress 'ike7.example.net'" in windows.text


async def test_profiles_say_what_is_missing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    make_customer: MakeCustomer,
    make_node: MakeNode,
) -> None:
    node = await make_node(name="ams-4")
    customer = await make_customer()
    device_id = await add_device(client, customer)
    url = f"{DEVICES}/{device_id}/ikev2-profile"
    params = {"node_id": node.id, "kind": "sswan"}
    # No IKEv2 credentials yet.
    assert_problem(await client.get(url, params=params, headers=customer.headers), 404)
    await client.post(
        f"{DEVICES}/{device_id}/credentials", json={"protocol": "ikev2"}, headers=customer.headers
    )
    # The server has not announced IKEv2 (its OpenVPN CA alone is not enough).
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        row.openvpn_ca = make_pki("vpn.example.net").ca_pem
    body = assert_problem(await client.get(url, params=params, headers=customer.headers), 409)
    assert "ams-4 does not offer IKEv2" in body["detail"]
    assert "pick another server" in body["detail"]
    # A kind nobody imports.
    await _node_with_ikev2(runtime, node, "vpn.example.net", make_pki("vpn.example.net").ca_pem)
    bad = {"node_id": node.id, "kind": "pdf"}
    assert_problem(await client.get(url, params=bad, headers=customer.headers), 422)
    # Someone else's device.
    other = await make_customer()
    assert_problem(await client.get(url, params=params, headers=other.headers), 404)
