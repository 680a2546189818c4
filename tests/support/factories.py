"""Factories: rows the way the services would make them, without going through the API."""

from __future__ import annotations

import base64
import itertools
from datetime import datetime, timedelta

import pyotp
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import billing as billing_service
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    AgeAttestation,
    Device,
    Node,
    NodeStatus,
    Order,
    OrderKind,
    OrderStatus,
    PaymentMethod,
    Plan,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.security import hash_password, hash_token, new_token

_counter = itertools.count(1)
DEFAULT_PASSWORD = "correct horse battery"

# argon2 is slow on purpose; tests reuse one hash for the default password.
_DEFAULT_HASH = hash_password(DEFAULT_PASSWORD)


def unique_email(prefix: str = "customer") -> str:
    return f"{prefix}{next(_counter)}@example.com"


async def create_account(
    session: AsyncSession,
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    admin: bool = False,
    verified: bool = True,
    status: AccountStatus = AccountStatus.active,
    totp: bool | None = None,
) -> Account:
    """``totp`` (two-factor sign-in on) defaults to ``admin``: administrators need it to
    administer, through the panel and the API alike."""
    if totp is None:
        totp = admin
    account = Account(
        email=email or unique_email(),
        password_hash=_DEFAULT_HASH if password == DEFAULT_PASSWORD else hash_password(password),
        is_admin=admin,
        status=status,
        email_verified_at=utcnow() if verified else None,
        totp_enabled=totp,
        totp_secret=pyotp.random_base32() if totp else None,
        age_attestation=AgeAttestation.adult,
        terms_version_accepted="2026-11",
        terms_accepted_at=utcnow(),
    )
    session.add(account)
    await session.flush()
    return account


async def create_session_token(
    session: AsyncSession, account: Account, *, expires_in: timedelta = timedelta(days=1)
) -> str:
    token = new_token()
    session.add(
        AccountSession(
            account_id=account.id,
            token_hash=hash_token(token),
            expires_at=utcnow() + expires_in,
            # As if signed in with the code, when the account has two-factor sign-in on.
            second_factor_at=utcnow() if account.totp_enabled else None,
        )
    )
    await session.flush()
    return token


async def get_plan(session: AsyncSession, code: str) -> Plan:
    plan = (await session.execute(select(Plan).where(Plan.code == code))).scalar_one()
    return plan


async def create_subscription(
    session: AsyncSession,
    account: Account,
    *,
    plan_code: str = "personal-monthly",
    status: SubscriptionStatus = SubscriptionStatus.active,
    period_end: datetime | None = None,
    stripe_id: str | None = None,
) -> Subscription:
    """A subscription paid here; with ``stripe_id``, one Stripe renews by itself."""
    plan = await get_plan(session, plan_code)
    now = utcnow()
    sub = Subscription(
        account_id=account.id,
        plan_id=plan.id,
        status=status,
        current_period_start=now,
        current_period_end=period_end or now + timedelta(days=30),
    )
    if stripe_id is not None:
        sub.provider, sub.provider_subscription_id = "stripe", stripe_id
    session.add(sub)
    await session.flush()
    return sub


async def create_order(
    session: AsyncSession,
    account: Account,
    *,
    plan_code: str = "personal-monthly",
    provider: str = "manual",
    provider_order_id: str | None = None,
) -> Order:
    """A first order for ``plan_code``, paid by card just now: the order row alone (no payment,
    no subscription), for tests that read orders rather than pay them."""
    plan = await get_plan(session, plan_code)
    order = Order(
        account_id=account.id,
        plan_id=plan.id,
        kind=OrderKind.first,
        amount_minor=plan.price_minor,
        currency=plan.currency,
        payment_method=PaymentMethod.card,
        status=OrderStatus.paid,
        period_months=plan.period_months,
        paid_at=utcnow(),
        provider=provider,
        provider_order_id=provider_order_id,
    )
    session.add(order)
    await session.flush()
    return order


async def create_paid_order(
    session: AsyncSession,
    runtime: Runtime,
    account: Account,
    reference: str,
    *,
    plan_code: str = "personal-monthly",
    method: PaymentMethod = PaymentMethod.card,
    fingerprint: str | None = None,
    paid_at: datetime | None = None,
) -> Order:
    """An order for ``plan_code`` paid in full by hand (provider "manual", payment id
    ``reference``), recorded by the billing service; ``paid_at`` backdates the payment."""
    plan = await get_plan(session, plan_code)
    recorded = await billing_service.record_payment(
        session,
        runtime,
        account,
        plan,
        plan.price_minor,
        plan.currency,
        method,
        "manual",
        reference,
        fingerprint,
    )
    if paid_at is not None:
        recorded.order.paid_at = paid_at
        await session.flush()
    return recorded.order


async def create_node(
    session: AsyncSession,
    *,
    name: str | None = None,
    endpoint_host: str = "vpn.example.net",
    endpoint_port: int = 51820,
    status: NodeStatus = NodeStatus.active,
    wg_public_key: str | None = "",
    capacity: int = 1000,
    ikev2_host: str | None = None,
    ikev2_ca: str | None = None,
) -> Node:
    """A node as it is after enrollment (``wg_public_key=""`` makes a fresh key; None: none).

    ``ikev2_host`` and ``ikev2_ca``: as if its agent had announced IKEv2 (both, or neither).
    """
    if wg_public_key == "":
        raw = X25519PrivateKey.generate().public_key().public_bytes_raw()
        wg_public_key = base64.b64encode(raw).decode()
    now = utcnow()
    node = Node(
        name=name or f"node-{next(_counter)}",
        country="nl",
        city="Amsterdam",
        endpoint_host=endpoint_host,
        endpoint_port=endpoint_port,
        capacity=capacity,
        status=status,
        wg_public_key=wg_public_key,
        enrolled_at=now if wg_public_key else None,
        retired_at=now if status == NodeStatus.retired else None,
        ikev2_host=ikev2_host,
        ikev2_ca=ikev2_ca,
    )
    session.add(node)
    await session.flush()
    return node


def new_public_key() -> str:
    """A fresh WireGuard public key (base64 of an X25519 public key)."""
    return base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


# Factory devices take addresses far above what the allocator hands out first.
_device_index = itertools.count(3_000_000)


async def create_device(
    session: AsyncSession,
    account: Account,
    *,
    name: str = "Laptop",
    public_key: str | None = None,
) -> Device:
    """A device row as the devices service stores it (addresses from the default pools)."""
    index = next(_device_index)
    device = Device(
        account_id=account.id,
        name=name,
        public_key=public_key or new_public_key(),
        ipv4=f"10.{64 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}",
        ipv6=f"fd42:b0::{index >> 16:x}:{index & 0xFFFF:x}",
        address_index=index,
    )
    session.add(device)
    await session.flush()
    return device
