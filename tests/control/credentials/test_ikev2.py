"""IKEv2 credentials: the password shown once, nodes get only its NT hash (EAP-MSCHAPv2)."""

from __future__ import annotations

import logging

import httpx
import pytest

from burrow.control.runtime import Runtime
from burrow.wire import ikev2_nt_hash, ikev2_verifier
from tests.control.credentials.test_endpoints import add_device, served_peers
from tests.control.devices.conftest import MakeCustomer, MakeNode

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
