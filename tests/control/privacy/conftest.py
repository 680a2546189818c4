"""An account that has a row in every table that can hold one (``metered`` and
``metered_client`` come from tests/control/conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import account as account_service
from burrow.control.audit.service import CliOperator
from burrow.control.credentials.schemas import CredentialCreate
from burrow.control.credentials.service import credential as credential_service
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import (
    AbuseComplaint,
    Account,
    AddressHolding,
    AdminAction,
    Affiliate,
    AffiliateStatus,
    BillingDetails,
    Commission,
    CommissionKind,
    CommissionStatus,
    ConnectionRecord,
    ConsentPurpose,
    Device,
    Order,
    Payment,
    PayoutBatch,
    PayoutBatchStatus,
    PayoutItem,
    PayoutItemStatus,
    PrivacyRequestKind,
    Referral,
    ReferralHow,
    RefundedPerson,
    RefundedPersonKind,
    RefundRequest,
    RefundRuleOutcome,
    RefundStatus,
    SupportTopic,
    SupportVia,
    TrialClaim,
    UsageCounter,
    WebhookEvent,
    utcnow,
)
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest
from burrow.control.support.service import support as support_service
from burrow.control.terms.service import terms as terms_service
from tests.support import factories


@dataclass
class Customer:
    account: Account
    token: str
    email: str
    devices: list[Device]
    order: Order
    payment: Payment
    refund: RefundRequest


async def populate(session: AsyncSession, runtime: Runtime, account: Account) -> Customer:
    """Rows for ``account`` in every table that can hold one, the way the app makes them."""
    now = utcnow()
    await factories.create_node(session)
    token = await factories.create_session_token(session, account)
    await factories.create_subscription(session, account)
    devices = [
        await factories.create_device(session, account, name="Laptop"),
        await factories.create_device(session, account, name="Phone"),
    ]
    # served_peers and peer_changes.
    await desired_state_service.refresh_account(session, runtime, account.id)
    order = await factories.create_order(
        session, account, provider="stripe", provider_order_id="cs_test_1"
    )
    payment = Payment(
        order_id=order.id,
        provider="stripe",
        provider_payment_id=f"pi_{account.id}",
        amount_minor=order.amount_minor,
        currency=order.currency,
        fingerprint="fp_card_of_the_customer",
    )
    refund = RefundRequest(
        order_id=order.id,
        account_id=account.id,
        reason=f"It did not work for me; write to {account.email}",
        status=RefundStatus.refused,
        requested_at=now,
        decided_at=now,
        terms_version=runtime.policy.terms.version,
    )
    session.add_all([payment, refund])
    await session.flush()
    session.add_all(
        [
            RefundRuleOutcome(
                refund_request_id=refund.id,
                rule="window_days",
                passed=False,
                evidence=json.dumps({"days_since_order": 40}),
                message="Asked 40 days after the order; the window is 30 days.",
            ),
            BillingDetails(
                account_id=account.id,
                country="NL",
                city="Utrecht",
                postal_code="3511 AA",
                card_last4="4242",
                name_or_company="Jo Customer",
            ),
            UsageCounter(account_id=account.id, order_id=order.id, bytes_total=123, sessions=2),
            AddressHolding(
                account_id=account.id,
                device_id=devices[0].id,
                device_name=devices[0].name,
                ipv4=devices[0].ipv4,
                ipv6=devices[0].ipv6,
                held_from=now - timedelta(days=2),
            ),
            AbuseComplaint(
                clause="Prohibited activities",
                source="abuse@victim.example",
                egress_ip="203.0.113.6",
                port=1500,
                seen_at=now - timedelta(hours=3),
                account_id=account.id,
                device_id=devices[0].id,
            ),
            ConnectionRecord(
                account_id=account.id,
                device_id=devices[0].id,
                node_name="ams-1",
                node_country="nl",
                node_city="Amsterdam",
                started_at=now - timedelta(hours=2),
                ended_at=now - timedelta(hours=1),
                duration_seconds=3600,
                rx_bytes=1000,
                tx_bytes=2000,
            ),
            TrialClaim(
                email_digest=keyed_digest(
                    runtime.settings.secret_key.get_secret_value(), f"trial:{account.email}"
                )
            ),
            # Another, erased, refunded person's digest: linked to no account.
            RefundedPerson(
                kind=RefundedPersonKind.email,
                digest=keyed_digest(
                    runtime.settings.secret_key.get_secret_value(), "refunded-email:x@example.org"
                ),
            ),
            AdminAction(
                admin_id=None,
                action="account.suspend",
                target_type="account",
                target_id=str(account.id),
                reason="chargeback",
            ),
            WebhookEvent(
                provider="stripe",
                event_id=f"evt_{account.id}",
                type="checkout.session.completed",
                payload=json.dumps({"customer_email": account.email.upper()}),
                processed_at=now,
            ),
        ]
    )
    await session.flush()
    await _affiliate_rows(session, account)
    await terms_service.record_acceptance(
        session, account.id, runtime.policy.terms.version, "signup"
    )
    await privacy_service.set_consents(
        session, runtime, account, {ConsentPurpose.marketing_email: True}
    )
    await privacy_service.open_request(
        session, runtime, account, PrivacyRequestKind.rectification, "My name is spelt wrong."
    )
    # An email change on its way: an email_verifications row for the new address.
    await privacy_service.request_email_change(
        session,
        runtime,
        account,
        new_email=f"new-{account.email}",
        password=factories.DEFAULT_PASSWORD,
    )
    # Getting back in: recovery codes and a password-reset link (rows of their own tables).
    await account_service.new_recovery_codes(session, account)
    await account_service.operator_reset_link(session, runtime, account)
    # A support conversation signed in, answered by support, and one opened signed out
    # from the same address.
    opened = await support_service.open(
        session,
        runtime,
        account=account,
        email=None,
        topic=SupportTopic.billing,
        subject="Invoice",
        body=f"Please send the invoice to {account.email}.",
        via=SupportVia.web,
    )
    await support_service.answer(
        session, runtime, CliOperator("root"), opened.request.id, "Sent.", via=SupportVia.web
    )
    await support_service.open(
        session,
        runtime,
        account=None,
        email=account.email,
        topic=SupportTopic.other,
        subject="Before signing in",
        body="Written signed out.",
        via=SupportVia.web,
    )
    # OpenVPN sign-in for the first device (its secret held only as a digest).
    await credential_service.issue(
        session, runtime, account, devices[0].id, CredentialCreate(protocol="openvpn")
    )
    account.last_login_ip, account.last_login_ip_at = "203.0.113.7", now
    await session.flush()
    return Customer(account, token, account.email, devices, order, payment, refund)


async def _affiliate_rows(session: AsyncSession, account: Account) -> None:
    """The customer came through another affiliate's link, and is an affiliate too: a
    commission on a customer they referred, paid out in a batch."""
    other = await factories.create_account(session)
    referrer = Affiliate(
        account_id=other.id, code=f"o{other.id}", status=AffiliateStatus.approved, clicks=1
    )
    mine = Affiliate(
        account_id=account.id,
        code=f"m{account.id}",
        status=AffiliateStatus.approved,
        contact_name="Jo Customer",
        website="https://jo.example.org/",
        paypal_email=account.email,
        clicks=3,
    )
    session.add_all([referrer, mine])
    await session.flush()
    buyer = await factories.create_account(session)
    bought = await factories.create_order(session, buyer)
    batch = PayoutBatch(
        sender_batch_id=f"burrow-test-{account.id}",
        status=PayoutBatchStatus.done,
        currency="USD",
        total_minor=209,
    )
    session.add_all(
        [
            Referral(account_id=account.id, affiliate_id=referrer.id, how=ReferralHow.link),
            Referral(account_id=buyer.id, affiliate_id=mine.id, how=ReferralHow.code),
            batch,
        ]
    )
    await session.flush()
    item = PayoutItem(
        batch_id=batch.id,
        affiliate_id=mine.id,
        sender_item_id=f"burrow-item-{account.id}",
        amount_minor=209,
        currency="USD",
        receiver=account.email,
        status=PayoutItemStatus.success,
    )
    session.add(item)
    await session.flush()
    session.add(
        Commission(
            affiliate_id=mine.id,
            order_id=bought.id,
            earned_order_id=bought.id,
            kind=CommissionKind.earned,
            status=CommissionStatus.paid,
            amount_minor=209,
            currency="USD",
            payout_minor=209,
            available_at=utcnow(),
            payout_item_id=item.id,
        )
    )
    await session.flush()


@pytest.fixture
async def customer(runtime: Runtime) -> Customer:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await factories.create_account(session)
        return await populate(session, runtime, account)
