"""The agent's IKEv2 set-up: the server certificate names the host clients dial, and the
control plane is told that host and the CA until it listens."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from cryptography import x509

from burrow.node.agent import AgentError, _ikev2_driver, _offer_ikev2
from burrow.node.client import NodeApiClient, NodeTokenRejected
from burrow.node.config import NodeSettings
from burrow.node.identity import NodeIdentity, new_private_key
from burrow.node.pki import certificate_names, ensure_pki, load_pki, make_pki
from burrow.wire import IkeV2Offer

from .fakes import NODE_TOKEN, FakeControlPlane

BASE = "http://control.test"


def identity() -> NodeIdentity:
    return NodeIdentity(
        control_url=BASE,
        node_id=7,
        node_name="ams-1",
        interface_name="bw7",
        private_key=new_private_key(),
        node_token=NODE_TOKEN,
    )


def an_offer() -> IkeV2Offer:
    ca = make_pki("ams-1", "ike.example.net").ca_certificate
    return IkeV2Offer(host="ike.example.net", ca_certificate=ca)


def settings(state_dir: Path, ikev2_host: str | None) -> NodeSettings:
    # Any file will do for charon: nothing is started here.
    return NodeSettings(state_dir=state_dir, ikev2_host=ikev2_host, charon=sys.executable)


def test_a_node_without_ikev2_host_serves_and_offers_no_ikev2(tmp_path: Path) -> None:
    assert _ikev2_driver(settings(tmp_path, None), identity(), "bw7") is None


def test_an_ikev2_host_clients_cannot_dial_stops_the_agent_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="not a DNS name or an IP address"):
        _ikev2_driver(settings(tmp_path, "vpn host.example.net"), identity(), "bw7")


def test_ikev2_gets_a_certificate_for_its_own_host_from_the_ca_made_at_enrollment(
    tmp_path: Path,
) -> None:
    # Enrollment made the PKI for the endpoint; IKEv2 is served under another name.
    made = ensure_pki(tmp_path, "ams-1", "vpn.example.net")
    ikev2 = _ikev2_driver(settings(tmp_path, "ike.example.net"), identity(), "bw7")
    assert ikev2 is not None
    _, server, offer = ikev2
    assert server.identity == "ike.example.net"
    assert certificate_names(server.certificate_pem) == ["ike.example.net"]
    ca = x509.load_pem_x509_certificate(made.ca_certificate.encode())
    x509.load_pem_x509_certificate(server.certificate_pem.encode()).verify_directly_issued_by(ca)
    # The CA stays: OpenVPN's profiles and the offer name the same one.
    assert load_pki(tmp_path) == made
    assert offer == IkeV2Offer(host="ike.example.net", ca_certificate=made.ca_certificate)
    # The next start serves the same certificate.
    again = _ikev2_driver(settings(tmp_path, "ike.example.net"), identity(), "bw7")
    assert again is not None
    assert again[1] == server


def test_where_the_pki_already_names_the_ikev2_host_its_certificate_serves(
    tmp_path: Path,
) -> None:
    made = ensure_pki(tmp_path, "ams-1", "203.0.113.7")
    ikev2 = _ikev2_driver(settings(tmp_path, "203.0.113.7"), identity(), "bw7")
    assert ikev2 is not None
    assert ikev2[1].certificate_pem == made.server_certificate
    assert ikev2[2].ca_certificate == made.ca_certificate


async def test_the_agent_offers_ikev2_again_until_the_control_plane_takes_it() -> None:
    cp = FakeControlPlane(available=False)
    offer = an_offer()
    async with NodeApiClient(BASE, NODE_TOKEN, transport=cp.transport(), timeout=2.0) as client:
        task = asyncio.create_task(_offer_ikev2(client, offer))
        await asyncio.sleep(0.1)
        assert cp.requests == ["PUT /ikev2"]  # refused: it waits and tries again
        cp.available = True
        await asyncio.wait_for(task, 5.0)
    assert cp.offers["/ikev2"] == offer


async def test_a_refused_node_token_ends_the_offering() -> None:
    cp = FakeControlPlane(token_valid=False)
    offer = an_offer()
    async with NodeApiClient(BASE, NODE_TOKEN, transport=cp.transport(), timeout=2.0) as client:
        with pytest.raises(NodeTokenRejected):
            await asyncio.wait_for(_offer_ikev2(client, offer), 5.0)
    assert "/ikev2" not in cp.offers
