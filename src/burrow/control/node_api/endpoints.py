"""The node API: what node agents call, with their node token as a bearer token.

Enrollment (one-time enrollment token in the body), the full desired state, the long poll for
changes since a revision, what the node serves OpenVPN and IKEv2 with (its offers), and the
status report. Served under ``burrow.wire.API_PREFIX``; request and response bodies are the
``burrow.wire`` models the agent shares.

The long poll holds no database connection while it waits, so a thousand waiting nodes
cost a thousand sleeping tasks, not a thousand connections.
"""

from __future__ import annotations

import asyncio
import random
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel

from burrow.control.db import unit_of_work
from burrow.control.deps import BearerDep, CurrentNode, RuntimeDep, SessionDep
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.errors import NotAuthenticated
from burrow.control.models import Node
from burrow.control.nodes.service import node as node_service
from burrow.control.problems import problem_responses
from burrow.wire import (
    API_PREFIX,
    DeltaState,
    EnrollRequest,
    EnrollResponse,
    FullState,
    IkeV2Offer,
    NodeReport,
    OpenVpnOffer,
    ReportAck,
    StateUpdate,
)

router = APIRouter(prefix=API_PREFIX, tags=["node"])

MAX_REVISION = 2**63 - 1
LONG_POLL_JITTER = 0.2


async def node_in_short_session(runtime: RuntimeDep, bearer: BearerDep) -> Node:
    """The calling node of a long poll, trusted from this replica's recent checks while its
    token's stamp stands, or else checked in a unit of work of its own that ends at once
    (``NodeService.authenticate_trusted``): a thousand nodes polling again at once cost a
    thousand small reads, not a thousand queries."""
    if bearer is None or not bearer.credentials:
        raise NotAuthenticated("The node API needs the node token as a bearer token.")

    async def check(token: str) -> Node:
        async with unit_of_work(runtime.sessionmaker, writes=False) as session:
            return await node_service.authenticate(session, token)

    return await node_service.authenticate_trusted(runtime, bearer.credentials, check)


BriefNode = Annotated[Node, Depends(node_in_short_session)]


async def reporting_node(session: SessionDep, runtime: RuntimeDep, bearer: BearerDep) -> Node:
    """The calling node of a report, trusted from this replica's recent checks while its
    token's stamp stands (``NodeService.authenticate_trusted``)."""
    if bearer is None or not bearer.credentials:
        raise NotAuthenticated("The node API needs the node token as a bearer token.")
    return await node_service.authenticate_trusted(
        runtime, bearer.credentials, partial(node_service.authenticate, session)
    )


ReportingNode = Annotated[Node, Depends(reporting_node)]


def _json(model: BaseModel) -> Response:
    # Serialised once by pydantic: a full state of 100,000 peers must not be validated again.
    return Response(model.model_dump_json(), media_type="application/json")


@router.post(
    "/enroll",
    summary="Enroll a node with its one-time enrollment token",
    response_model=EnrollResponse,
    responses=problem_responses(401, 409, 410, 422),
)
async def enroll(
    request: EnrollRequest, session: SessionDep, runtime: RuntimeDep
) -> EnrollResponse:
    return await node_service.enroll(session, runtime, request)


@router.get(
    "/state",
    summary="The full desired state: every peer this node must serve",
    response_model=FullState,
    responses=problem_responses(401),
)
async def full_state(node: CurrentNode, session: SessionDep, runtime: RuntimeDep) -> Response:
    await desired_state_service.load_filter_lists(runtime)
    state = await desired_state_service.full_state(session, runtime, node)
    return _json(FullState(state=state))


@router.get(
    "/state/changes",
    summary="Long poll: the changes since a revision (or the full state if it is too old)",
    description="Answers at once when something changed after `since`; otherwise waits up to "
    "`timeout` seconds (capped by the server; up to a fifth less, at random, so that nodes "
    "do not all poll again at once) and answers an empty delta at the same revision.",
    response_model=StateUpdate,
    responses=problem_responses(401, 422),
)
async def changes(
    node: BriefNode,
    runtime: RuntimeDep,
    since: Annotated[
        int, Query(ge=0, le=MAX_REVISION, description="The revision the node has applied.")
    ],
    wait_seconds: Annotated[
        float | None,
        Query(
            alias="timeout",
            ge=0,
            le=3600,
            description="Seconds to wait; default and cap: the server's.",
        ),
    ] = None,
) -> Response:
    cap = runtime.settings.long_poll_timeout_seconds
    wait = cap if wait_seconds is None else min(wait_seconds, cap)
    # Up to a fifth less, at random: nodes that started polling together (after a restart of
    # the control plane) spread out instead of all polling again in the same instant.
    wait *= 1.0 - LONG_POLL_JITTER * random.random()
    await desired_state_service.load_filter_lists(runtime)
    try:
        update = await desired_state_service.wait_for_changes(runtime, node, since, wait)
    except asyncio.CancelledError:
        # The server is shutting down mid-poll: answer "nothing new" so that the node simply
        # polls again (and reaches the next server) instead of logging a cancelled request.
        return _json(DeltaState(from_revision=since, revision=since))
    return _json(update)


@router.get(
    "/dns/lists/{sha256}",
    summary="A DNS filter list by its content hash: one domain name a line",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 404)},
)
async def filter_list(
    node: BriefNode,
    runtime: RuntimeDep,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    await desired_state_service.load_filter_lists(runtime)
    body = desired_state_service.filter_list_body(runtime, sha256)
    return Response(body, media_type="text/plain; charset=us-ascii")


@router.put(
    "/openvpn",
    summary="Tell the control plane about the node's OpenVPN (CA, tls-crypt key, transports)",
    description="What customers' .ovpn files for this node carry. The node's private keys "
    "never leave it.",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 422),
)
async def offer_openvpn(body: OpenVpnOffer, node: CurrentNode, session: SessionDep) -> Response:
    await node_service.offer_openvpn(session, node, body)
    return Response(status_code=204)


@router.put(
    "/ikev2",
    summary="Tell the control plane about the node's IKEv2 (the host clients dial, its CA)",
    description="What customers' IKEv2 profiles for this node carry. Until a node sends this, "
    "it is not listed as serving IKEv2 and no profile is made for it.",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 422),
)
async def offer_ikev2(body: IkeV2Offer, node: CurrentNode, session: SessionDep) -> Response:
    await node_service.offer_ikev2(session, node, body)
    return Response(status_code=204)


@router.post(
    "/report",
    summary="Report the node's live status; the answer lists the keys to block",
    description="Kept in RAM only, except the connection records a metered privacy policy "
    "keeps. `blocked` lists the public keys over a connection limit: the node must drop their "
    "traffic until a later answer leaves them out.",
    response_model=ReportAck,
    responses=problem_responses(401, 422),
)
async def report(
    body: NodeReport, node: ReportingNode, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return _json(await node_service.record_report(session, runtime, node, body))
