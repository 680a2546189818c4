"""OpenVPN in the panel: make a sign-in (password shown once), rotate, revoke, download the
.ovpn per server that offers OpenVPN; the servers page names each server's protocols."""

from __future__ import annotations

import re

import httpx

from burrow.control.db import unit_of_work
from burrow.control.models import Node
from burrow.control.runtime import Runtime
from burrow.node.pki import make_pki
from burrow.wire import check_openvpn_secret
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_device, create_node
from tests.support.web import post_form


async def openvpn_node(runtime: Runtime, name: str, *, openvpn: bool = True) -> Node:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, name=name, endpoint_host=f"{name}.example.net")
        if openvpn:
            pki = make_pki(name, f"{name}.example.net")
            node.openvpn_ca = pki.ca_certificate
            node.openvpn_tls_crypt = pki.tls_crypt_key
            node.openvpn_transports = "udp:1194 tcp:443"
    return node


async def test_make_rotate_revoke_and_download_in_the_panel(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    ovpn = await openvpn_node(runtime, "ams-1")
    await openvpn_node(runtime, "fra-1", openvpn=False)
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, customer.account, name="Laptop")
    url = f"/devices/{device.id}/openvpn"

    detail = await client.get(f"/devices/{device.id}")
    assert f'href="{url}"' in detail.text
    page = await client.get(url)
    assert 'id="no-openvpn-credential"' in page.text
    # Only the server that offers OpenVPN has a profile.
    assert f"/devices/{device.id}/openvpn/{ovpn.id}.ovpn" in page.text
    assert "fra-1" not in page.text

    made = await post_form(client, url, {"username": "laptop-vpn"})
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    password = re.search(r'id="openvpn-password">([^<]+)<', made.text)
    assert password is not None
    again = await client.get(url)
    assert password.group(1) not in again.text
    assert "laptop-vpn" in again.text

    rotated = await post_form(client, f"{url}/rotate", {}, page=url)
    new_password = re.search(r'id="openvpn-password">([^<]+)<', rotated.text)
    assert new_password is not None
    assert new_password.group(1) != password.group(1)
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        from burrow.control.credentials.repository import CredentialRepository

        row = await CredentialRepository(session).get(device.id, "openvpn")
        assert row is not None
        assert check_openvpn_secret(row.verifier, new_password.group(1))

    profile = await client.get(f"/devices/{device.id}/openvpn/{ovpn.id}.ovpn")
    assert profile.status_code == 200
    assert "remote ams-1.example.net 443 tcp" in profile.text
    assert "<tls-crypt>" in profile.text

    revoked = await post_form(client, f"{url}/revoke", {}, page=url, follow=True)
    assert "revoked" in revoked.text
    assert 'id="no-openvpn-credential"' in revoked.text


async def test_a_taken_username_is_shown_next_to_its_field(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    first = await web_customer(sign_in=False)
    async with unit_of_work(runtime.sessionmaker) as session:
        theirs = await create_device(session, first.account, name="Theirs")
    second = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        mine = await create_device(session, second.account, name="Mine")
    from burrow.control.credentials.schemas import CredentialCreate
    from burrow.control.credentials.service import credential as credential_service

    async with unit_of_work(runtime.sessionmaker) as session:
        await credential_service.issue(
            session,
            runtime,
            first.account,
            theirs.id,
            CredentialCreate(protocol="openvpn", username="same-name"),
        )
    url = f"/devices/{mine.id}/openvpn"
    refused = await post_form(client, url, {"username": "same-name"})
    assert refused.status_code == 409
    assert "already in use" in refused.text
    assert 'id="openvpn-password"' not in refused.text


async def test_the_servers_page_names_each_servers_protocols(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    ovpn = await openvpn_node(runtime, "ams-1")
    plain = await openvpn_node(runtime, "fra-1", openvpn=False)
    page = await client.get("/servers")
    rows = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(
            r'<tr id="server-(\d+)">.*?class="server-protocols">([^<]*)<', page.text, re.S
        )
    }
    assert rows == {ovpn.id: "WireGuard, OpenVPN", plain.id: "WireGuard"}
    listed = (await client.get("/api/v1/servers")).json()
    by_id = {s["id"]: s["protocols"] for s in listed}
    assert by_id[ovpn.id] == ["wireguard", "openvpn"]
    assert by_id[plain.id] == ["wireguard"]
