"""The privacy center's service on both databases: the export covers every table, erasure
leaves nothing of the person, consents and requests keep their history and deadlines."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import String, Table, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import account as account_service
from burrow.control.db import unit_of_work
from burrow.control.errors import BurrowError
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    AdminAction,
    Base,
    ConsentPurpose,
    Device,
    Order,
    Payment,
    PeerChange,
    PeerChangeOp,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundRequest,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    WebhookEvent,
    utcnow,
)
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.privacy.service import retention_statement
from burrow.control.runtime import Runtime
from tests.control.privacy.conftest import Customer
from tests.support import factories

# Tables the export leaves out, each with the reason. A new table fails the export test until
# it is either exported or listed here.
NOT_EXPORTED = {
    "plans": "the provider's plans, the same for everyone",
    "nodes": "the provider's servers",
    "terms_versions": "the published terms; the account's acceptances are exported",
    "peer_changes": "the desired-state change log nodes read: keys and tunnel addresses only, "
    "pruned; the devices section holds the same",
    "served_peers": "a derived copy of the devices section (what every node must serve)",
    "webhook_events": "a payment provider's messages to the operator, not filed by account; "
    "erasure clears the payloads that name the customer",
    "admin_actions": "the operator's audit trail of administrators; what it changed on the "
    "account (status, reason) is in the account section",
    "trial_claims": "a keyed hash of an address, linked to no account, that cannot be turned "
    "back into the address",
    "password_resets": "hashes of one-time links to set a new password, valid an hour and then "
    "purged: access secrets, nothing the person gave or did",
    "recovery_codes": "hashes of two-factor recovery codes: access secrets; the account section "
    "says whether two-factor sign-in is on",
    "payout_batches": "a PayPal payout to many affiliates at once; the account's own items "
    "are in payout_items",
    "refunded_persons": "keyed hashes of refunded persons' addresses and cards, kept after their "
    "erasure for the one-refund rule, linked to no account",
}
# Export sections named other than their table.
SECTION = {"accounts": "account"}


def _ids(section: Any) -> set[int]:
    rows = section if isinstance(section, list) else [section]
    return {row["id"] for row in rows}


async def _owned_ids(session: AsyncSession, table: Table, account_id: int) -> set[int]:
    """Ids of ``table``'s rows that belong to the account: by ``account_id``, or through a
    foreign key to rows that do (payments through orders)."""
    if table.name == "accounts":
        return {account_id}
    pk = next(iter(table.primary_key.columns))
    if "account_id" in table.c:
        query = select(pk).where(table.c.account_id == account_id)
        return set((await session.scalars(query)).all())
    owned: set[int] = set()
    for fk in table.foreign_keys:
        parent = fk.column.table
        if parent.name == "accounts":
            continue
        parent_ids = await _owned_ids(session, parent, account_id)
        if parent_ids:
            query = select(pk).where(fk.parent.in_(parent_ids))
            owned |= set((await session.scalars(query)).all())
    return owned


async def test_the_export_holds_a_row_of_every_table_the_account_touches(
    runtime: Runtime, customer: Customer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await account_service.get(session, customer.account.id)
        document = json.loads(
            (await privacy_service.export(session, runtime, account)).model_dump_json()
        )
    tables = [t.name for t in Base.metadata.sorted_tables]
    assert set(NOT_EXPORTED) <= set(tables), "a table listed as not exported no longer exists"
    async with unit_of_work(runtime.sessionmaker) as session:
        for table in Base.metadata.sorted_tables:
            # Every table has rows in this deployment, so nothing is checked against nothing.
            count = await session.scalar(select(func.count()).select_from(table))
            assert count, f"the test made no row in {table.name}"
            if table.name in NOT_EXPORTED:
                continue
            section = SECTION.get(table.name, table.name)
            assert section in document, (
                f"table {table.name} is neither exported nor listed in NOT_EXPORTED with a reason"
            )
            owned = await _owned_ids(session, table, customer.account.id)
            assert owned, f"the test made no row of the account in {table.name}"
            assert owned <= _ids(document[section]), f"{table.name}: rows missing from the export"


async def test_the_export_says_what_it_holds_without_secrets(
    runtime: Runtime, customer: Customer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await account_service.get(session, customer.account.id)
        account.totp_secret, account.totp_enabled = "JBSWY3DPEHPK3PXP", True
        export = await privacy_service.export(session, runtime, account)
        text = export.model_dump_json()
        hashes = [account.password_hash] + [
            row.token_hash
            for row in (
                await session.scalars(
                    select(AccountSession).where(AccountSession.account_id == account.id)
                )
            ).all()
        ]
    assert export.account.two_factor_enabled is True
    for secret in ("JBSWY3DPEHPK3PXP", "token_hash", "password_hash", *hashes):
        assert secret not in text
    assert "PrivateKey" not in text
    assert "private_key" not in text
    assert export.account.last_login_ip == "203.0.113.7"
    assert [r.refund_request_id for r in export.refund_rule_outcomes] == [customer.refund.id]
    assert export.refund_rule_outcomes[0].evidence == {"days_since_order": 40}
    assert {d.name for d in export.devices} == {"Laptop", "Phone"}
    assert export.email_verifications[-1].email == f"new-{customer.email}"
    assert any("IP address" in s for s in export.what_is_recorded)
    # Downloading it is an access request, answered at once.
    assert export.privacy_requests[0].kind is PrivacyRequestKind.access
    assert export.privacy_requests[0].status is PrivacyRequestStatus.done


# Erasure.


async def _text_holding(session: AsyncSession, needle: str) -> list[str]:
    """Every (table.column row) whose text contains ``needle``, case-insensitively."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.c:
            if not isinstance(column.type, String | Text):
                continue
            query = select(column).where(func.lower(column).contains(needle.lower()))
            for value in (await session.scalars(query)).all():
                found.append(f"{table.name}.{column.name}: {value}")
    return found


async def test_erasure_leaves_no_trace_of_the_email_and_ends_access(
    runtime: Runtime, customer: Customer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await _text_holding(session, customer.email)  # the check can find it
        served = (
            await session.scalars(
                select(ServedPeer.public_key).where(ServedPeer.account_id == customer.account.id)
            )
        ).all()
        assert sorted(served) == sorted(d.public_key for d in customer.devices)
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await account_service.get(session, customer.account.id)
        erased = await privacy_service.erase(
            session, runtime, account, password=factories.DEFAULT_PASSWORD
        )
    assert erased.request.kind is PrivacyRequestKind.erasure
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await _text_holding(session, customer.email) == []
        assert await _text_holding(session, "Jo Customer") == []
        assert await _text_holding(session, "203.0.113.7") == []
        account = await account_service.get(session, customer.account.id)
        assert account.status is AccountStatus.erased
        assert account.erased_at is not None
        assert account.email == f"erased-{account.id}@erased.invalid"
        assert account.totp_secret is None
        assert account.last_login_ip is None
        # Access is gone: no session, no device, nothing served, the subscription ended.
        for model in (AccountSession, Device, ServedPeer):
            count = await session.scalar(
                select(func.count()).select_from(model).where(model.account_id == account.id)
            )
            assert count == 0, model.__tablename__
        removed = (
            await session.scalars(
                select(PeerChange.public_key).where(PeerChange.op == PeerChangeOp.remove)
            )
        ).all()
        assert {d.public_key for d in customer.devices} <= set(removed)
        subscription = await session.scalar(
            select(Subscription).where(Subscription.account_id == account.id)
        )
        assert subscription is not None
        assert subscription.status is SubscriptionStatus.canceled
        assert subscription.ended_at is not None
        # Invoices are kept, anonymised.
        order = await session.get(Order, customer.order.id)
        payment = await session.get(Payment, customer.payment.id)
        refund = await session.get(RefundRequest, customer.refund.id)
        assert order is not None
        assert order.amount_minor == customer.order.amount_minor
        assert order.provider_order_id == "cs_test_1"
        assert payment is not None
        assert payment.fingerprint is None
        assert payment.provider_payment_id == customer.payment.provider_payment_id
        assert refund is not None
        assert refund.reason == ""
        # The record of the erasure names no one; the customer's own request went with them.
        requests = (await session.scalars(select(PrivacyRequest))).all()
        assert all(r.account_id is None and r.details == "" for r in requests)
        assert {(r.kind, r.status) for r in requests} >= {
            (PrivacyRequestKind.erasure, PrivacyRequestStatus.done),
            (PrivacyRequestKind.rectification, PrivacyRequestStatus.done),
        }
        payload = await session.scalar(select(WebhookEvent.payload))
        assert payload == '{"erased": true}'
    # Signing in with the old address fails like an unknown one.
    with pytest.raises(BurrowError) as refused:
        async with unit_of_work(runtime.sessionmaker) as session:
            await account_service.sign_in(
                session, runtime, email=customer.email, password=factories.DEFAULT_PASSWORD
            )
    assert refused.value.status == 401


async def test_erasure_needs_the_password_and_the_second_factor(
    runtime: Runtime, session: AsyncSession
) -> None:
    import pyotp

    account = await factories.create_account(session)
    account.totp_secret = pyotp.random_base32()
    account.totp_enabled = True
    with pytest.raises(BurrowError) as wrong:
        await privacy_service.erase(session, runtime, account, password="not the password")
    assert (wrong.value.status, wrong.value.field) == (422, "password")
    with pytest.raises(BurrowError) as no_code:
        await privacy_service.erase(session, runtime, account, password=factories.DEFAULT_PASSWORD)
    assert (no_code.value.status, no_code.value.field) == (401, "totp_code")
    assert account.status is AccountStatus.active
    code = pyotp.TOTP(account.totp_secret).now()
    await privacy_service.erase(
        session, runtime, account, password=factories.DEFAULT_PASSWORD, totp_code=code
    )
    assert account.status is AccountStatus.erased


async def test_invoices_are_purged_after_the_retention_then_the_account(
    runtime: Runtime, customer: Customer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await account_service.get(session, customer.account.id)
        await privacy_service.erase(session, runtime, account, password=factories.DEFAULT_PASSWORD)
        assert await privacy_service.purge_expired_invoices(session, runtime) == 0
    years = runtime.policy.privacy.invoice_retention_years
    async with unit_of_work(runtime.sessionmaker) as session:
        order = await session.get(Order, customer.order.id)
        assert order is not None
        order.created_at = utcnow() - timedelta(days=365 * years + 3)
        # Someone else's old order is not touched.
        other = await factories.create_account(session)
        kept = Order(**{c: getattr(order, c) for c in ("plan_id", "kind", "amount_minor")})
        kept.account_id, kept.currency, kept.payment_method = other.id, "USD", "card"
        kept.status, kept.period_months, kept.provider = "paid", 1, "manual"
        kept.created_at = order.created_at
        session.add(kept)
        for request in (await session.scalars(select(PrivacyRequest))).all():
            request.received_at = order.created_at
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await privacy_service.purge_expired_invoices(session, runtime) == 1
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await session.get(Order, customer.order.id) is None
        assert await session.get(Payment, customer.payment.id) is None
        assert await session.get(Account, customer.account.id) is None
        assert await session.get(Order, kept.id) is not None
        assert await session.scalar(select(func.count()).select_from(PrivacyRequest)) == 0
        # The admin trail outlives the account (it names the number only).
        assert await session.scalar(select(func.count()).select_from(AdminAction)) == 1


def test_the_retention_statement_says_what_is_kept_and_how_long(runtime: Runtime) -> None:
    statements = retention_statement(runtime.policy)
    years = runtime.policy.privacy.invoice_retention_years
    assert any(f"Kept for {years} years from the date of each order" in s for s in statements)
    assert any("keyed hash of your email address" in s for s in statements)  # trial offered
    assert any("the address of your last sign-in" in s for s in statements)  # kept by strict
    # Strict has no one-refund-per-person rule, so no refunded person's digest is kept.
    assert not any("one-refund-per-person" in s for s in statements)


def test_the_retention_statement_names_the_refunded_persons_digests(metered: Runtime) -> None:
    statements = retention_statement(metered.policy)
    years = metered.policy.privacy.invoice_retention_years
    assert metered.policy.refunds is not None
    assert metered.policy.refunds.one_per_person
    assert [s for s in statements if "one-refund-per-person" in s] == [
        f"Kept for {years} years, only if you were given a refund: a keyed hash of your email "
        "address and of the card fingerprints of the refunded orders, so that the "
        "one-refund-per-person rule still applies to a new account. It cannot be turned back "
        "into your address or card and is linked to nothing else."
    ]


# Consents and requests.


async def test_consents_keep_their_history_and_a_withdrawal_is_recorded(
    runtime: Runtime, session: AsyncSession
) -> None:
    account = await factories.create_account(session)
    states = await privacy_service.consents(session, account)
    assert [(s.purpose, s.granted, s.changed_at) for s in states] == [
        (ConsentPurpose.marketing_email, False, None),
        (ConsentPurpose.product_analytics, False, None),
    ]
    await privacy_service.set_consents(
        session, runtime, account, {ConsentPurpose.marketing_email: True}
    )
    # Saying the same again changes nothing and adds no row.
    await privacy_service.set_consents(
        session, runtime, account, {ConsentPurpose.marketing_email: True}
    )
    states = await privacy_service.set_consents(
        session,
        runtime,
        account,
        {ConsentPurpose.marketing_email: False, ConsentPurpose.product_analytics: True},
    )
    assert {s.purpose: s.granted for s in states} == {
        ConsentPurpose.marketing_email: False,
        ConsentPurpose.product_analytics: True,
    }
    export = await privacy_service.export(session, runtime, account)
    assert [(c.purpose, c.granted) for c in export.consents] == [
        (ConsentPurpose.marketing_email, True),
        (ConsentPurpose.marketing_email, False),
        (ConsentPurpose.product_analytics, True),
    ]
    kinds = [(r.kind, r.status) for r in await privacy_service.own_requests(session, account)]
    assert (PrivacyRequestKind.objection, PrivacyRequestStatus.done) in kinds


async def test_requests_wait_for_a_person_by_their_legal_deadline(
    runtime: Runtime, session: AsyncSession
) -> None:
    customer = await factories.create_account(session)
    admin = await factories.create_account(session, admin=True)
    first = await privacy_service.open_request(
        session, runtime, customer, PrivacyRequestKind.restriction, "Stop using my data for X."
    )
    days = runtime.policy.privacy.request_response_days
    assert first.status is PrivacyRequestStatus.pending
    assert abs((first.due_at - first.received_at) - timedelta(days=days)) < timedelta(seconds=1)
    second = await privacy_service.open_request(
        session, runtime, customer, PrivacyRequestKind.objection, "I object to Y."
    )
    second.due_at = first.due_at - timedelta(days=1)  # nearer deadline, listed first
    await session.flush()
    queue = await privacy_service.queue(session)
    assert [q.request.id for q in queue][:2] == [second.id, first.id]
    assert queue[0].account_email == customer.email
    left = queue[1].seconds_left(utcnow())
    assert left is not None
    assert days * 86400 - 60 < left <= days * 86400

    resolved = await privacy_service.resolve(
        session, runtime, admin, first.id, PrivacyRequestStatus.done, "Processing X stopped."
    )
    assert resolved.request.status is PrivacyRequestStatus.done
    assert resolved.request.handled_by == admin.id
    assert resolved.seconds_left(utcnow()) is None
    action = await session.scalar(select(AdminAction).where(AdminAction.admin_id == admin.id))
    assert action is not None
    assert (action.action, action.target_id) == ("privacy_request.resolve", str(first.id))
    with pytest.raises(BurrowError) as again:
        await privacy_service.resolve(
            session, runtime, admin, first.id, PrivacyRequestStatus.refused, "no"
        )
    assert again.value.status == 409
    # Now pending first, then the answered one.
    queue = await privacy_service.queue(session)
    assert [q.request.id for q in queue][:2] == [second.id, first.id]


async def test_a_customer_can_have_only_a_few_requests_waiting(
    runtime: Runtime, session: AsyncSession
) -> None:
    account = await factories.create_account(session)
    for number in range(5):
        await privacy_service.open_request(
            session, runtime, account, PrivacyRequestKind.access, f"copy of letter {number}"
        )
    with pytest.raises(BurrowError) as refused:
        await privacy_service.open_request(
            session, runtime, account, PrivacyRequestKind.access, "one more"
        )
    assert refused.value.status == 409
