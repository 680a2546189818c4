"""Nodes over HTTP: the operator's admin endpoints and the customers' server list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from burrow.control.deps import CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.nodes.schemas import (
    EnrollmentIssued,
    NodeCreate,
    NodeCreated,
    NodeRead,
    NodeUpdate,
    ServerRead,
)
from burrow.control.nodes.service import node as node_service
from burrow.control.params import MAX_ID
from burrow.control.problems import problem_responses

router = APIRouter()

NodeId = Annotated[int, Path(ge=1, le=MAX_ID, description="The node's id.")]


@router.post(
    "/api/v1/admin/nodes",
    tags=["admin"],
    summary="Create a node and its one-time enrollment token",
    status_code=status.HTTP_201_CREATED,
    response_model=NodeCreated,
    responses=problem_responses(401, 403, 409, 422),
)
async def create_node(
    data: NodeCreate, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> NodeCreated:
    created = await node_service.create_by(session, runtime, admin, data)
    return NodeCreated(
        node=await node_service.read(runtime, created.node), enrollment=created.enrollment
    )


@router.get(
    "/api/v1/admin/nodes",
    tags=["admin"],
    summary="List the nodes with their health",
    response_model=list[NodeRead],
    responses=problem_responses(401, 403),
)
async def list_nodes(
    _admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> list[NodeRead]:
    return [await node_service.read(runtime, n) for n in await node_service.list_all(session)]


@router.get(
    "/api/v1/admin/nodes/{node_id}",
    tags=["admin"],
    summary="One node with its health",
    response_model=NodeRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_node(
    node_id: NodeId, _admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> NodeRead:
    return await node_service.read(runtime, await node_service.get(session, node_id))


@router.patch(
    "/api/v1/admin/nodes/{node_id}",
    tags=["admin"],
    summary="Change a node's name, location, endpoint, egress addresses or capacity",
    response_model=NodeRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def update_node(
    node_id: NodeId,
    data: NodeUpdate,
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> NodeRead:
    node = await node_service.update_by(session, runtime, admin, node_id, data)
    return await node_service.read(runtime, node)


@router.post(
    "/api/v1/admin/nodes/{node_id}/retire",
    tags=["admin"],
    summary="Retire a node for good; its token stops working at once",
    response_model=NodeRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def retire_node(
    node_id: NodeId, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> NodeRead:
    node = await node_service.retire_by(session, runtime, admin, node_id)
    return await node_service.read(runtime, node)


@router.post(
    "/api/v1/admin/nodes/{node_id}/enrollment-token",
    tags=["admin"],
    summary="A new one-time enrollment token (enrolling again replaces the node token)",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollmentIssued,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def new_enrollment_token(
    node_id: NodeId, admin: CurrentAdmin, session: SessionDep, runtime: RuntimeDep
) -> EnrollmentIssued:
    node = await node_service.get(session, node_id)
    return await node_service.new_enrollment_token_by(session, runtime, admin, node)


@router.get(
    "/api/v1/servers",
    tags=["servers"],
    summary="The servers customers can connect to, by country and city, with their load",
    response_model=list[ServerRead],
)
async def list_servers(session: SessionDep, runtime: RuntimeDep) -> list[ServerRead]:
    return await node_service.server_list(session, runtime)
