"""The nodes service: reports in the live store, health, the server list, node tokens."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import CliOperator, NotAnAdministrator, admin_audit
from burrow.control.db import unit_of_work
from burrow.control.errors import NotAuthenticated
from burrow.control.models import NodeStatus, utcnow
from burrow.control.nodes import service as nodes_module
from burrow.control.nodes.schemas import NodeCreate, NodeUpdate, endpoint_text, parse_endpoint
from burrow.control.nodes.service import NodeNameTaken, NodeNotFound, served_protocols
from burrow.control.nodes.service import node as node_service
from burrow.control.nodes.tasks import void_expired_enrollments
from burrow.control.runtime import Runtime
from burrow.node.pki import make_pki
from burrow.wire import EnrollRequest, IkeV2Offer, NodeReport, PeerStatus
from tests.support.factories import create_account, create_node, new_public_key


def report(seq: int, *, boot_id: str = "boot", connected: int = 0, rx: int = 0) -> NodeReport:
    peers = [PeerStatus(public_key=new_public_key(), connected=True) for _ in range(connected)]
    peers.append(PeerStatus(public_key=new_public_key(), connected=False, rx_bytes=rx))
    return NodeReport(boot_id=boot_id, seq=seq, revision=0, peers=tuple(peers))


async def test_throughput_is_the_byte_delta_over_the_time_between_reports(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await create_node(session)
    now = [utcnow().timestamp()]
    monkeypatch.setattr(nodes_module, "_now", lambda: now[0])

    await node_service.record_report(session, runtime, node, report(1, rx=10_000))
    assert (await node_service.health(runtime, node)).throughput_bps is None  # no interval yet
    now[0] += 2.0
    await node_service.record_report(session, runtime, node, report(2, rx=1_000))

    assert (await node_service.health(runtime, node)).throughput_bps == 1_000 * 8 / 2.0


async def test_a_node_that_stopped_reporting_is_silent_and_its_load_unknown(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = await create_node(session, name="ams-1", capacity=10)
    online = await create_node(session, name="ams-2", capacity=10)
    long_ago = utcnow().timestamp() - nodes_module.REPORT_FRESH_SECONDS - 5
    monkeypatch.setattr(nodes_module, "_now", lambda: long_ago)
    await node_service.record_report(session, runtime, silent, report(1, connected=1))
    monkeypatch.undo()
    await node_service.record_report(session, runtime, online, report(1, connected=8))

    assert (await node_service.health(runtime, silent)).state == "silent"
    servers = {s.name: s for s in await node_service.server_list(session, runtime)}
    assert servers["ams-1"].load == 0.0
    assert servers["ams-2"].load == 0.8
    # A node that reports lately is preferred over one whose state is unknown.
    assert servers["ams-2"].recommended
    assert not servers["ams-1"].recommended


async def test_without_reports_the_oldest_node_is_recommended(
    session: AsyncSession, runtime: Runtime
) -> None:
    first = await create_node(session, name="zrh-1")
    await create_node(session, name="ams-1")
    servers = await node_service.server_list(session, runtime)
    assert [s.name for s in servers] == ["ams-1", "zrh-1"]  # by country, city, name
    assert [s.id for s in servers if s.recommended] == [first.id]


async def test_a_pending_node_has_no_token(session: AsyncSession, runtime: Runtime) -> None:
    await create_node(session, status=NodeStatus.pending, wg_public_key=None)
    with pytest.raises(NotAuthenticated):
        await node_service.authenticate(session, "bwn_whatever-this-is")


async def test_create_refuses_a_taken_name_and_finds_by_name(
    session: AsyncSession, runtime: Runtime
) -> None:
    data = NodeCreate(name="ams-1", country="nl", city="Amsterdam", endpoint_host="Vpn.Example.Net")
    created = await node_service.create(session, runtime, data)
    assert created.node.endpoint_host == "vpn.example.net"
    assert (await node_service.get_by_name(session, "AMS-1")).id == created.node.id
    with pytest.raises(NodeNameTaken):
        await node_service.create(session, runtime, data)
    with pytest.raises(NodeNotFound):
        await node_service.get_by_name(session, "nowhere-1")


async def test_enrollment_then_authentication(session: AsyncSession, runtime: Runtime) -> None:
    data = NodeCreate(name="ams-1", country="NL", city="Amsterdam", endpoint_host="192.0.2.1")
    created = await node_service.create(session, runtime, data)
    key = new_public_key()
    enrolled = await node_service.enroll(
        session, runtime, EnrollRequest(token=created.enrollment.token, public_key=key)
    )
    node = await node_service.authenticate(session, enrolled.node_token)
    assert (node.id, node.wg_public_key, node.status) == (created.node.id, key, NodeStatus.active)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vpn.example.net:51820", ("vpn.example.net", 51820)),
        ("192.0.2.1:443", ("192.0.2.1", 443)),
        ("[2001:db8::1]:51820", ("2001:db8::1", 51820)),
    ],
)
def test_endpoints_parse_and_print_back(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected
    assert endpoint_text(*expected) == text


@pytest.mark.parametrize(
    "text", ["vpn.example.net", "vpn:0", "vpn:70000", ":51820", "2001:db8::1:5"]
)
def test_bad_endpoints_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
        parse_endpoint(text)


async def test_expired_enrollment_tokens_are_forgotten(
    session: AsyncSession, runtime: Runtime
) -> None:
    fresh = NodeCreate(name="ams-1", country="NL", city="Amsterdam", endpoint_host="192.0.2.1")
    stale = NodeCreate(name="ams-2", country="NL", city="Amsterdam", endpoint_host="192.0.2.2")
    kept = (await node_service.create(session, runtime, fresh)).node
    expired = (await node_service.create(session, runtime, stale)).node
    expired.enrollment_expires_at = utcnow() - timedelta(minutes=1)
    await session.commit()

    assert await void_expired_enrollments(runtime) == 1

    await session.refresh(expired)
    await session.refresh(kept)
    assert (expired.enrollment_token_hash, expired.enrollment_expires_at) == (None, None)
    assert kept.enrollment_token_hash is not None


async def test_a_new_endpoint_or_key_marks_the_configs_out_of_date(
    session: AsyncSession, runtime: Runtime
) -> None:
    data = NodeCreate(name="ams-1", country="NL", city="Amsterdam", endpoint_host="127.0.0.1")
    created = await node_service.create(session, runtime, data)
    node = created.node
    first_key = new_public_key()
    request = EnrollRequest(token=created.enrollment.token, public_key=first_key)
    await node_service.enroll(session, runtime, request)
    assert node.config_changed_at is None  # the first key changes nothing customers have

    await node_service.update(session, runtime, node.id, NodeUpdate(city="Haarlem", capacity=5))
    assert node.config_changed_at is None
    await node_service.update(session, runtime, node.id, NodeUpdate(endpoint_host="127.0.0.1"))
    assert node.config_changed_at is None  # the same endpoint

    await node_service.update(
        session, runtime, node.id, NodeUpdate(endpoint_host="vpn.example.net")
    )
    assert node.config_changed_at is not None
    assert node.config_change == nodes_module.CHANGE_ENDPOINT

    token = (await node_service.new_enrollment_token(session, runtime, node)).token
    await node_service.enroll(session, runtime, EnrollRequest(token=token, public_key=first_key))
    assert node.config_change == nodes_module.CHANGE_ENDPOINT  # the same key again
    token = (await node_service.new_enrollment_token(session, runtime, node)).token
    await node_service.enroll(
        session, runtime, EnrollRequest(token=token, public_key=new_public_key())
    )
    assert node.config_change == nodes_module.CHANGE_KEY


def ikev2_offer(host: str = "ike.example.net", ca: str | None = None) -> IkeV2Offer:
    return IkeV2Offer(host=host, ca_certificate=ca or make_pki("ams-1", host).ca_certificate)


async def test_a_nodes_ikev2_offer_is_kept_and_a_new_host_or_ca_dates_its_profiles(
    session: AsyncSession,
) -> None:
    node = await create_node(session)
    assert served_protocols(node) == ["wireguard"]
    first = ikev2_offer()
    await node_service.offer_ikev2(session, node, first)
    assert (node.ikev2_host, node.ikev2_ca) == ("ike.example.net", first.ca_certificate)
    assert served_protocols(node) == ["wireguard", "ikev2"]
    # The first offer, and the same one again at each start of the agent, date nothing.
    await node_service.offer_ikev2(session, node, first)
    assert node.config_changed_at is None

    await node_service.offer_ikev2(
        session, node, ikev2_offer("ike2.example.net", first.ca_certificate)
    )
    assert node.config_change == nodes_module.CHANGE_IKEV2
    assert node.config_changed_at is not None
    node.config_changed_at, node.config_change = None, None
    await node_service.offer_ikev2(session, node, ikev2_offer("ike2.example.net"))
    assert node.config_change == nodes_module.CHANGE_IKEV2
    assert node.ikev2_host == "ike2.example.net"
    assert node.ikev2_ca != first.ca_certificate


async def test_served_protocols_name_what_each_node_announced(session: AsyncSession) -> None:
    pki = make_pki("ams-1", "vpn.example.net")
    pending = await create_node(session, wg_public_key=None)
    wireguard = await create_node(session)
    both = await create_node(session, ikev2_host="vpn.example.net", ikev2_ca=pki.ca_certificate)
    both.openvpn_ca, both.openvpn_tls_crypt = pki.ca_certificate, pki.tls_crypt_key
    both.openvpn_transports = "udp:1194"
    openvpn_only = await create_node(session)
    openvpn_only.openvpn_ca, openvpn_only.openvpn_tls_crypt = pki.ca_certificate, pki.tls_crypt_key
    openvpn_only.openvpn_transports = "udp:1194"
    assert served_protocols(pending) == []
    assert served_protocols(wireguard) == ["wireguard"]
    assert served_protocols(both) == ["wireguard", "openvpn", "ikev2"]
    # OpenVPN's CA is the same CA, but without the offer there is no host to name: no IKEv2.
    assert served_protocols(openvpn_only) == ["wireguard", "openvpn"]


async def test_an_operators_node_actions_record_themselves_in_their_unit_of_work(
    runtime: Runtime,
) -> None:
    """create, update, a new enrollment token and retire, by an administrator and by the command
    line: each writes its row of the trail with the change; a refused actor undoes the change."""
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        customer = await create_account(session)
        data = NodeCreate(name="ams-9", country="NL", city="Amsterdam", endpoint_host="vpn.x.net")
        created = await node_service.create_by(session, runtime, admin, data)
        node_id = created.node.id
        await node_service.update_by(
            session, runtime, CliOperator("root"), node_id, NodeUpdate(capacity=5)
        )
        issued = await node_service.new_enrollment_token_by(session, runtime, admin, created.node)
        await node_service.retire_by(session, runtime, admin, node_id)
        trail = await admin_audit.search(session, ActionFilters(target_type="node"))
    rows = {entry.action.action: entry for entry in trail.items}
    assert set(rows) == {"node.create", "node.update", "node.enrollment_token", "node.retire"}
    assert all(entry.action.target_id == str(node_id) for entry in trail.items)
    assert rows["node.create"].detail["name"] == "ams-9"
    assert rows["node.create"].action.admin_id == admin.id
    update = rows["node.update"]
    assert update.action.admin_id is None
    assert update.detail == {
        "before": {"capacity": 1000},
        "capacity": 5,
        "via": "cli",
        "operator": "root",
    }
    # The token itself never reaches the trail, only when it expires.
    assert issued.token not in json.dumps(rows["node.enrollment_token"].detail)
    assert set(rows["node.enrollment_token"].detail) == {"expires_at"}

    # An actor who is not an administrator is refused, and the change goes with the refusal.
    async with unit_of_work(runtime.sessionmaker) as session:
        other_id = (await create_node(session, name="ams-10", capacity=7)).id
    with pytest.raises(NotAnAdministrator):
        async with unit_of_work(runtime.sessionmaker) as session:
            await node_service.update_by(
                session, runtime, customer, other_id, NodeUpdate(capacity=1)
            )
    async with unit_of_work(runtime.sessionmaker) as session:
        assert (await node_service.get(session, other_id)).capacity == 7
        recorded = await admin_audit.search(session, ActionFilters(target_id=str(other_id)))
        assert recorded.total == 0
