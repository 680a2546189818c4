"""The support service under the strict policy: what a request may hold, as ``burrow audit``
sees the database; reading emailed cancellations; handing a request to another admin."""

from __future__ import annotations

import pytest

from burrow.control.audit.service import CliOperator
from burrow.control.db import unit_of_work
from burrow.control.models import SupportAuthor, SupportMessage, SupportTopic, SupportVia
from burrow.control.policy.audit import AuditTargets, run_audit
from burrow.control.runtime import Runtime
from burrow.control.support.addresses import ReplyTo
from burrow.control.support.service import NotAnAdministratorToOwn, topic_of_email, usernames_in
from burrow.control.support.service import support as support_service
from tests.support.factories import create_account


async def test_the_audit_finds_no_client_address_in_support_requests(runtime: Runtime) -> None:
    """Strict policy: whatever a customer or an email pastes, no IP address is stored."""
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        view = await support_service.open(
            session,
            runtime,
            account=account,
            email=None,
            topic=SupportTopic.connection,
            subject="From 203.0.113.50 nothing works",
            body="My address is 203.0.113.50 and [2001:db8::7]:51820 fails at 10:42:13.",
            via=SupportVia.web,
        )
        await support_service.receive_email(
            session,
            runtime,
            reply=ReplyTo(view.request.id, staff=False),
            sender=account.email,
            subject="Re",
            body="Also from 198.51.100.9 now.",
        )
    report = await run_audit(runtime.engine, runtime.policy, runtime.settings, AuditTargets())
    violations = [f for f in report.violations if "support" in f.where]
    assert violations == []
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await support_service.get(session, view.request.id)
    assert stored.request.subject == "From [ip removed] nothing works"
    assert "203.0.113.50" not in stored.messages[0].body
    assert "2001:db8::7" not in stored.messages[0].body
    assert "10:42:13" in stored.messages[0].body  # times of day are not addresses
    assert stored.messages[1].body == "Also from [ip removed] now."
    # The audit does look there: a message written past the service is found.
    async with unit_of_work(runtime.sessionmaker) as session:
        session.add(
            SupportMessage(
                request_id=view.request.id,
                author=SupportAuthor.customer,
                body="raw 203.0.113.50",
                via=SupportVia.web,
            )
        )
    report = await run_audit(runtime.engine, runtime.policy, runtime.settings, AuditTargets())
    assert [f.where for f in report.violations if "support" in f.where] != []


def test_reading_an_emailed_cancellation() -> None:
    assert topic_of_email("Cancel please", "") == SupportTopic.cancellation
    assert topic_of_email("Money", "I want a refund") == SupportTopic.refund
    assert topic_of_email("Hello", "Servers in Peru?") == SupportTopic.other
    assert usernames_in("Please cancel.\nVPN username: jo@example.org\nThanks")[0] == (
        "jo@example.org"
    )
    assert usernames_in("cancel the account of pat@example.net.") == ["pat@example.net"]


async def test_a_request_is_handed_to_an_administrator_only(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        customer = await create_account(session)
        admin = await create_account(session, admin=True)
        view = await support_service.open(
            session,
            runtime,
            account=customer,
            email=None,
            topic=SupportTopic.billing,
            subject="Invoice",
            body="Please.",
            via=SupportVia.api,
        )
        handed = await support_service.assign(session, CliOperator("root"), view.request.id, admin)
        assert handed.owner_email == admin.email
        with pytest.raises(NotAnAdministratorToOwn):
            await support_service.assign(session, CliOperator("root"), view.request.id, customer)
