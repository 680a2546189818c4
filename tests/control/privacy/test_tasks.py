"""The privacy center's timed work, run as the scheduler runs it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from burrow.control.db import unit_of_work
from burrow.control.models import Account, RefundedPerson, RefundedPersonKind, utcnow
from burrow.control.privacy.tasks import clear_old_login_ips, purge_expired_invoices
from burrow.control.runtime import Runtime
from burrow.control.scheduler import JOBS
from tests.support import factories


async def _with_login(runtime: Runtime, age: timedelta | None, address: str) -> int:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        account.last_login_ip = address
        account.last_login_ip_at = utcnow() - age if age is not None else None
        return account.id


async def _login(runtime: Runtime, account_id: int) -> tuple[str | None, object]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account.last_login_ip, account.last_login_ip_at


def test_the_jobs_are_registered() -> None:
    jobs = [job for _name, job in JOBS]
    assert clear_old_login_ips in jobs
    assert purge_expired_invoices in jobs


async def test_login_addresses_are_forgotten_after_the_retention(runtime: Runtime) -> None:
    days = runtime.policy.privacy.last_login_ip_retention_days
    assert days == 30
    recent = await _with_login(runtime, timedelta(days=days - 1), "203.0.113.1")
    old = await _with_login(runtime, timedelta(days=days + 1), "203.0.113.2")
    undated = await _with_login(runtime, None, "203.0.113.3")
    assert await clear_old_login_ips(runtime) == 2
    assert (await _login(runtime, recent))[0] == "203.0.113.1"
    assert await _login(runtime, old) == (None, None)
    assert await _login(runtime, undated) == (None, None)
    assert await clear_old_login_ips(runtime) == 0


async def test_a_policy_that_keeps_no_login_address_forgets_every_one(metered: Runtime) -> None:
    recent = await _with_login(metered, timedelta(minutes=1), "203.0.113.4")
    assert await clear_old_login_ips(metered) == 1
    assert await _login(metered, recent) == (None, None)


async def test_the_invoice_purge_leaves_live_accounts_alone(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        account.created_at = utcnow() - timedelta(days=365 * 20)
    assert await purge_expired_invoices(runtime) == 0
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.get(Account, account.id) is not None


async def test_the_invoice_purge_forgets_refunded_persons_past_the_retention(
    runtime: Runtime,
) -> None:
    years = runtime.policy.privacy.invoice_retention_years
    async with unit_of_work(runtime.sessionmaker) as session:
        old = RefundedPerson(kind=RefundedPersonKind.email, digest="a" * 64)
        old.created_at = utcnow() - timedelta(days=365 * years + 3)
        recent = RefundedPerson(kind=RefundedPersonKind.fingerprint, digest="b" * 64)
        recent.created_at = utcnow() - timedelta(days=365 * years - 3)
        session.add_all([old, recent])
    await purge_expired_invoices(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        kept = (await session.scalars(select(RefundedPerson.digest))).all()
    assert kept == ["b" * 64]
