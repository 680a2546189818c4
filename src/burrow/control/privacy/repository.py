"""All SQL of the privacy center: consents, privacy requests, and what erasure changes.

Reads for the export go through the domains' own repositories and services; this module holds
what only the privacy center does: the consent history, the requests, and the deletes and
updates of erasure, each scoped to one account (``account_id == ...``) so that an erasure
cannot touch anyone else's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CursorResult,
    Select,
    case,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import compare_and_set, lock_row
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    BillingDetails,
    ConnectionRecord,
    Consent,
    EmailVerification,
    Order,
    PasswordReset,
    Payment,
    PrivacyRequest,
    PrivacyRequestStatus,
    RecoveryCode,
    RefundedPerson,
    RefundRequest,
    TermsAcceptance,
    UsageCounter,
    WebhookEvent,
)


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PrivacyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- consents ---------------------------------------------------------------------------

    async def consents_of(self, account_id: int) -> Sequence[Consent]:
        """The full history, oldest first (the newest row per purpose is the current state)."""
        query = (
            select(Consent).where(Consent.account_id == account_id).order_by(Consent.at, Consent.id)
        )
        return (await self.session.scalars(query)).all()

    async def add_consent(self, consent: Consent) -> None:
        self.session.add(consent)
        await self.session.flush()

    # --- privacy requests -------------------------------------------------------------------

    @staticmethod
    def _requests_of(account_id: int) -> Select[PrivacyRequest]:
        return select(PrivacyRequest).where(PrivacyRequest.account_id == account_id)

    async def requests_of(self, account_id: int) -> Sequence[PrivacyRequest]:
        query = self._requests_of(account_id).order_by(
            PrivacyRequest.received_at.desc(), PrivacyRequest.id.desc()
        )
        return (await self.session.scalars(query)).all()

    async def lock_account(self, account_id: int) -> None:
        """The account's requests are counted and opened one unit of work at a time."""
        await lock_row(self.session, Account, account_id)

    async def pending_count(self, account_id: int) -> int:
        query = self._requests_of(account_id).where(
            PrivacyRequest.status == PrivacyRequestStatus.pending
        )
        count = await self.session.scalar(query.with_only_columns(func.count(PrivacyRequest.id)))
        return int(count or 0)

    async def add_request(self, request: PrivacyRequest) -> PrivacyRequest:
        self.session.add(request)
        await self.session.flush()
        return request

    async def get_request(self, request_id: int) -> PrivacyRequest | None:
        return await self.session.get(PrivacyRequest, request_id)

    async def close_pending(self, request: PrivacyRequest, values: dict[str, Any]) -> bool:
        """Close ``request`` only if it is still pending; False (and ``request`` reloaded with
        what was decided) when another unit of work closed it first."""
        pending = PrivacyRequest.status == PrivacyRequestStatus.pending
        return await compare_and_set(self.session, request, pending, values)

    async def queue(self, limit: int) -> Sequence[tuple[PrivacyRequest, str | None]]:
        """Pending first (nearest deadline first), then the rest newest first; with emails."""
        pending_first = case((PrivacyRequest.status == PrivacyRequestStatus.pending, 0), else_=1)
        query = (
            select(PrivacyRequest, Account.email)
            .outerjoin(Account, Account.id == PrivacyRequest.account_id)
            .order_by(
                pending_first,
                case(
                    (PrivacyRequest.status == PrivacyRequestStatus.pending, PrivacyRequest.due_at),
                    else_=None,
                ),
                PrivacyRequest.received_at.desc(),
                PrivacyRequest.id.desc(),
            )
            .limit(limit)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(query)).all()]

    # --- erasure: one account's personal rows -----------------------------------------------

    async def erase_owned_rows(self, account_id: int) -> dict[str, int]:
        """Delete the account's rows that exist only for the person; returns counts per table."""
        counts: dict[str, int] = {}
        for model in (
            AccountSession,
            EmailVerification,
            PasswordReset,
            RecoveryCode,
            BillingDetails,
            Consent,
            TermsAcceptance,
            ConnectionRecord,
            UsageCounter,
        ):
            result = await self.session.execute(delete(model).where(model.account_id == account_id))
            counts[model.__tablename__] = _count(result)
        return counts

    async def anonymise_money(self, account_id: int) -> None:
        """Orders stay as they are (amounts, dates, method, provider ids); the customer's own
        words and the card's fingerprint go."""
        await self.session.execute(
            update(RefundRequest)
            .where(RefundRequest.account_id == account_id)
            .values(reason="")
            .execution_options(synchronize_session=False)
        )
        owned_orders = select(Order.id).where(Order.account_id == account_id)
        await self.session.execute(
            update(Payment)
            .where(Payment.order_id.in_(owned_orders))
            .values(fingerprint=None)
            .execution_options(synchronize_session=False)
        )

    async def close_requests(self, account_id: int, now: datetime, outcome: str) -> None:
        """The account's requests lose their link to it and their words; pending ones close."""
        owned = PrivacyRequest.account_id == account_id
        await self.session.execute(
            update(PrivacyRequest)
            .where(owned, PrivacyRequest.status == PrivacyRequestStatus.pending)
            .values(status=PrivacyRequestStatus.done, completed_at=now, outcome=outcome)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(PrivacyRequest)
            .where(owned)
            .values(account_id=None, details="")
            .execution_options(synchronize_session=False)
        )

    async def scrub_webhook_payloads(self, email: str) -> int:
        """Stored provider events that name the address (a Stripe customer's email) lose their
        payload once handled; an event still waiting to be handled keeps it until then."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(WebhookEvent)
            .where(
                WebhookEvent.processed_at.is_not(None),
                func.lower(WebhookEvent.payload).like(_like_pattern(email.lower()), escape="\\"),
            )
            .values(payload='{"erased": true}')
            .execution_options(synchronize_session=False)
        )
        return _count(result)

    # --- timed work -------------------------------------------------------------------------

    async def delete_erased_orders_before(self, before: datetime) -> int:
        """Orders of erased accounts made before ``before`` (their payments, refunds and rule
        outcomes go with them by cascade)."""
        erased = select(Account.id).where(Account.status == AccountStatus.erased)
        result = await self.session.execute(
            delete(Order).where(Order.account_id.in_(erased), Order.created_at < before)
        )
        return _count(result)

    async def delete_empty_erased_accounts(self) -> int:
        """Erased accounts with no order left are only an empty shell: delete them."""
        has_orders = exists().where(Order.account_id == Account.id)
        result = await self.session.execute(
            delete(Account).where(Account.status == AccountStatus.erased, ~has_orders)
        )
        return _count(result)

    async def delete_detached_requests_before(self, before: datetime) -> int:
        """Records of requests whose account was erased, once their time is up."""
        result = await self.session.execute(
            delete(PrivacyRequest).where(
                PrivacyRequest.account_id.is_(None), PrivacyRequest.received_at < before
            )
        )
        return _count(result)

    async def delete_refunded_persons_before(self, before: datetime) -> int:
        """Refunded persons' digests kept since before ``before`` (the invoice retention)."""
        result = await self.session.execute(
            delete(RefundedPerson).where(RefundedPerson.created_at < before)
        )
        return _count(result)

    async def clear_login_ips(self, before: datetime | None) -> int:
        """Forget last-login addresses recorded before ``before`` (None: every one)."""
        condition = Account.last_login_ip.is_not(None) | Account.last_login_ip_at.is_not(None)
        query = update(Account).where(condition)
        if before is not None:
            query = query.where(
                Account.last_login_ip_at.is_(None) | (Account.last_login_ip_at < before)
            )
        result = await self.session.execute(
            query.values(last_login_ip=None, last_login_ip_at=None).execution_options(
                synchronize_session=False
            )
        )
        return _count(result)
