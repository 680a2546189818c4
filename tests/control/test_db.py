"""The unit of work's locks, on both databases: writers take turns, readers do not wait for
them, a lock that cannot be had is a 503-style ``DatabaseBusy``, and compare-and-set tells the
loser what the winner decided."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from burrow.control.config import Settings
from burrow.control.db import (
    DatabaseBusy,
    compare_and_set,
    create_engine,
    lock_row,
    make_sessionmaker,
    unit_of_work,
)
from burrow.control.models import (
    Account,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from tests.support.app import app_client
from tests.support.factories import create_account, create_session_token, create_subscription


@pytest.fixture
async def impatient(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A second engine on the same database that waits for a lock a fifth of a second."""
    engine = create_engine(settings.database_url, lock_timeout_seconds=0.2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_lock_not_had_in_time_is_database_busy(
    runtime: Runtime, impatient: AsyncEngine
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)

    async with unit_of_work(runtime.sessionmaker) as holder:
        await lock_row(holder, Account, account.id)
        started = time.monotonic()
        with pytest.raises(DatabaseBusy) as caught:
            async with unit_of_work(make_sessionmaker(impatient)) as waiter:
                await lock_row(waiter, Account, account.id)
        assert time.monotonic() - started < 10
    assert caught.value.status == 503
    assert caught.value.problem()["status"] == 503
    assert "try again" in caught.value.message


async def test_a_change_that_cannot_get_its_lock_answers_503_with_retry_after(
    runtime: Runtime, impatient: AsyncEngine
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        await create_subscription(session, account)
    # The same app and database, on an engine that gives up on a lock after 0.2 seconds.
    hurried = replace(runtime, engine=impatient, sessionmaker=make_sessionmaker(impatient))

    async with app_client(hurried) as client, unit_of_work(runtime.sessionmaker) as holder:
        await lock_row(holder, Account, account.id)
        response = await client.post(
            "/api/v1/devices", json={"name": "Laptop"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["status"] == 503
    assert "try again" in body["detail"]


async def test_a_reading_unit_that_writes_into_a_held_lock_is_database_busy(
    runtime: Runtime, impatient: AsyncEngine
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)

    async def change_it() -> None:
        async with unit_of_work(make_sessionmaker(impatient), writes=False) as reader:
            row = await reader.get(Account, account.id)
            assert row is not None
            row.status_reason = "changed while locked"
            await reader.flush()

    async with unit_of_work(runtime.sessionmaker) as holder:
        await lock_row(holder, Account, account.id)
        with pytest.raises(DatabaseBusy):
            await change_it()


async def test_writers_take_turns_on_one_row(runtime: Runtime) -> None:
    """Twenty units read a number under the lock and write it back one higher: none is lost."""
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        account.status_reason = "0"

    async def increment() -> None:
        async with unit_of_work(runtime.sessionmaker) as session:
            await lock_row(session, Account, account.id)
            row = await session.get(Account, account.id, populate_existing=True)
            assert row is not None
            await asyncio.sleep(0)  # let the others in, were the lock not held
            row.status_reason = str(int(row.status_reason or "0") + 1)

    await asyncio.gather(*(increment() for _ in range(20)))
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(Account, account.id)
        assert stored is not None
        assert stored.status_reason == "20"


async def test_readers_do_not_wait_for_a_writer(runtime: Runtime, impatient: AsyncEngine) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)

    async with unit_of_work(runtime.sessionmaker) as writer:
        await lock_row(writer, Account, account.id)
        writer.add(
            PrivacyRequest(
                account_id=account.id,
                kind=PrivacyRequestKind.objection,
                status=PrivacyRequestStatus.pending,
                due_at=utcnow(),
            )
        )
        await writer.flush()
        # A reading unit on the impatient engine answers at once, from what was committed.
        async with unit_of_work(make_sessionmaker(impatient), writes=False) as reader:
            found = await reader.scalar(select(Account.email).where(Account.id == account.id))
            assert found == account.email
            pending = await reader.scalar(
                select(PrivacyRequest.id).where(PrivacyRequest.account_id == account.id)
            )
            assert pending is None


async def test_a_reading_request_answers_while_a_writer_holds_the_lock(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        await create_subscription(session, account)
    headers = {"Authorization": f"Bearer {token}"}

    async with unit_of_work(runtime.sessionmaker) as writer:
        await lock_row(writer, Account, account.id)
        started = time.monotonic()
        response = await asyncio.wait_for(client.get("/api/v1/devices", headers=headers), 10)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 5


async def test_compare_and_set_tells_the_loser_what_was_decided(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        request = PrivacyRequest(
            account_id=account.id,
            kind=PrivacyRequestKind.objection,
            status=PrivacyRequestStatus.pending,
            due_at=utcnow(),
        )
        session.add(request)
    pending = PrivacyRequest.status == PrivacyRequestStatus.pending

    async with unit_of_work(runtime.sessionmaker) as first:
        mine = await first.get(PrivacyRequest, request.id)
        assert mine is not None
        assert await compare_and_set(
            first, mine, pending, {"status": PrivacyRequestStatus.done, "outcome": "Done."}
        )
        assert mine.status is PrivacyRequestStatus.done
    async with unit_of_work(runtime.sessionmaker) as second:
        theirs = await second.get(PrivacyRequest, request.id)
        assert theirs is not None
        theirs_status = {"status": PrivacyRequestStatus.refused, "outcome": "No."}
        assert not await compare_and_set(second, theirs, pending, theirs_status)
        assert theirs.status is PrivacyRequestStatus.done
        assert theirs.outcome == "Done."
