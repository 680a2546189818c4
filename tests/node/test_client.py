"""The node API client against a fake control plane (``httpx.MockTransport``)."""

from __future__ import annotations

import httpx
import pytest

from burrow.node.client import (
    ControlPlaneUnavailable,
    NodeApiClient,
    NodeApiRefused,
    NodeTokenRejected,
)
from burrow.wire import API_PREFIX, DeltaState, FullState, NodeReport, PeerStatus

from .fakes import ENROLLMENT_TOKEN, NODE_TOKEN, FakeControlPlane, peer, random_key

BASE = "http://control.test"


def client_for(handler: httpx.MockTransport, token: str | None = NODE_TOKEN) -> NodeApiClient:
    return NodeApiClient(BASE, token, transport=handler, timeout=2.0)


async def test_enroll_sends_the_token_and_public_key_and_reads_the_answer() -> None:
    cp = FakeControlPlane()
    key = random_key()
    async with client_for(cp.transport(), token=None) as client:
        enrolled = await client.enroll(ENROLLMENT_TOKEN, key)
    assert enrolled.node_token == NODE_TOKEN
    assert enrolled.interface_name == "bw7"
    assert cp.enrolled_key == key
    assert cp.requests == ["POST /enroll"]


async def test_a_bad_enrollment_token_is_refused_with_the_control_planes_words() -> None:
    cp = FakeControlPlane()
    async with client_for(cp.transport(), token=None) as client:
        with pytest.raises(NodeTokenRejected) as refused:
            await client.enroll("bwe_not-the-right-one", random_key())
    assert refused.value.status == 401
    assert refused.value.detail == "This enrollment token is not valid."


async def test_full_state_and_changes_carry_the_bearer_token_and_the_revision() -> None:
    seen: list[httpx.Request] = []
    cp = FakeControlPlane()
    cp.upsert(peer(2))

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await cp.handle(request)

    async with client_for(httpx.MockTransport(handler)) as client:
        state = await client.full_state()
        assert state.revision == cp.revision
        assert len(state.peers) == 1
        cp.upsert(peer(3))
        update = await client.changes(state.revision, 7.5)
    assert isinstance(update, DeltaState)
    assert update.from_revision == state.revision
    assert [p.allowed_ips[0] for p in update.upserts] == ["10.64.0.3/32"]
    assert all(r.headers["authorization"] == f"Bearer {NODE_TOKEN}" for r in seen)
    assert seen[1].url.path == f"{API_PREFIX}/state/changes"
    assert seen[1].url.params["since"] == str(state.revision)
    assert float(seen[1].url.params["timeout"]) == 7.5
    # The long poll may take longer than an ordinary request before it counts as hung.
    assert seen[1].extensions["timeout"]["read"] > 7.5
    assert seen[0].extensions["timeout"]["read"] == 2.0


async def test_changes_may_answer_a_full_state() -> None:
    cp = FakeControlPlane()
    async with client_for(cp.transport()) as client:
        update = await client.changes(cp.revision + 5, 1)
    assert isinstance(update, FullState)


async def test_report_round_trip_and_no_endpoint_on_the_wire() -> None:
    bodies: list[bytes] = []
    cp = FakeControlPlane()

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return await cp.handle(request)

    key = random_key()
    report = NodeReport(
        boot_id="b1",
        seq=1,
        revision=3,
        peers=(PeerStatus(public_key=key, connected=True, rx_bytes=10, tx_bytes=20),),
    )
    async with client_for(httpx.MockTransport(handler)) as client:
        ack = await client.report(report)
    assert ack.accepted
    assert ack.last_seq == 1
    assert cp.counted[key] == [10, 20]
    assert b"endpoint" not in bodies[0]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (httpx.Response(401, json={"detail": "retired"}), NodeTokenRejected),
        (httpx.Response(409, json={"detail": "key in use"}), NodeApiRefused),
        (httpx.Response(422, text="not json"), NodeApiRefused),
        (httpx.Response(500, text="boom"), ControlPlaneUnavailable),
        (httpx.Response(503, json={"detail": "busy"}), ControlPlaneUnavailable),
        (httpx.Response(429, json={"detail": "slow down"}), ControlPlaneUnavailable),
        (httpx.Response(200, json={"kind": "nonsense"}), ControlPlaneUnavailable),
        (httpx.Response(200, text="<html>proxy error</html>"), ControlPlaneUnavailable),
    ],
)
async def test_failures_are_sorted_into_retry_later_and_refused(
    answer: httpx.Response, kind: type[Exception]
) -> None:
    async with client_for(httpx.MockTransport(lambda _request: answer)) as client:
        with pytest.raises(kind):
            await client.full_state()
        with pytest.raises(kind):
            await client.changes(1, 1)


async def test_refusal_keeps_the_detail() -> None:
    answer = httpx.Response(409, json={"detail": "Another node already uses this key."})
    async with client_for(httpx.MockTransport(lambda _request: answer)) as client:
        with pytest.raises(NodeApiRefused) as refused:
            await client.enroll(ENROLLMENT_TOKEN, random_key())
    assert refused.value.status == 409
    assert refused.value.detail == "Another node already uses this key."


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("garbage"),
    ],
)
async def test_transport_errors_mean_the_control_plane_is_away(error: Exception) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise error

    async with client_for(httpx.MockTransport(handler)) as client:
        with pytest.raises(ControlPlaneUnavailable):
            await client.full_state()
