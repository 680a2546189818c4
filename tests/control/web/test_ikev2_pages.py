"""IKEv2 in the panel: make a sign-in (the secret shown once, the row keeps only its NT hash),
rotate, revoke, and per server that announced IKEv2 the .mobileconfig, .sswan and Windows
settings, none of them with the secret in it."""

from __future__ import annotations

import json
import plistlib
import re

import httpx
from cryptography import x509

from burrow.control.credentials.repository import CredentialRepository
from burrow.control.credentials.schemas import CredentialCreate
from burrow.control.credentials.service import credential as credential_service
from burrow.control.db import unit_of_work
from burrow.control.models import Node
from burrow.control.runtime import Runtime
from burrow.node.pki import make_pki
from burrow.wire import ikev2_verifier
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_device, create_node
from tests.support.web import post_form

PASSWORD = re.compile(r'id="ikev2-password">([^<]+)<')


async def ikev2_node(runtime: Runtime, name: str, *, ikev2: bool = True) -> Node:
    """A server whose IKEv2 host is not its WireGuard endpoint; ``ikev2=False``: one that
    serves OpenVPN only (its CA alone makes no IKEv2 profile)."""
    host = f"ike.{name}.example.net"
    pki = make_pki(name, host)
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(
            session,
            name=name,
            endpoint_host=f"{name}.example.net",
            ikev2_host=host if ikev2 else None,
            ikev2_ca=pki.ca_certificate if ikev2 else None,
        )
        node.openvpn_ca = pki.ca_certificate
    return node


async def test_make_download_rotate_and_revoke_in_the_panel(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    ready = await ikev2_node(runtime, "ams-1")
    other = await ikev2_node(runtime, "fra-1", ikev2=False)
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, customer.account, name="Phone")
    url = f"/devices/{device.id}/ikev2"
    downloads = {kind: f"{url}/{ready.id}/{kind}" for kind in ("mobileconfig", "sswan", "windows")}

    detail = await client.get(f"/devices/{device.id}")
    assert f'href="{url}"' in detail.text
    page = await client.get(url)
    assert page.status_code == 200
    assert 'id="no-ikev2-credential"' in page.text
    assert 'id="ikev2-profiles-need-sign-in"' in page.text
    # Before a sign-in exists a profile could not name the username: the link is refused.
    early = await client.get(downloads["sswan"])
    assert early.status_code == 404
    assert "ikev2" in early.text.lower()

    made = await post_form(client, url, {"username": "phone-ike"})
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    password = PASSWORD.search(made.text)
    assert password is not None
    secret = password.group(1)
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        row = await CredentialRepository(session).get(device.id, "ikev2")
        assert row is not None
        assert row.username == "phone-ike"
        assert row.verifier == ikev2_verifier(secret)

    again = await client.get(url)
    assert secret not in again.text
    assert 'id="ikev2-credential"' in again.text
    # Only the server that announced IKEv2 has profiles.
    for link in downloads.values():
        assert f'href="{link}"' in again.text
    assert "fra-1" not in again.text

    mobileconfig = await client.get(downloads["mobileconfig"])
    assert mobileconfig.status_code == 200
    assert mobileconfig.headers["content-type"] == "application/x-apple-aspen-config"
    assert mobileconfig.headers["cache-control"] == "no-store"
    assert ".mobileconfig" in mobileconfig.headers["content-disposition"]
    plist = plistlib.loads(mobileconfig.content)
    vpn = plist["PayloadContent"][1]["IKEv2"]
    assert vpn["RemoteAddress"] == "ike.ams-1.example.net"
    assert vpn["AuthName"] == "phone-ike"
    sswan = await client.get(downloads["sswan"])
    assert sswan.status_code == 200
    profile = json.loads(sswan.content)
    assert profile["remote"]["addr"] == "ike.ams-1.example.net"
    assert profile["local"]["eap_id"] == "phone-ike"
    windows = await client.get(downloads["windows"])
    assert windows.status_code == 200
    assert "Add-VpnConnection" in windows.text
    assert "-TunnelType Ikev2" in windows.text
    for answer in (mobileconfig, sswan, windows):
        assert secret.encode() not in answer.content
    # The CA file the Windows lines import, under the name they give it.
    ca_link = f"{url}/{ready.id}/ca.cer"
    assert f'href="{ca_link}"' in again.text
    ca = await client.get(ca_link)
    assert ca.status_code == 200
    assert ca.headers["content-type"] == "application/pkix-cert"
    assert 'filename="ams-1-ca.cer"' in ca.headers["content-disposition"]
    assert "-FilePath 'ams-1-ca.cer'" in windows.text
    assert ready.ikev2_ca is not None
    expected = x509.load_pem_x509_certificate(ready.ikev2_ca.encode())
    assert x509.load_der_x509_certificate(ca.content) == expected

    # A server without IKEv2 and an unknown kind are refused in words, never a 500.
    missing = await client.get(f"{url}/{ready.id}/pdf")
    assert missing.status_code in (404, 422)
    for kind in ("sswan", "ca.cer"):
        elsewhere = await client.get(f"{url}/{other.id}/{kind}")
        assert elsewhere.status_code == 409
        assert "fra-1 does not offer IKEv2" in elsewhere.text

    rotated = await post_form(client, f"{url}/rotate", {}, page=url)
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    new_password = PASSWORD.search(rotated.text)
    assert new_password is not None
    assert new_password.group(1) != secret
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        row = await CredentialRepository(session).get(device.id, "ikev2")
        assert row is not None
        assert row.verifier == ikev2_verifier(new_password.group(1))

    revoked = await post_form(client, f"{url}/revoke", {}, page=url, follow=True)
    assert "IKEv2 credentials revoked" in revoked.text
    assert 'id="no-ikev2-credential"' in revoked.text
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        assert await CredentialRepository(session).get(device.id, "ikev2") is None

    # Pressed again (a second tab): back to the page saying why, not an error page.
    twice = await post_form(client, f"{url}/revoke", {}, page=url, follow=True)
    assert twice.status_code == 200
    assert "no ikev2" in twice.text.lower()
    stale = await post_form(client, f"{url}/rotate", {}, page=url, follow=True)
    assert stale.status_code == 200
    assert PASSWORD.search(stale.text) is None


async def test_a_taken_username_is_shown_next_to_its_field(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    first = await web_customer(sign_in=False)
    async with unit_of_work(runtime.sessionmaker) as session:
        theirs = await create_device(session, first.account, name="Theirs")
    second = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        mine = await create_device(session, second.account, name="Mine")
    async with unit_of_work(runtime.sessionmaker) as session:
        await credential_service.issue(
            session,
            runtime,
            first.account,
            theirs.id,
            CredentialCreate(protocol="ikev2", username="same-name"),
        )
    url = f"/devices/{mine.id}/ikev2"
    refused = await post_form(client, url, {"username": "same-name"})
    assert refused.status_code == 409
    assert "already in use" in refused.text
    assert PASSWORD.search(refused.text) is None
    bad = await post_form(client, url, {"username": "no spaces allowed"})
    assert bad.status_code == 422
    assert PASSWORD.search(bad.text) is None


async def test_another_customers_device_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    other = await web_customer(sign_in=False)
    node = await ikev2_node(runtime, "ams-1")
    async with unit_of_work(runtime.sessionmaker) as session:
        theirs = await create_device(session, other.account, name="Theirs")
    async with unit_of_work(runtime.sessionmaker) as session:
        await credential_service.issue(
            session, runtime, other.account, theirs.id, CredentialCreate(protocol="ikev2")
        )
    await web_customer()
    assert (await client.get(f"/devices/{theirs.id}/ikev2")).status_code == 404
    download = await client.get(f"/devices/{theirs.id}/ikev2/{node.id}/sswan")
    assert download.status_code == 404
    assert (await client.get(f"/devices/{theirs.id}/ikev2/{node.id}/ca.cer")).status_code == 404
    assert b"eap_id" not in download.content
