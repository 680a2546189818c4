"""Operators' actions on accounts record themselves, never turn on their own author, and one
session cannot end or demote another administrator."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import (
    SecondAdminNeeded,
    SelfActionRefused,
    StateChanged,
    StatusChangeRefused,
)
from burrow.control.accounts.service import account as account_service
from burrow.control.audit.service import CliOperator, NotAnAdministrator, admin_audit
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus
from burrow.control.policy.clauses import terms_clauses
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_session_token


async def _trail(runtime: Runtime) -> list[tuple[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as s:
        page = await admin_audit.search(s)
    return [(e.action.action, e.action.target_id) for e in reversed(page.items)]


async def test_an_action_writes_its_own_row_in_the_same_unit_of_work(
    runtime: Runtime,
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        admin = await create_account(s, admin=True)
        customer = await create_account(s)
        await account_service.suspend(s, runtime, admin, customer.id, "chargeback")
    assert await _trail(runtime) == [("account.suspend", str(customer.id))]
    # An actor who may not act: the row is refused, and the change goes with it.
    with pytest.raises(NotAnAdministrator):
        async with unit_of_work(runtime.sessionmaker) as s:
            await account_service.unsuspend(s, runtime, customer, customer.id, "me")
    async with unit_of_work(runtime.sessionmaker) as s:
        again = await account_service.get(s, customer.id)
        assert again.status is AccountStatus.suspended
    assert await _trail(runtime) == [("account.suspend", str(customer.id))]


async def test_an_admin_cannot_act_on_their_own_account(
    session: AsyncSession, runtime: Runtime
) -> None:
    admin = await create_account(session, admin=True)
    with pytest.raises(SelfActionRefused, match="your own account"):
        await account_service.suspend(session, runtime, admin, admin.id, "x")
    with pytest.raises(SelfActionRefused):
        await account_service.terminate(session, runtime, admin, admin.id, "x")
    with pytest.raises(SelfActionRefused):
        await account_service.demote(session, admin, admin.id)
    assert admin.status is AccountStatus.active
    assert admin.is_admin


async def test_ending_or_demoting_an_admin_takes_a_second_person(
    session: AsyncSession, runtime: Runtime
) -> None:
    first = await create_account(session, admin=True)
    second = await create_account(session, admin=True)
    with pytest.raises(SecondAdminNeeded, match="command line"):
        await account_service.terminate(session, runtime, first, second.id, "rogue")
    with pytest.raises(SecondAdminNeeded):
        await account_service.demote(session, first, second.id)
    # Suspending another admin stays possible from a session: it is undone as easily.
    await account_service.suspend(session, runtime, first, second.id, "on leave")
    # The server's command line is the second person.
    ops = CliOperator("ops")
    await account_service.demote(session, ops, second.id, "left")
    assert not second.is_admin
    done = await account_service.terminate(session, runtime, ops, second.id, "left the company")
    assert done.status is AccountStatus.terminated


async def test_a_change_that_lost_a_race_says_what_happened(
    runtime: Runtime,
) -> None:
    """Two units of work read the account active; the second one's UPDATE finds it changed."""
    async with unit_of_work(runtime.sessionmaker) as s:
        admin = await create_account(s, admin=True)
        customer = await create_account(s)

    async def slow_and_fast() -> None:
        # A reading unit (as a page that shows the account): on SQLite it takes the write
        # lock only at its first write, so the other unit can commit in between.
        async with unit_of_work(runtime.sessionmaker, writes=False) as slow:
            seen = await account_service.get(slow, customer.id)
            assert seen.status is AccountStatus.active  # what the slow unit goes on believing
            async with unit_of_work(runtime.sessionmaker) as fast:
                await account_service.suspend(fast, runtime, admin, customer.id, "first")
            await account_service.terminate(slow, runtime, admin, customer.id, "second")

    with pytest.raises(StateChanged, match=r"changed by someone else.*suspended") as lost:
        await slow_and_fast()
    assert lost.value.status == 409
    async with unit_of_work(runtime.sessionmaker) as s:
        now: Account = await account_service.get(s, customer.id)
        assert now.status is AccountStatus.suspended
    assert await _trail(runtime) == [("account.suspend", str(customer.id))]


async def test_the_api_refuses_self_actions_and_admin_targets_with_a_message(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        admin = await create_account(s, admin=True)
        other = await create_account(s, admin=True)
        headers = {"Authorization": f"Bearer {await create_session_token(s, admin)}"}
    own = await client.post(
        f"/api/v1/admin/accounts/{admin.id}/suspend", json={"reason": "x"}, headers=headers
    )
    assert own.status_code == 403
    assert "your own account" in own.json()["detail"]
    clause = terms_clauses(runtime.policy)[0]
    ended = await client.post(
        f"/api/v1/admin/accounts/{other.id}/terminate",
        json={"reason": "rogue", "clause": clause or "x"},
        headers=headers,
    )
    assert ended.status_code == 403
    assert "administrator" in ended.json()["detail"]
    assert "command line" in ended.json()["detail"]
    twice = await client.post(
        f"/api/v1/admin/accounts/{other.id}/suspend", json={"reason": "x"}, headers=headers
    )
    assert twice.status_code == 200
    again = await client.post(
        f"/api/v1/admin/accounts/{other.id}/suspend", json={"reason": "x"}, headers=headers
    )
    assert again.status_code == 409
    assert "already suspended" in again.json()["detail"]
    assert await _trail(runtime) == [("account.suspend", str(other.id))]


async def test_status_change_refused_is_still_a_409(
    session: AsyncSession, runtime: Runtime
) -> None:
    customer = await create_account(session, status=AccountStatus.terminated)
    with pytest.raises(StatusChangeRefused):
        await account_service.suspend(session, runtime, CliOperator("ops"), customer.id, "x")
