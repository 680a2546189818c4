"""The connections API under /api/v1/connections: the account's connections and records."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from burrow.control.connections.schemas import ConnectionList, ConnectionRecordList
from burrow.control.connections.service import connection as connection_service
from burrow.control.deps import CurrentAccount, RuntimeDep, SessionDep
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1/connections", tags=["connections"])


@router.get(
    "",
    summary="Your current connections",
    description="Each device connected to a server now, and why a blocked one is blocked. "
    "Never an IP address; under a strict privacy policy, no times either.",
    response_model=ConnectionList,
    responses=problem_responses(401),
)
async def list_connections(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> ConnectionList:
    return await connection_service.current(session, runtime, account)


@router.get(
    "/records",
    summary="Your connection records (metered privacy mode only)",
    description="Under a metered privacy policy: your connections, newest first, for as long "
    "as the policy keeps them. Under a strict one: an empty list and a statement that nothing "
    "is recorded.",
    response_model=ConnectionRecordList,
    responses=problem_responses(401, 422),
)
async def list_records(
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many records.")] = 100,
) -> ConnectionRecordList:
    return await connection_service.records(session, runtime, account, limit)
