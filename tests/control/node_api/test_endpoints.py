"""The node API through the real app: enrollment, tokens, state, the long poll and reports."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from burrow.control.db import unit_of_work
from burrow.control.desired_state import service as desired_state_module
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.live import MemoryLiveStore
from burrow.control.models import Device, Node, utcnow
from burrow.control.node_api import endpoints as node_api_module
from burrow.control.nodes.schemas import NodeUpdate
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.node.pki import make_pki
from burrow.wire import API_PREFIX, DeltaState, FullState, ReportAck
from tests.control.node_api.conftest import Enroll, EnrolledNode, new_enrollment_token
from tests.support.factories import (
    create_account,
    create_device,
    create_session_token,
    create_subscription,
    new_public_key,
)

STATE = f"{API_PREFIX}/state"
CHANGES = f"{API_PREFIX}/state/changes"
REPORT = f"{API_PREFIX}/report"
ENROLL = f"{API_PREFIX}/enroll"
IKEV2 = f"{API_PREFIX}/ikev2"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def add_paying_device(runtime: Runtime) -> Device:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account)
        device = await create_device(session, account)
        await desired_state_service.refresh_account(session, runtime, account.id)
    return device


async def current_revision(runtime: Runtime) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await desired_state_service.current_revision(session)


# --- enrollment ----------------------------------------------------------------------


async def test_enrollment_trades_the_token_for_a_node_token_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await new_enrollment_token(runtime, "ams-1")
    key = new_public_key()

    response = await client.post(ENROLL, json={"token": token, "public_key": key})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["node_name"] == "ams-1"
    assert body["interface_name"] == f"bw{body['node_id']}"
    assert len(body["interface_name"]) <= 15
    assert body["node_token"].startswith("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await node_service.get(session, body["node_id"])
        assert node.status == "active"
        assert node.wg_public_key == key
        assert node.node_token_hash not in (None, body["node_token"])  # stored hashed
        assert node.enrollment_token_hash is None
    again = await client.post(ENROLL, json={"token": token, "public_key": new_public_key()})
    assert "burrow node token" in assert_problem(again, 401)["detail"]


async def test_an_expired_enrollment_token_is_gone(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await new_enrollment_token(runtime, "ams-1")
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(
            update(Node).values(enrollment_expires_at=utcnow() - timedelta(seconds=1))
        )

    response = await client.post(ENROLL, json={"token": token, "public_key": new_public_key()})

    assert "burrow node token ams-1" in assert_problem(response, 410)["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {
            "token": "bwe_not-a-token-at-all",
            "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        },
        {"token": "x" * 20, "public_key": "not-a-key"},
        {"token": "short", "public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        {"token": "x" * 20},
    ],
)
async def test_a_bad_enrollment_is_refused_with_a_problem(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await client.post(ENROLL, json=body)
    assert response.status_code in (401, 422)
    assert_problem(response, response.status_code)


# Points of small order on Curve25519: every private key makes an all-zero shared secret
# with them, so no handshake with such a "node" is secret.
LOW_ORDER_POINTS = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=["zero", "one", "order-8"])
async def test_a_node_cannot_enroll_with_a_low_order_key(
    client: httpx.AsyncClient, runtime: Runtime, point: bytes
) -> None:
    token = await new_enrollment_token(runtime, "ams-1")
    key = base64.b64encode(point).decode()
    response = await client.post(ENROLL, json={"token": token, "public_key": key})
    body = assert_problem(response, 422)
    assert body["field"] == "public_key"
    assert "make a new key pair" in body["detail"]
    # The token was not spent on a refused key.
    good = await client.post(ENROLL, json={"token": token, "public_key": new_public_key()})
    assert good.status_code == 200, good.text


async def test_a_node_cannot_enroll_with_a_customers_device_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
    token = await new_enrollment_token(runtime, "ams-1")
    response = await client.post(ENROLL, json={"token": token, "public_key": device.public_key})
    body = assert_problem(response, 409)
    assert body["field"] == "public_key"


async def test_two_nodes_cannot_share_a_wireguard_key(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    first = await enroll("ams-1")
    token = await new_enrollment_token(runtime, "ams-2")
    response = await client.post(ENROLL, json={"token": token, "public_key": first.public_key})
    assert_problem(response, 409)


async def _enroll_again(
    client: httpx.AsyncClient, runtime: Runtime, node: EnrolledNode
) -> httpx.Response:
    """A new enrollment token for ``node`` and the enrollment with it (a new key)."""
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await node_service.get(session, node.id)
        issued = await node_service.new_enrollment_token(session, runtime, row)
    return await client.post(ENROLL, json={"token": issued.token, "public_key": new_public_key()})


async def test_enrolling_again_replaces_the_node_token(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll("ams-1")
    response = await _enroll_again(client, runtime, node)

    assert response.status_code == 200, response.text
    assert response.json()["node_id"] == node.id
    assert_problem(await client.get(STATE, headers=node.headers), 401)
    fresh = {"Authorization": f"Bearer {response.json()['node_token']}"}
    assert (await client.get(STATE, headers=fresh)).status_code == 200


# --- who may call what ----------------------------------------------------------------


async def test_a_retired_nodes_token_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    async with unit_of_work(runtime.sessionmaker) as session:
        await node_service.retire(session, runtime, node.id)

    for response in (
        await client.get(STATE, headers=node.headers),
        await client.get(CHANGES, params={"since": 0, "timeout": 0}, headers=node.headers),
        await client.post(
            REPORT, json={"boot_id": "b", "seq": 1, "revision": 0}, headers=node.headers
        ),
    ):
        assert "retired" in assert_problem(response, 401)["detail"]


async def test_a_retired_nodes_reports_are_refused_at_once_though_they_were_trusted(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    """Reports trust a token the replica checked a moment ago, but not past its retirement."""
    node = await enroll()
    body = {"boot_id": "b", "seq": 1, "revision": 0}
    assert (await client.post(REPORT, json=body, headers=node.headers)).status_code == 200
    async with unit_of_work(runtime.sessionmaker) as session:
        await node_service.retire(session, runtime, node.id)
    body["seq"] = 2
    response = await client.post(REPORT, json=body, headers=node.headers)
    assert "retired" in assert_problem(response, 401)["detail"]


async def test_a_retired_nodes_long_polls_are_refused_at_once_though_they_were_trusted(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    params = {"since": await current_revision(runtime), "timeout": 0}
    assert (await client.get(CHANGES, params=params, headers=node.headers)).status_code == 200
    async with unit_of_work(runtime.sessionmaker) as session:
        await node_service.retire(session, runtime, node.id)
    response = await client.get(CHANGES, params=params, headers=node.headers)
    assert "retired" in assert_problem(response, 401)["detail"]


async def test_a_long_poll_checks_a_trusted_token_without_asking_the_database(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    """A thousand nodes polling again at once must not cost a thousand token queries."""
    node = await enroll()
    params = {"since": await current_revision(runtime), "timeout": 0}
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = runtime.engine.sync_engine
    assert (await client.get(CHANGES, params=params, headers=node.headers)).status_code == 200
    event.listen(engine, "before_cursor_execute", note)
    try:
        assert (await client.get(CHANGES, params=params, headers=node.headers)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert not [statement for statement in seen if "node_token_hash" in statement]


async def test_a_change_to_a_node_reaches_its_next_long_poll_at_once(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    """The long poll answers with the node's network settings from its trusted copy: a change
    of the node's row makes that copy stale at once, on every replica."""
    node = await enroll()
    params = {"since": await current_revision(runtime), "timeout": 0}
    first = await client.get(CHANGES, params=params, headers=node.headers)
    assert DeltaState.model_validate_json(first.content).network.listen_port == 51820
    async with unit_of_work(runtime.sessionmaker) as session:
        await node_service.update(
            session, runtime, node.id, NodeUpdate(endpoint_port=443, uplink_mbit=900)
        )
    second = await client.get(CHANGES, params=params, headers=node.headers)
    network = DeltaState.model_validate_json(second.content).network
    assert network.listen_port == 443
    assert network.fair_use is None or network.fair_use.uplink_mbit == 900


async def test_enrolling_again_refuses_the_old_tokens_reports_at_once(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll("ams-1")
    body = {"boot_id": "b", "seq": 1, "revision": 0}
    assert (await client.post(REPORT, json=body, headers=node.headers)).status_code == 200
    response = await _enroll_again(client, runtime, node)
    assert response.status_code == 200, response.text
    fresh = {"Authorization": f"Bearer {response.json()['node_token']}"}
    body["seq"] = 2
    assert_problem(await client.post(REPORT, json=body, headers=node.headers), 401)
    assert (await client.post(REPORT, json=body, headers=fresh)).status_code == 200


async def test_a_customer_token_cannot_call_the_node_api(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        customer = await create_account(session, admin=True)
        headers = {"Authorization": f"Bearer {await create_session_token(session, customer)}"}

    assert_problem(await client.get(STATE, headers=headers), 401)
    assert_problem(await client.get(CHANGES, params={"since": 0}, headers=headers), 401)
    report = {"boot_id": "b", "seq": 1, "revision": 0}
    assert_problem(await client.post(REPORT, json=report, headers=headers), 401)
    assert_problem(await client.get(STATE), 401)


async def test_a_node_token_opens_only_node_endpoints(
    client: httpx.AsyncClient, enroll: Enroll
) -> None:
    node = await enroll()
    assert (await client.get(STATE, headers=node.headers)).status_code == 200
    assert_problem(await client.get("/api/v1/devices", headers=node.headers), 401)
    assert_problem(await client.get("/api/v1/admin/nodes", headers=node.headers), 401)


# --- state and the long poll ------------------------------------------------------------


async def test_the_full_state_lists_every_served_peer(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    device = await add_paying_device(runtime)

    response = await client.get(STATE, headers=node.headers)

    assert response.status_code == 200, response.text
    full = FullState.model_validate_json(response.content)
    assert full.state.revision == await current_revision(runtime)
    assert [(p.public_key, p.allowed_ips) for p in full.state.peers] == [
        (device.public_key, (f"{device.ipv4}/32", f"{device.ipv6}/128"))
    ]
    assert full.state.network.listen_port == 51820


async def test_changes_since_an_old_revision_answer_at_once(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    since = await current_revision(runtime)
    device = await add_paying_device(runtime)

    response = await client.get(CHANGES, params={"since": since}, headers=node.headers)

    delta = DeltaState.model_validate_json(response.content)
    assert (delta.from_revision, delta.revision) == (since, await current_revision(runtime))
    assert [p.public_key for p in delta.upserts] == [device.public_key]


async def test_a_revision_from_the_future_gets_the_full_state(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    since = await current_revision(runtime) + 100
    response = await client.get(CHANGES, params={"since": since}, headers=node.headers)
    assert response.json()["kind"] == "full"


@pytest.mark.parametrize(("draw", "waited"), [(0.0, 4.0), (0.5, 3.6), (0.999, 3.2008)])
async def test_a_long_poll_waits_up_to_a_fifth_less_at_random(
    client: httpx.AsyncClient,
    runtime: Runtime,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
    draw: float,
    waited: float,
) -> None:
    """Nodes that began polling together (a restarted control plane) spread out: each poll
    waits its timeout less up to a fifth, so they do not all come back in the same instant."""
    node = await enroll()
    asked: list[float] = []

    async def answer_at_once(
        _runtime: Runtime, _node: Node, since: int, wait_seconds: float
    ) -> DeltaState:
        asked.append(wait_seconds)
        return DeltaState(from_revision=since, revision=since)

    monkeypatch.setattr(node_api_module.random, "random", lambda: draw)
    monkeypatch.setattr(desired_state_service, "wait_for_changes", answer_at_once)
    # Below the test settings' cap (5 s).
    params = {"since": await current_revision(runtime), "timeout": 4}
    assert (await client.get(CHANGES, params=params, headers=node.headers)).status_code == 200
    assert asked == [pytest.approx(waited)]


async def poll(
    client: httpx.AsyncClient, headers: dict[str, str], since: int
) -> asyncio.Task[httpx.Response]:
    task = asyncio.create_task(
        client.get(CHANGES, params={"since": since, "timeout": 20}, headers=headers)
    )
    await asyncio.sleep(0.3)
    assert not task.done()
    return task


async def test_the_long_poll_is_woken_by_a_change_in_another_unit_of_work(
    client: httpx.AsyncClient,
    runtime: Runtime,
    enroll: Enroll,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(desired_state_module, "RECHECK_SECONDS", 30.0)  # only a wake-up helps
    node = await enroll()
    pending = await poll(client, node.headers, await current_revision(runtime))

    device = await add_paying_device(runtime)
    committed = time.monotonic()
    response = await asyncio.wait_for(pending, 5)

    assert time.monotonic() - committed < 1.0
    delta = DeltaState.model_validate_json(response.content)
    assert [p.public_key for p in delta.upserts] == [device.public_key]


async def test_the_long_poll_sees_a_change_only_in_the_database_within_a_second(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    pending = await poll(client, node.headers, await current_revision(runtime))
    other = Runtime.build(runtime.settings)  # as `burrow` on the command line would
    try:
        device = await add_paying_device(other)
    finally:
        await other.close()
    committed = time.monotonic()
    response = await asyncio.wait_for(pending, 5)

    assert time.monotonic() - committed < 1.0
    delta = DeltaState.model_validate_json(response.content)
    assert [p.public_key for p in delta.upserts] == [device.public_key]


async def test_the_long_poll_times_out_with_an_empty_delta(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    since = await current_revision(runtime)
    started = time.monotonic()

    response = await client.get(
        CHANGES, params={"since": since, "timeout": 0.5}, headers=node.headers
    )

    # It waited (up to a fifth less than asked, at random), then answered.
    assert 0.4 <= time.monotonic() - started < 2.0
    delta = DeltaState.model_validate_json(response.content)
    assert (delta.from_revision, delta.revision, delta.upserts, delta.removals) == (
        since,
        since,
        (),
        (),
    )


async def test_the_long_poll_timeout_is_capped_by_the_server(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    runtime.settings.long_poll_timeout_seconds = 0.5
    node = await enroll()
    started = time.monotonic()
    response = await client.get(
        CHANGES,
        params={"since": await current_revision(runtime), "timeout": 3600},
        headers=node.headers,
    )
    assert response.status_code == 200
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "params",
    [{}, {"since": -1}, {"since": "abc"}, {"since": 2**64}, {"since": 0, "timeout": -1}],
)
async def test_a_malformed_long_poll_is_a_problem(
    client: httpx.AsyncClient, enroll: Enroll, params: dict[str, object]
) -> None:
    node = await enroll()
    assert_problem(await client.get(CHANGES, params=params, headers=node.headers), 422)


# --- reports ------------------------------------------------------------------------------


async def test_reports_are_deduplicated_by_boot_and_sequence(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    peers = [
        {"public_key": new_public_key(), "connected": True, "rx_bytes": 100, "tx_bytes": 50},
        {"public_key": new_public_key(), "connected": False},
    ]

    async def send(boot_id: str, seq: int) -> ReportAck:
        body = {"boot_id": boot_id, "seq": seq, "revision": 3, "peers": peers}
        response = await client.post(REPORT, json=body, headers=node.headers)
        assert response.status_code == 200, response.text
        return ReportAck.model_validate_json(response.content)

    assert await send("boot-a", 1) == ReportAck(accepted=True, last_seq=1)
    assert await send("boot-a", 1) == ReportAck(accepted=False, last_seq=1)
    assert await send("boot-a", 0) == ReportAck(accepted=False, last_seq=1)
    assert await send("boot-a", 2) == ReportAck(accepted=True, last_seq=2)
    # A restarted agent counts from zero again.
    assert await send("boot-b", 0) == ReportAck(accepted=True, last_seq=0)

    async with unit_of_work(runtime.sessionmaker) as session:
        health = await node_service.health(runtime, await node_service.get(session, node.id))
    assert health.state == "online"
    assert (health.connected_devices, health.applied_revision) == (1, 3)
    # Only node-wide figures reach the live store: no device key, no per-device bytes.
    assert isinstance(runtime.live, MemoryLiveStore)
    stored = repr([runtime.live.get(key) for key in runtime.live.keys("")])
    assert all(peer["public_key"] not in stored for peer in peers)


async def test_a_malformed_report_is_a_problem(client: httpx.AsyncClient, enroll: Enroll) -> None:
    node = await enroll()
    body = {"boot_id": "", "seq": -1, "revision": 0, "peers": [{"connected": "maybe"}]}
    assert_problem(await client.post(REPORT, json=body, headers=node.headers), 422)


# --- what a node serves IKEv2 with ------------------------------------------------------------


async def test_a_node_announces_ikev2_and_the_server_list_says_so(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    servers = (await client.get("/api/v1/servers")).json()
    assert [s["protocols"] for s in servers] == [["wireguard"]]

    pki = make_pki(node.name, "ike.example.net")
    body = {"host": "ike.example.net", "ca_certificate": pki.ca_certificate}
    offered = await client.put(IKEV2, json=body, headers=node.headers)
    assert offered.status_code == 204, offered.text
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert (row.ikev2_host, row.ikev2_ca) == ("ike.example.net", pki.ca_certificate)
        assert row.config_changed_at is None  # nobody has a profile for it yet
    servers = (await client.get("/api/v1/servers")).json()
    assert [s["protocols"] for s in servers] == [["wireguard", "ikev2"]]

    # A new CA (the node's state directory made again) dates the profiles customers have.
    again = {"host": "ike.example.net", "ca_certificate": make_pki("x", "y").ca_certificate}
    assert (await client.put(IKEV2, json=again, headers=node.headers)).status_code == 204
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert row.config_change == "ikev2"
        assert row.config_changed_at is not None


async def test_a_bad_ikev2_offer_is_refused_with_a_problem(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll
) -> None:
    node = await enroll()
    pki = make_pki(node.name, "ike.example.net")
    good = {"host": "ike.example.net", "ca_certificate": pki.ca_certificate}
    for bad in (
        good | {"host": "ike example.net"},
        good | {"host": "-ike.example.net"},
        good | {"host": ""},
        good | {"ca_certificate": "not a certificate"},
        # The server's own certificate is not a CA: phones would not trust the chain.
        good | {"ca_certificate": pki.server_certificate},
        good | {"ca_certificate": pki.ca_certificate + pki.ca_key},
        good | {"transports": ["udp:500"]},
        {"host": "ike.example.net"},
    ):
        assert_problem(await client.put(IKEV2, json=bad, headers=node.headers), 422)
    assert_problem(await client.put(IKEV2, json=good), 401)
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert (row.ikev2_host, row.ikev2_ca) == (None, None)
    # An address is a host too.
    good["host"] = "2001:db8::7"
    assert (await client.put(IKEV2, json=good, headers=node.headers)).status_code == 204
