"""The audit trail service: what a row holds, who may leave one, and the terms' clauses."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import account as account_service
from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import CliOperator, NotAnAdministrator, admin_audit
from burrow.control.models import AccountStatus
from burrow.control.policy.clauses import UnknownClause, terms_clauses
from burrow.control.policy.schemas import TermsProse, TermsSection
from burrow.control.runtime import Runtime
from tests.support.factories import create_account


async def test_record_keeps_who_what_why(session: AsyncSession) -> None:
    admin = await create_account(session, admin=True)
    row = await admin_audit.record(
        session, admin, "node.update", "node", 7, "  moved racks ", {"capacity": 10}
    )
    page = await admin_audit.search(session)
    assert page.total == 1
    entry = page.items[0]
    assert entry.action.id == row.id
    assert (entry.action.admin_id, entry.admin_email) == (admin.id, admin.email)
    assert (entry.action.target_type, entry.action.target_id) == ("node", "7")
    assert entry.action.reason == "moved racks"
    assert entry.detail == {"capacity": 10}


async def test_a_customer_cannot_leave_a_row(session: AsyncSession) -> None:
    customer = await create_account(session)
    with pytest.raises(NotAnAdministrator):
        await admin_audit.record(session, customer, "account.suspend", "account", customer.id)
    assert (await admin_audit.search(session)).total == 0


async def test_the_command_line_leaves_a_row_with_its_operator_and_no_admin(
    session: AsyncSession, runtime: Runtime
) -> None:
    customer = await create_account(session)
    await account_service.suspend(session, runtime, CliOperator("ops"), customer.id, "chargeback")
    page = await admin_audit.search(session)
    assert page.total == 1
    entry = page.items[0]
    assert (entry.action.admin_id, entry.admin_email) == (None, None)
    assert (entry.action.action, entry.action.target_id) == ("account.suspend", str(customer.id))
    assert entry.detail == {"via": "cli", "operator": "ops"}


async def test_search_filters(session: AsyncSession) -> None:
    one = await create_account(session, admin=True)
    two = await create_account(session, admin=True)
    await admin_audit.record(session, one, "account.suspend", "account", 1, "x")
    await admin_audit.record(session, two, "account_x.odd", "account", 1)
    await admin_audit.record(session, two, "refund.refuse", "refund_request", 1, "y")

    async def actions(filters: ActionFilters) -> list[str]:
        return [e.action.action for e in (await admin_audit.search(session, filters)).items]

    assert await actions(ActionFilters(admin_id=one.id)) == ["account.suspend"]
    # A family is the part before the dot: "account" does not match "account_x".
    assert await actions(ActionFilters(action="account")) == ["account.suspend"]
    assert await actions(ActionFilters(target_type="refund_request", target_id="1")) == [
        "refund.refuse"
    ]
    assert await actions(ActionFilters(target_id="2")) == []


async def test_terminate_checks_the_clause_and_records_it(
    session: AsyncSession, runtime: Runtime
) -> None:
    admin = await create_account(session, admin=True)
    customer = await create_account(session)
    with pytest.raises(UnknownClause):
        await account_service.terminate(session, runtime, admin, customer.id, "why", clause="Nope")
    done = await account_service.terminate(
        session,
        runtime,
        admin,
        customer.id,
        "Sold the login",
        clause=" Prohibited activities: sharing your login credentials ",
    )
    assert done.status is AccountStatus.terminated
    assert done.terminated_clause == "Prohibited activities: sharing your login credentials"
    assert done.status_reason is not None
    assert "sharing your login credentials" in done.status_reason
    assert "Sold the login" in done.status_reason
    page = await admin_audit.search(session)
    assert [e.action.action for e in page.items] == ["account.terminate"]
    assert page.items[0].detail["clause"] == (
        "Prohibited activities: sharing your login credentials"
    )


def test_clauses_come_from_the_terms_sections(runtime: Runtime) -> None:
    clauses = terms_clauses(runtime.policy)
    assert clauses[0] == "Prohibited activities"
    assert "General" not in clauses
    assert "Prohibited activities: spam or unsolicited bulk messaging" in clauses
    assert len(clauses) == len(set(clauses))
    bare = runtime.policy.model_copy(
        update={"terms": TermsSection(version="v9", effective_date=date(2026, 1, 1), sections=[])}
    )
    assert terms_clauses(bare) == ["Terms of service, version v9"]
    long_title = runtime.policy.model_copy(
        update={
            "terms": TermsSection(
                version="v9",
                effective_date=date(2026, 1, 1),
                sections=[
                    TermsProse(title="T" * 200, body="- " + "b" * 300, prohibited_conduct=True)
                ],
            )
        }
    )
    assert all(len(c) <= 200 for c in terms_clauses(long_title))
