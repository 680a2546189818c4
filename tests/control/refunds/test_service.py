"""Refund service: facts gathered from the database, decisions stored with their evidence,
approved refunds executed once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import account as account_service
from burrow.control.audit.service import CliOperator, NotAnAdministrator, admin_audit
from burrow.control.billing.service import OrderNotFound
from burrow.control.billing.service import billing as billing_service
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AccountStatus,
    Order,
    OrderStatus,
    PaymentMethod,
    RefundedPerson,
    RefundedPersonKind,
    RefundRequest,
    RefundRuleOutcome,
    RefundStatus,
    ServedPeer,
    SubscriptionStatus,
    UsageCounter,
    utcnow,
)
from burrow.control.payments.registry import RegisteredProvider
from burrow.control.payments.registry import registry as payment_providers
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.refunds.service import (
    RefundAlreadyDecided,
    RefundAlreadyRequested,
    RefundView,
)
from burrow.control.refunds.service import refund as refund_service
from burrow.control.refunds.tasks import execute_approved_refunds, recheck_queued_refunds
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_device,
    create_paid_order,
    get_plan,
)


async def _paid(
    session: AsyncSession,
    runtime: Runtime,
    account: Account,
    reference: str,
    *,
    days_ago: float = 1,
    fingerprint: str | None = None,
) -> Order:
    paid_at = utcnow() - timedelta(days=days_ago)
    return await create_paid_order(
        session, runtime, account, reference, fingerprint=fingerprint, paid_at=paid_at
    )


async def _usage(session: AsyncSession, account: Account, bytes_total: int, sessions: int) -> None:
    session.add(UsageCounter(account_id=account.id, bytes_total=bytes_total, sessions=sessions))
    await session.flush()


def _rules(view: RefundView) -> dict[str, bool]:
    return {o.rule: o.passed for o in view.outcomes}


async def test_metered_auto_approval_executes_and_removes_access(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        device = await create_device(session, account)
        order = await _paid(session, metered, account, "m-1")
        await _usage(session, account, 999_999_999, 29)
    async with unit_of_work(metered.sessionmaker) as session:
        served = set(
            await session.scalars(
                select(ServedPeer.public_key).where(ServedPeer.account_id == account.id)
            )
        )
        assert served == {device.public_key}
        view = await refund_service.request(session, metered, account, order.id, "Too slow.")
    assert view.request.status == RefundStatus.executed
    assert view.request.amount_minor == 1199
    assert view.request.terms_version == "2026-11"
    assert view.request.due_at is not None
    assert view.request.due_at - view.request.requested_at == timedelta(hours=24)
    assert all(_rules(view).values())
    assert set(_rules(view)) >= {
        "window_days",
        "excluded_payment_methods",
        "first_order_only",
        "not_for_renewals",
        "max_data_bytes",
        "max_sessions",
        "one_per_person",
        "terminated_for_violation_excludes",
        "reason_required",
    }
    async with unit_of_work(metered.sessionmaker) as session:
        stored = await session.get(Order, order.id)
        assert stored is not None
        assert stored.status == OrderStatus.refunded
        assert stored.refunded_minor == 1199
        sub = await subscription_service.current(session, account.id)
        assert sub is None
        assert await subscription_service.access_plan(session, account.id) is None
        served = set(
            await session.scalars(
                select(ServedPeer.public_key).where(ServedPeer.account_id == account.id)
            )
        )
        assert served == set()
        evidence = await session.scalars(
            select(RefundRuleOutcome).where(RefundRuleOutcome.refund_request_id == view.request.id)
        )
        data = next(o for o in evidence if o.rule == "max_data_bytes")
        assert json.loads(data.evidence) == {"bytes": 999_999_999, "limit": 1_000_000_000}
        # Executed once: the retry job finds nothing to do.
    assert await execute_approved_refunds(metered) == 0


async def test_metered_usage_at_the_limit_refused(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        order = await _paid(session, metered, account, "m-limit")
        await _usage(session, account, 1_000_000_000, 30)
        view = await refund_service.request(session, metered, account, order.id, "No.")
    assert view.request.status == RefundStatus.refused
    assert not _rules(view)["max_data_bytes"]
    assert not _rules(view)["max_sessions"]
    assert "max_data_bytes" in (view.request.decision_reason or "")
    async with unit_of_work(metered.sessionmaker) as session:
        current = await subscription_service.current(session, account.id)
        assert current is not None
        assert current.status == SubscriptionStatus.active


async def test_renewal_refused_under_metered(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        await _paid(session, metered, account, "m-r1", days_ago=40)
        renewal = await _paid(session, metered, account, "m-r2")
        view = await refund_service.request(session, metered, account, renewal.id, "Why")
    assert view.request.status == RefundStatus.refused
    assert _rules(view)["first_order_only"] is False
    assert _rules(view)["not_for_renewals"] is False


@pytest.mark.parametrize("same", ["email", "fingerprint"])
async def test_second_account_of_the_same_person(metered: Runtime, same: str) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        first = await create_account(session, email=f"Person.{same}@example.org")
        second = await create_account(
            session,
            email=f"person.{same}+vpn@example.org" if same == "email" else None,
        )
        print_ = "fp_card_1" if same == "fingerprint" else None
        one = await _paid(session, metered, first, f"p-{same}-1", fingerprint=print_)
        two = await _paid(session, metered, second, f"p-{same}-2", fingerprint=print_)
        granted = await refund_service.request(session, metered, first, one.id, "a")
        assert granted.request.status == RefundStatus.executed
        view = await refund_service.request(session, metered, second, two.id, "b")
    assert view.request.status == RefundStatus.refused
    assert _rules(view)["one_per_person"] is False


async def _erase(runtime: Runtime, account_id: int) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await account_service.get(session, account_id)
        await privacy_service.erase(session, runtime, account, password=DEFAULT_PASSWORD)


@pytest.mark.parametrize("same", ["email", "fingerprint"])
async def test_one_per_person_outlives_the_erasure_of_the_refunded_account(
    metered: Runtime, same: str
) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        first = await create_account(session, email=f"Gone.{same}@example.org")
        one = await _paid(session, metered, first, f"g-{same}-1", fingerprint=f"fp_gone_{same}")
        granted = await refund_service.request(session, metered, first, one.id, "a")
        assert granted.request.status == RefundStatus.executed
    await _erase(metered, first.id)
    async with unit_of_work(metered.sessionmaker) as session:
        kept = (await session.scalars(select(RefundedPerson))).all()
        # One digest of the address and one of the refunded order's card, neither in clear.
        assert sorted(k.kind for k in kept) == [
            RefundedPersonKind.email,
            RefundedPersonKind.fingerprint,
        ]
        assert all(len(k.digest) == 64 and same not in k.digest for k in kept)
        # The same mailbox (case and +tag aside) with another card, or the same card under
        # another address: only the kept digests can tell it is the same person.
        second = await create_account(
            session, email=f"gone.{same}+again@example.org" if same == "email" else None
        )
        card = f"fp_gone_{same}" if same == "fingerprint" else "fp_new_card"
        two = await _paid(session, metered, second, f"g-{same}-2", fingerprint=card)
        view = await refund_service.request(session, metered, second, two.id, "b")
    assert view.request.status == RefundStatus.refused
    assert _rules(view)["one_per_person"] is False
    assert "one_per_person" in (view.request.decision_reason or "")


async def test_an_erased_account_never_refunded_leaves_no_digest(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session, email="never.refunded@example.org")
        order = await _paid(session, metered, account, "n-1", fingerprint="fp_never")
        # Asked and refused (a renewal is not refunded under metered): still not refunded.
        await _paid(session, metered, account, "n-0", days_ago=40)
        refused = await refund_service.request(session, metered, account, order.id, "x")
        assert refused.request.status == RefundStatus.refused
    await _erase(metered, account.id)
    async with unit_of_work(metered.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(RefundedPerson)) == 0
        # And a new account of that person is judged on its own.
        again = await create_account(session, email="never.refunded@example.org")
        order = await _paid(session, metered, again, "n-2", fingerprint="fp_never")
        view = await refund_service.request(session, metered, again, order.id, "y")
    assert _rules(view)["one_per_person"] is True


async def test_without_the_rule_an_erased_refunded_account_leaves_no_digest(
    runtime: Runtime,
) -> None:
    assert runtime.policy.refunds is not None
    assert not runtime.policy.refunds.one_per_person  # strict: a person judges each request
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        account = await create_account(session)
        order = await _paid(session, runtime, account, "s-gone", fingerprint="fp_strict")
        view = await refund_service.request(session, runtime, account, order.id, "Broken")
        approved = await refund_service.approve(
            session, runtime, admin, view.request.id, 300, "Partly worked."
        )
        assert approved.request.status == RefundStatus.executed
    await _erase(runtime, account.id)
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.scalar(select(func.count()).select_from(RefundedPerson)) == 0


async def test_terminated_account_refused(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        order = await _paid(session, runtime, account, "s-term")
        account.status = AccountStatus.terminated
        account.terminated_clause = "Prohibited activities"
        await session.flush()
        view = await refund_service.request(session, runtime, account, order.id, "x")
    assert view.request.status == RefundStatus.refused
    assert _rules(view)["terminated_for_violation_excludes"] is False


async def test_a_termination_for_no_clause_does_not_exclude_a_refund(runtime: Runtime) -> None:
    # Ended by the operator for another reason (the command line without --clause): the seed
    # excludes only accounts "terminated due to policy violations".
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        order = await _paid(session, runtime, account, "s-term-plain")
        await account_service.terminate(
            session, runtime, CliOperator("ops"), account.id, "Closing the region."
        )
        view = await refund_service.request(session, runtime, account, order.id, "x")
    assert _rules(view)["terminated_for_violation_excludes"] is True


async def test_strict_queues_then_a_finding_refuses(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        order = await _paid(session, runtime, account, "s-1", days_ago=29)
        view = await refund_service.request(session, runtime, account, order.id, "Blocked.")
        assert view.request.status == RefundStatus.queued
        assert view.request.due_at is None  # the strict seed names no service level
        assert view.request.amount_minor == 699
        with pytest.raises(RefundAlreadyRequested):
            await refund_service.request(session, runtime, account, order.id, "Again")
        found = await refund_service.record_finding(
            session, runtime, CliOperator("support"), view.request.id, unsupported_device=True
        )
    assert found.request.status == RefundStatus.refused
    assert _rules(found)["unsupported_device_excludes"] is False


async def test_strict_admin_approves_and_refuses(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        a = await create_account(session)
        b = await create_account(session)
        order_a = await _paid(session, runtime, a, "s-a")
        order_b = await _paid(session, runtime, b, "s-b")
        view_a = await refund_service.request(session, runtime, a, order_a.id, "Broken")
        view_b = await refund_service.request(session, runtime, b, order_b.id, "Broken")
        approved = await refund_service.approve(
            session, runtime, admin, view_a.request.id, 300, "Partly worked."
        )
        assert approved.request.status == RefundStatus.executed
        assert approved.request.decided_by == admin.id
        assert approved.order.status == OrderStatus.partially_refunded
        assert approved.order.refunded_minor == 300
        refused = await refund_service.refuse(session, admin, view_b.request.id, "Works fine.")
        assert refused.request.status == RefundStatus.refused
        assert refused.request.decision_reason == "Works fine."
        with pytest.raises(RefundAlreadyDecided):
            await refund_service.refuse(session, admin, view_a.request.id, "late")


async def test_someone_elses_order_is_unknown(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        owner = await create_account(session)
        stranger = await create_account(session)
        order = await _paid(session, runtime, owner, "s-own")
        with pytest.raises(OrderNotFound):
            await refund_service.request(session, runtime, stranger, order.id, "mine?")


class _FlakyProvider:
    """Fails its first call without refunding, then refunds; remembers every key it saw."""

    name = "flaky"

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.made: dict[str, str] = {}

    async def execute_refund(
        self,
        order: Order,
        payment_id: str,
        amount_minor: int,
        idempotency_key: str,
        reference: str,
    ) -> str:
        self.keys.append(idempotency_key)
        if len(self.keys) == 1:
            raise ConnectionError("provider unreachable")
        self.made[reference] = f"re_{order.id}"
        return self.made[reference]

    async def find_refund(self, order: Order, payment_id: str, reference: str) -> str | None:
        return self.made.get(reference)


async def test_failed_execution_is_looked_up_then_retried_under_a_new_key(
    metered: Runtime,
) -> None:
    flaky = _FlakyProvider()
    payment_providers.register(RegisteredProvider("flaky", refunds=lambda _settings: flaky))
    try:
        async with unit_of_work(metered.sessionmaker) as session:
            account = await create_account(session)
            plan = await get_plan(session, "personal-monthly")
            recorded = await billing_service.record_payment(
                session, metered, account, plan, 1199, "USD", PaymentMethod.card, "flaky", "ch_1"
            )
            view = await refund_service.request(
                session, metered, account, recorded.order.id, "Slow."
            )
            assert view.request.status == RefundStatus.approved
        assert await execute_approved_refunds(metered) == 1
        assert await execute_approved_refunds(metered) == 0
        reference = view.request.provider_reference
        assert flaky.keys[0] == f"burrow-refund-{reference}"
        assert len(flaky.keys) == 2
        assert flaky.keys[1] != flaky.keys[0]
        async with unit_of_work(metered.sessionmaker) as session:
            stored = await session.get(RefundRequest, view.request.id)
            assert stored is not None
            assert stored.status == RefundStatus.executed
            assert stored.provider_refund_id == f"re_{recorded.order.id}"
    finally:
        payment_providers.unregister("flaky")


async def test_one_per_person_survives_a_change_of_email(metered: Runtime) -> None:
    async with unit_of_work(metered.sessionmaker) as session:
        first = await create_account(session, email="mover@example.org")
        one = await _paid(session, metered, first, "move-1")
        granted = await refund_service.request(session, metered, first, one.id, "a")
        assert granted.request.status == RefundStatus.executed
        # The refunded customer moves to another address (as a confirmed change does) ...
        first.email = "moved@example.net"
    async with unit_of_work(metered.sessionmaker) as session:
        # ... and signs up again with the old one.
        second = await create_account(session, email="Mover+again@example.org")
        two = await _paid(session, metered, second, "move-2")
        view = await refund_service.request(session, metered, second, two.id, "b")
    assert view.request.status == RefundStatus.refused
    assert _rules(view)["one_per_person"] is False


async def test_a_termination_after_the_request_refuses_it_at_the_next_check(
    runtime: Runtime,
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        order = await _paid(session, runtime, account, "t-later")
        view = await refund_service.request(session, runtime, account, order.id, "No")
        assert view.request.status == RefundStatus.queued
    assert await recheck_queued_refunds(runtime) == 0
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        await account_service.terminate(
            session, runtime, admin, account.id, "Spam", clause="Prohibited activities"
        )
    assert await recheck_queued_refunds(runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(RefundRequest, view.request.id)
        assert stored is not None
        assert stored.status == RefundStatus.refused
        assert "terminated" in (stored.decision_reason or "")
        outcome = await session.scalar(
            select(RefundRuleOutcome).where(
                RefundRuleOutcome.refund_request_id == view.request.id,
                RefundRuleOutcome.rule == "terminated_for_violation_excludes",
            )
        )
        assert outcome is not None
        assert not outcome.passed
    assert await recheck_queued_refunds(runtime) == 0


async def test_refund_decisions_record_themselves_and_a_non_admin_moves_no_money(
    runtime: Runtime,
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        a = await create_account(session)
        b = await create_account(session)
        order_a = await _paid(session, runtime, a, "s-trail-a")
        order_b = await _paid(session, runtime, b, "s-trail-b")
        view_a = await refund_service.request(session, runtime, a, order_a.id, "Broken")
        view_b = await refund_service.request(session, runtime, b, order_b.id, "Broken")
    # A customer's account as the actor: refused before the decision, nothing goes out.
    for act in (
        lambda s: refund_service.approve(s, runtime, a, view_a.request.id, None, "mine"),
        lambda s: refund_service.record_finding(
            s, runtime, a, view_a.request.id, unsupported_device=False
        ),
        lambda s: refund_service.refuse(s, a, view_b.request.id, "theirs"),
    ):
        with pytest.raises(NotAnAdministrator):
            async with unit_of_work(runtime.sessionmaker) as session:
                await act(session)
    async with unit_of_work(runtime.sessionmaker) as session:
        assert [v.request.status for v in await refund_service.queue(session)] == [
            RefundStatus.queued,
            RefundStatus.queued,
        ]
        assert (await admin_audit.search(session)).total == 0
        approved = await refund_service.approve(
            session, runtime, admin, view_a.request.id, 300, "Partly worked."
        )
        refused = await refund_service.refuse(
            session, CliOperator("root"), view_b.request.id, "Works fine."
        )
        trail = {e.action.action: e for e in (await admin_audit.search(session)).items}
    assert approved.order.refunded_minor == 300
    assert refused.request.decided_by is None  # the command line has no account
    approval = trail["refund.approve"]
    assert (approval.action.admin_id, approval.action.reason) == (admin.id, "Partly worked.")
    assert approval.detail == {"amount_minor": 300, "currency": approved.order.currency}
    refusal = trail["refund.refuse"]
    assert (refusal.action.target_id, refusal.detail["via"]) == (str(view_b.request.id), "cli")
