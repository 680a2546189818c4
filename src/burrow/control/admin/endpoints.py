"""The admin API: administrators search accounts and change their status, and read the
audit trail of what administrators did.

Every route needs an administrator's session (``CurrentAdmin``); the work is the services'.
Every change is a service method that takes the admin as its ``actor`` and leaves its row in
the trail in the same unit of work.
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
from burrow.control.admin.schemas import (
    ActionFilter,
    AdminActionOut,
    AdminActionPage,
    TargetIdFilter,
    TargetTypeFilter,
    TerminationIn,
    TermsClausesOut,
)
from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import AuditEntry, admin_audit
from burrow.control.deps import CurrentAdmin, RuntimeDep, SessionDep
from burrow.control.models import Account, AccountStatus
from burrow.control.params import MAX_ID, AccountId
from burrow.control.policy.clauses import terms_clauses
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
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminAccountRead:
    """The customer can still sign in and read the reason."""
    return _read(await account_service.suspend(session, runtime, admin, account_id, body.reason))


@router.post(
    "/accounts/{account_id}/unsuspend",
    summary="Reinstate a suspended account",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def unsuspend_account(
    account_id: AccountId,
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    body: StatusChange | None = None,
) -> AdminAccountRead:
    reason = body.reason if body is not None else None
    return _read(await account_service.unsuspend(session, runtime, admin, account_id, reason))


@router.post(
    "/accounts/{account_id}/terminate",
    summary="Terminate an account for good, for breaking a named clause of the terms",
    response_model=AdminAccountRead,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def terminate_account(
    account_id: AccountId,
    body: TerminationIn,
    admin: CurrentAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminAccountRead:
    """Ends every session of the account and its VPN access. ``clause`` is one of
    ``GET /api/v1/admin/terms-clauses``; the customer reads it with the reason."""
    return _read(
        await account_service.terminate(
            session, runtime, admin, account_id, body.reason, clause=body.clause
        )
    )


@router.get(
    "/terms-clauses",
    summary="The clauses of the current terms an account can be terminated for breaking",
    response_model=TermsClausesOut,
    responses=problem_responses(401, 403),
)
async def list_terms_clauses(_admin: CurrentAdmin, runtime: RuntimeDep) -> TermsClausesOut:
    return TermsClausesOut(
        terms_version=runtime.policy.terms.version, clauses=terms_clauses(runtime.policy)
    )


def _action_out(entry: AuditEntry) -> AdminActionOut:
    row = entry.action
    return AdminActionOut(
        id=row.id,
        admin_id=row.admin_id,
        admin_email=entry.admin_email,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        reason=row.reason,
        detail=entry.detail,
        at=row.at,
    )


@router.get(
    "/audit",
    summary="The admin audit trail: who did what to what, when and why",
    response_model=AdminActionPage,
    responses=problem_responses(401, 403, 422),
)
async def list_admin_actions(
    _admin: CurrentAdmin,
    session: SessionDep,
    admin_id: Annotated[
        int | None, Query(alias="admin", ge=1, le=MAX_ID, description="The admin's account id.")
    ] = None,
    action: Annotated[
        ActionFilter | None,
        Query(description="A verb such as account.suspend, or a family such as account."),
    ] = None,
    target_type: Annotated[
        TargetTypeFilter | None, Query(description="account, node, refund_request ...")
    ] = None,
    target_id: Annotated[TargetIdFilter | None, Query(description="The target's id.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AdminActionPage:
    """Newest first. Customers' own activity is never in it."""
    filters = ActionFilters(
        admin_id=admin_id, action=action, target_type=target_type, target_id=target_id
    )
    page = await admin_audit.search(session, filters, limit, offset)
    return AdminActionPage(
        items=[_action_out(e) for e in page.items], total=page.total, limit=limit, offset=offset
    )
