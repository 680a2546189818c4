"""Factories: rows the way the services would make them, without going through the API."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    AgeAttestation,
    Plan,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
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
) -> Account:
    account = Account(
        email=email or unique_email(),
        password_hash=_DEFAULT_HASH if password == DEFAULT_PASSWORD else hash_password(password),
        is_admin=admin,
        status=status,
        email_verified_at=utcnow() if verified else None,
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
            account_id=account.id, token_hash=hash_token(token), expires_at=utcnow() + expires_in
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
) -> Subscription:
    plan = await get_plan(session, plan_code)
    now = utcnow()
    sub = Subscription(
        account_id=account.id,
        plan_id=plan.id,
        status=status,
        current_period_start=now,
        current_period_end=period_end or now + timedelta(days=30),
    )
    session.add(sub)
    await session.flush()
    return sub
