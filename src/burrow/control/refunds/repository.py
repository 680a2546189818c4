"""All SQL of refunds. A customer's requests are only ever read through ``_of``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import compare_and_set, lock_row
from burrow.control.models import (
    Account,
    Order,
    Payment,
    RefundedPerson,
    RefundedPersonKind,
    RefundRequest,
    RefundRuleOutcome,
    RefundStatus,
    UsageCounter,
)

# A request that still stands: a second one on the same order is refused.
STANDING_STATUSES = frozenset(
    {
        RefundStatus.evaluating,
        RefundStatus.queued,
        RefundStatus.approved,
        RefundStatus.executed,
    }
)
# Money granted back: what the one-refund-per-person rule looks for.
GRANTED_STATUSES = frozenset({RefundStatus.approved, RefundStatus.executed})


class RefundRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _of(account_id: int) -> Select[RefundRequest]:
        """Tenant scoping: every read of a customer's requests starts here."""
        return select(RefundRequest).where(RefundRequest.account_id == account_id)

    async def requests_of(self, account_id: int) -> Sequence[RefundRequest]:
        query = self._of(account_id).order_by(RefundRequest.id.desc())
        return (await self.session.scalars(query)).all()

    async def get(self, request_id: int) -> RefundRequest | None:
        return await self.session.get(RefundRequest, request_id)

    async def transition(
        self, request: RefundRequest, expected: RefundStatus, **values: Any
    ) -> bool:
        """Compare-and-set: write ``values`` only while the request is still ``expected``, as
        the database sees it at the write (not as this session read it). False when another
        decision got there first. ``request`` is reloaded either way."""
        await self.session.flush()
        return await compare_and_set(
            self.session, request, RefundRequest.status == expected, values
        )

    async def decided_by(self, request: RefundRequest) -> tuple[str | None, datetime | None]:
        """The email of the administrator who decided ``request`` (None: the policy's rules
        decided it) and when."""
        email = None
        if request.decided_by is not None:
            email = await self.session.scalar(
                select(Account.email).where(Account.id == request.decided_by)
            )
        return email, request.decided_at

    async def standing_for(self, order_id: int) -> RefundRequest | None:
        query = select(RefundRequest).where(
            RefundRequest.order_id == order_id, RefundRequest.status.in_(STANDING_STATUSES)
        )
        return await self.session.scalar(query.limit(1))

    async def queued(self) -> Sequence[RefundRequest]:
        """Waiting for a person, the nearest deadline (or the most overdue) first."""
        query = (
            select(RefundRequest)
            .where(RefundRequest.status == RefundStatus.queued)
            .order_by(RefundRequest.due_at.is_(None), RefundRequest.due_at, RefundRequest.id)
        )
        return (await self.session.scalars(query)).all()

    async def approved_not_executed(self, limit: int) -> Sequence[int]:
        query = (
            select(RefundRequest.id)
            .where(RefundRequest.status == RefundStatus.approved)
            .order_by(RefundRequest.id)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def outcomes_of(self, request_ids: Sequence[int]) -> Sequence[RefundRuleOutcome]:
        if not request_ids:
            return []
        query = (
            select(RefundRuleOutcome)
            .where(RefundRuleOutcome.refund_request_id.in_(request_ids))
            .order_by(RefundRuleOutcome.id)
        )
        return (await self.session.scalars(query)).all()

    async def replace_outcomes(
        self, request_id: int, outcomes: Sequence[RefundRuleOutcome]
    ) -> None:
        await self.session.execute(
            delete(RefundRuleOutcome).where(RefundRuleOutcome.refund_request_id == request_id)
        )
        self.session.add_all(outcomes)
        await self.session.flush()

    async def lock_order(self, order_id: int) -> None:
        """Requests for one order are checked and stored one unit of work at a time."""
        await lock_row(self.session, Order, order_id)

    async def add_open(self, request: RefundRequest) -> bool:
        """Store a new open request in a savepoint; False when the order has one already (the
        one-open-request-per-order index refused it: another request won the race)."""
        try:
            async with self.session.begin_nested():
                self.session.add(request)
        except IntegrityError:
            return False
        return True

    async def get_account(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def usage_of(self, account_id: int) -> UsageCounter | None:
        query = select(UsageCounter).where(UsageCounter.account_id == account_id)
        return await self.session.scalar(query)

    async def refunded_emails_elsewhere(self, account_id: int, domain: str) -> Sequence[str]:
        """Emails of other accounts at ``domain`` that were granted a refund."""
        query = (
            select(Account.email)
            .join(RefundRequest, RefundRequest.account_id == Account.id)
            .where(
                Account.id != account_id,
                Account.email.endswith(f"@{domain}", autoescape=True),
                RefundRequest.status.in_(GRANTED_STATUSES),
            )
            .distinct()
        )
        return (await self.session.scalars(query)).all()

    async def email_digest_refunded_elsewhere(self, account_id: int, digest: str) -> bool:
        """Whether another account was granted a refund while its address had ``digest``."""
        query = (
            select(RefundRequest.id)
            .where(
                RefundRequest.account_id != account_id,
                RefundRequest.status.in_(GRANTED_STATUSES),
                RefundRequest.email_digest == digest,
            )
            .limit(1)
        )
        return (await self.session.scalar(query)) is not None

    async def fingerprint_refunded_elsewhere(
        self, account_id: int, fingerprints: Sequence[str]
    ) -> bool:
        if not fingerprints:
            return False
        query = (
            select(RefundRequest.id)
            .join(Order, Order.id == RefundRequest.order_id)
            .join(Payment, Payment.order_id == Order.id)
            .where(
                RefundRequest.account_id != account_id,
                RefundRequest.status.in_(GRANTED_STATUSES),
                Payment.fingerprint.in_(fingerprints),
            )
            .limit(1)
        )
        return (await self.session.scalar(query)) is not None

    async def refunded_fingerprints_of(self, account_id: int) -> Sequence[str] | None:
        """Payment fingerprints on the account's orders that were granted a refund; None when
        no refund was ever granted to the account."""
        granted = select(RefundRequest.order_id).where(
            RefundRequest.account_id == account_id, RefundRequest.status.in_(GRANTED_STATUSES)
        )
        if not (await self.session.scalars(granted.limit(1))).first():
            return None
        query = (
            select(Payment.fingerprint)
            .where(Payment.order_id.in_(granted), Payment.fingerprint.is_not(None))
            .distinct()
        )
        return [f for f in (await self.session.scalars(query)).all() if f]

    async def refunded_person_known(self, kind: RefundedPersonKind, digests: Sequence[str]) -> bool:
        if not digests:
            return False
        query = (
            select(RefundedPerson.id)
            .where(RefundedPerson.kind == kind, RefundedPerson.digest.in_(digests))
            .limit(1)
        )
        return (await self.session.scalar(query)) is not None

    async def remember_refunded_person(
        self, kind: RefundedPersonKind, digests: Sequence[str]
    ) -> None:
        """Store the digests not stored yet (a person refunded on two erased accounts has one
        row per digest)."""
        wanted = set(digests)
        if not wanted:
            return
        query = select(RefundedPerson.digest).where(
            RefundedPerson.kind == kind, RefundedPerson.digest.in_(wanted)
        )
        known = set((await self.session.scalars(query)).all())
        for digest in sorted(wanted - known):
            self.session.add(RefundedPerson(kind=kind, digest=digest))
        await self.session.flush()
