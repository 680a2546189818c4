"""The admin API: administrators search accounts and change their status.

Every route needs an administrator's session (``CurrentAdmin``); the work is the services'.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from burrow.control.accounts.schemas import (
    AccountPage,
    AdminAccountRead,
    SearchText,
    StatusChange,
    StatusReason,
)
from burrow.control.accounts.service import account as account_service
from burrow.control.deps import CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import Account, AccountStatus
from burrow.control.params import AccountId
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


def _read(account: Account) -> AdminAccountRead:
    return AdminAccountRead.model_validate(account)


@router.get(
    "/accounts",
    summary="Search accounts",
    response_model=AccountPage,
    responses=problem_responses(401, 403, 422),
)
async def search_accounts(
    _admin: CurrentAdmin,
    session: SessionDep,
    q: Annotated[SearchText | None, Query(description="Part of an email, or an id.")] = None,
    status: Annotated[AccountStatus | None, Query(description="Only this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AccountPage:
    found = await account_service.search(session, q, status, limit, offset)
    return AccountPage(
        items=[_read(a) for a in found.items], total=found.total, limit=limit, offset=offset
    )


@router.get(
    "/accounts/{account_id}",
    summary="One account",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_account(
    account_id: AccountId, _admin: CurrentAdmin, session: SessionDep
) -> AdminAccountRead:
    return _read(await account_service.get(session, account_id))


@router.post(
    "/accounts/{account_id}/suspend",
    summary="Suspend an account (VPN access ends at once)",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def suspend_account(
    account_id: AccountId,
    body: StatusReason,
    _admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminAccountRead:
    """The customer can still sign in and read the reason."""
    return _read(await account_service.suspend(session, runtime, account_id, body.reason))


@router.post(
    "/accounts/{account_id}/unsuspend",
    summary="Reinstate a suspended account",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def unsuspend_account(
    account_id: AccountId,
    _admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    body: StatusChange | None = None,
) -> AdminAccountRead:
    reason = body.reason if body is not None else None
    return _read(await account_service.unsuspend(session, runtime, account_id, reason))


@router.post(
    "/accounts/{account_id}/terminate",
    summary="Terminate an account for good",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def terminate_account(
    account_id: AccountId,
    body: StatusReason,
    _admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminAccountRead:
    """Ends every session of the account and its VPN access."""
    return _read(await account_service.terminate(session, runtime, account_id, body.reason))
