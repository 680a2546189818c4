"""Migration 0005: one open refund request per order, and what it does to the duplicates that
the race stored before it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import IntegrityError

from burrow.control.db import unit_of_work
from burrow.control.models import RefundRequest
from burrow.control.runtime import Runtime
from tests.conftest import ROOT
from tests.support.factories import create_account, create_order

INSERT = text(
    "INSERT INTO refund_requests (order_id, account_id, reason, status, requested_at, "
    "terms_version, unsupported_device) VALUES (:order_id, :account_id, 'race', :status, "
    ":at, '2026-11', false)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))
AT = datetime(2026, 12, 1, 10, tzinfo=UTC)


def _config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["skip_logging"] = True
    return cfg


async def test_open_duplicates_are_closed_and_then_refused_by_the_index(
    runtime: Runtime, database_url: str
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        order = await create_order(session, account)
        other = await create_order(session, account)
    cfg = _config(database_url)
    before = ScriptDirectory.from_config(cfg).get_revision("0005").down_revision
    assert isinstance(before, str)
    await asyncio.to_thread(command.downgrade, cfg, before)

    # What twenty requests at once could store before: several open requests for one order.
    rows = [
        (order.id, "evaluating"),
        (order.id, "queued"),
        (order.id, "approved"),
        (order.id, "queued"),
        (order.id, "refused"),
        (other.id, "queued"),
    ]
    async with unit_of_work(runtime.sessionmaker) as session:
        for order_id, status in rows:
            values = {"order_id": order_id, "account_id": account.id, "status": status}
            await session.execute(INSERT, {**values, "at": AT})
    await asyncio.to_thread(command.upgrade, cfg, "head")

    async with unit_of_work(runtime.sessionmaker) as session:
        query = text("SELECT id, status, decision_reason FROM refund_requests ORDER BY id")
        stored = (await session.execute(query)).all()
    ids = [row.id for row in stored]
    # The approved one stays open; the other open ones are refused as its duplicates.
    assert [row.status for row in stored] == [
        "refused",
        "refused",
        "approved",
        "refused",
        "refused",
        "queued",
    ]
    duplicate = f"A duplicate of refund request {ids[2]}, made at the same moment."
    for row in (stored[0], stored[1], stored[3]):
        assert row.decision_reason == duplicate
    assert stored[4].decision_reason is None

    async with unit_of_work(runtime.sessionmaker) as session:
        values = {"order_id": other.id, "account_id": account.id, "status": "evaluating"}
        with pytest.raises(IntegrityError):
            await session.execute(INSERT, {**values, "at": AT})
        await session.rollback()
    # Closed requests do not count: another refused one is stored.
    async with unit_of_work(runtime.sessionmaker) as session:
        values = {"order_id": other.id, "account_id": account.id, "status": "refused"}
        await session.execute(INSERT, {**values, "at": AT})
        assert await session.get(RefundRequest, ids[-1]) is not None
