"""The program itself: applications and decisions, attribution, commissions that follow
orders and refunds, the program's rules on a schedule, the pages' readings, and privacy.

The inactivity notice's text is ``emails/inactive.txt`` (first line the subject).
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates import rules
from burrow.control.affiliates.repository import AffiliateRepository
from burrow.control.affiliates.schemas import AffiliateApply
from burrow.control.affiliates.service.common import (
    REFERRAL_PATH,
    _email_digest,
    _section_or_none,
    section,
)
from burrow.control.affiliates.service.errors import (
    AffiliateNotFound,
    AlreadyApplied,
    CommissionNotFound,
    DecisionNotAllowed,
    NotAnAffiliate,
    ReviewNotAllowed,
    WebsiteRequired,
)
from burrow.control.audit.service import Actor, admin_audit
from burrow.control.db import after_commit, compare_and_set, lock_row, unit_of_work
from burrow.control.models import (
    Account,
    Affiliate,
    AffiliateStatus,
    Commission,
    CommissionKind,
    CommissionStatus,
    Order,
    OrderStatus,
    Payment,
    PayoutBatch,
    PayoutItem,
    Referral,
    ReferralHow,
    utcnow,
)
from burrow.control.policy.schemas import AffiliatesSection
from burrow.control.runtime import Runtime

log = logging.getLogger(__name__)


# Which status a decision moves from, and to.
_DECISIONS: dict[str, tuple[frozenset[AffiliateStatus], AffiliateStatus]] = {
    # A denial is final (one application per account); a suspension can be lifted.
    "approve": (
        frozenset({AffiliateStatus.applied, AffiliateStatus.suspended}),
        AffiliateStatus.approved,
    ),
    "deny": (frozenset({AffiliateStatus.applied}), AffiliateStatus.denied),
    "suspend": (frozenset({AffiliateStatus.approved}), AffiliateStatus.suspended),
    "terminate": (
        frozenset(
            {
                AffiliateStatus.applied,
                AffiliateStatus.approved,
                AffiliateStatus.suspended,
                AffiliateStatus.denied,
            }
        ),
        AffiliateStatus.terminated,
    ),
}


@dataclass(frozen=True)
class Dashboard:
    affiliate: Affiliate
    link: str
    signups: int
    paid_orders: int
    balance_minor: int
    currency: str
    by_status: dict[str, int]
    commissions: list[Commission]
    payouts: list[PayoutItem]
    # (month "YYYY-MM", commission earned in the payout currency) oldest first, for the chart
    by_month: list[tuple[str, int]]


@dataclass(frozen=True)
class AffiliateData:
    """What the affiliate program holds about one account."""

    affiliate: Affiliate | None
    referral: Referral | None
    commissions: list[Commission]
    payout_items: list[PayoutItem]


@dataclass(frozen=True)
class AffiliateRow:
    affiliate: Affiliate
    balance_minor: int
    refund_rate: rules.RefundRate


class ProgramService:
    # --- applying and deciding ---------------------------------------------------------------

    async def apply(
        self, session: AsyncSession, runtime: Runtime, account: Account, data: AffiliateApply
    ) -> Affiliate:
        """A customer applies with contact details and the promotional site; an
        administrator decides."""
        program = section(runtime)
        if program.requires_website and data.website is None:
            raise WebsiteRequired()
        repository = AffiliateRepository(session)
        known = await repository.of_account(account.id)
        if known is not None:
            raise AlreadyApplied(known.status)
        now = utcnow()
        affiliate = Affiliate(
            account_id=account.id,
            code=secrets.token_urlsafe(6).replace("-", "x").replace("_", "y"),
            status=AffiliateStatus.applied,
            contact_name=data.contact_name.strip(),
            website=str(data.website) if data.website is not None else None,
            paypal_email=str(data.paypal_email),
            email_digest=_email_digest(runtime, account.email),
            paypal_digest=_email_digest(runtime, str(data.paypal_email)),
            clicks=0,
            last_active_at=now,
            created_at=now,
        )
        try:
            async with session.begin_nested():
                await repository.add(affiliate)
        except IntegrityError as exc:  # the same account applied a moment ago
            raise AlreadyApplied(AffiliateStatus.applied) from exc
        log.info("affiliate.applied affiliate_id=%s", affiliate.id)
        return affiliate

    async def decide(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        affiliate_id: int,
        decision: str,
        reason: str,
    ) -> Affiliate:
        """Approve, deny, suspend or terminate, with the reason, once: two administrators
        deciding at once leave one decision and one ``DecisionNotAllowed``."""
        repository = AffiliateRepository(session)
        affiliate = await repository.get(affiliate_id)
        if affiliate is None:
            raise AffiliateNotFound(affiliate_id)
        await self._set_status(session, runtime, affiliate, decision, reason)
        await admin_audit.record(
            session,
            actor,
            f"affiliate.{decision}",
            "affiliate",
            affiliate.id,
            reason,
            {"status": affiliate.status},
        )
        return affiliate

    async def _set_status(
        self,
        session: AsyncSession,
        runtime: Runtime,
        affiliate: Affiliate,
        decision: str,
        reason: str,
    ) -> None:
        sources, target = _DECISIONS[decision]
        if affiliate.status not in sources:
            raise DecisionNotAllowed(affiliate.id, affiliate.status, decision)
        now = utcnow()
        won = await compare_and_set(
            session,
            affiliate,
            Affiliate.status == affiliate.status,
            {"status": target, "status_reason": reason, "decided_at": now},
        )
        if not won:
            raise DecisionNotAllowed(affiliate.id, affiliate.status, decision)
        if target == AffiliateStatus.approved:
            affiliate.last_active_at = now
            affiliate.inactivity_notice_at = None
        if target == AffiliateStatus.terminated:
            await self._end_commissions(session, runtime, affiliate)
        await session.flush()
        log.info("affiliate.%s affiliate_id=%s", decision, affiliate.id)

    async def _end_commissions(
        self, session: AsyncSession, runtime: Runtime, affiliate: Affiliate
    ) -> None:
        program = _section_or_none(runtime)
        policy = program.payable_on_termination if program is not None else "pay"
        for commission in await AffiliateRepository(session).commissions_of(affiliate.id):
            after = rules.on_termination(commission.status, policy)
            if after != commission.status:
                commission.status = after
                commission.reason = "The affiliate account ended."

    # --- attribution -------------------------------------------------------------------------

    async def click(self, session: AsyncSession, runtime: Runtime, code: str) -> bool:
        """A visit through ``/r/CODE``: counted (a number only, nothing about the visitor).
        True when the code is an approved affiliate's."""
        if _section_or_none(runtime) is None or not code or len(code) > 32:
            return False
        return await AffiliateRepository(session).count_click(code)

    async def attach(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        code: str | None,
        how: ReferralHow,
    ) -> Referral | None:
        """Stick a referral to ``account_id`` (at sign-up from the cookie, or a code typed at
        sign-up or checkout). The first referral stays; an unknown or unapproved code, or the
        affiliate's own account, attributes nothing."""
        if _section_or_none(runtime) is None or not code:
            return None
        repository = AffiliateRepository(session)
        affiliate = await repository.by_code(code.strip()[:32])
        if affiliate is None or affiliate.status != AffiliateStatus.approved:
            return None
        if affiliate.account_id == account_id:
            return None
        known = await repository.referral_of(account_id)
        if known is not None:
            return known
        referral = Referral(account_id=account_id, affiliate_id=affiliate.id, how=how)
        try:
            async with session.begin_nested():
                await repository.add(referral)
        except IntegrityError:
            return await repository.referral_of(account_id)
        log.info("affiliate.referral affiliate_id=%s how=%s", affiliate.id, how)
        return referral

    # --- commissions -------------------------------------------------------------------------

    async def order_paid(
        self, session: AsyncSession, runtime: Runtime, order: Order, payment: Payment
    ) -> Commission | None:
        """A referred customer's order was paid: its commission, pending for the holding
        period, or held for review when the buyer looks like the affiliate. Once per order
        (a duplicate event or twenty at once make one)."""
        program = _section_or_none(runtime)
        if program is None:
            return None
        repository = AffiliateRepository(session)
        referral = await repository.referral_of(order.account_id)
        if referral is None:
            return None
        affiliate = await repository.get(referral.affiliate_id)
        if affiliate is None or affiliate.status != AffiliateStatus.approved:
            return None
        if await repository.earned_on(order.id) is not None:
            return None
        paid_at = order.paid_at or utcnow()
        first = await repository.first_paid_at(order.account_id)
        amount = rules.commission_minor(
            program, order.kind, order.amount_minor, paid_at=paid_at, first_paid_at=first
        )
        payout = rules.to_payout_currency(program, amount, order.currency)
        if amount <= 0 or payout is None or payout <= 0:
            return None
        held = await self._self_referral(session, runtime, affiliate, order, payment)
        status = CommissionStatus.held if held else CommissionStatus.pending
        commission = Commission(
            affiliate_id=affiliate.id,
            order_id=order.id,
            earned_order_id=order.id,
            kind=CommissionKind.earned,
            status=status,
            amount_minor=amount,
            currency=order.currency,
            payout_minor=payout,
            reversed_minor=0,
            available_at=paid_at + timedelta(days=program.holding(runtime.policy.refunds)),
            reason=held,
        )
        try:
            async with session.begin_nested():
                await repository.add(commission)
        except IntegrityError:
            return await repository.earned_on(order.id)
        affiliate.last_active_at = max(affiliate.last_active_at or paid_at, paid_at)
        await session.flush()
        log.info(
            "affiliate.commission affiliate_id=%s commission_id=%s status=%s",
            affiliate.id,
            commission.id,
            status,
        )
        return commission

    async def _self_referral(
        self,
        session: AsyncSession,
        runtime: Runtime,
        affiliate: Affiliate,
        order: Order,
        payment: Payment,
    ) -> str | None:
        """Why the buyer looks like the affiliate (the same mailbox, card or PayPal payer,
        compared as keyed digests and provider fingerprints, never addresses), or None."""
        program = _section_or_none(runtime)
        if program is None or not program.forbid_self_referrals:
            return None
        repository = AffiliateRepository(session)
        buyer = await repository.get_account(order.account_id)
        if buyer is not None:
            # The digests kept at application, and those of the addresses as they are now.
            known = {affiliate.email_digest, affiliate.paypal_digest}
            if affiliate.paypal_email:
                known.add(_email_digest(runtime, affiliate.paypal_email))
            if affiliate.account_id is not None:
                owner = await repository.get_account(affiliate.account_id)
                if owner is not None:
                    known.add(_email_digest(runtime, owner.email))
            if _email_digest(runtime, buyer.email) in known:
                return "Self-referral: the buyer's email address is the affiliate's."
        if payment.fingerprint and affiliate.account_id is not None:
            own = await repository.fingerprints_of_account(affiliate.account_id)
            if payment.fingerprint in own:
                return (
                    "Self-referral: the buyer paid with a card or PayPal account the "
                    "affiliate has paid with."
                )
        return None

    async def order_refunded(self, session: AsyncSession, runtime: Runtime, order: Order) -> None:
        """Money went back on ``order`` (its ``refunded_minor`` is the total so far): the
        commission shrinks or is cancelled, or, already paid out, a negative commission
        takes the share back from the next payout."""
        repository = AffiliateRepository(session)
        earned = await repository.earned_on(order.id)
        if earned is None:
            return
        change = rules.reversal(
            status=earned.status,
            earned_minor=earned.amount_minor,
            already_reversed_minor=earned.reversed_minor,
            order_minor=order.amount_minor,
            refunded_total_minor=order.refunded_minor,
        )
        taken = change.reduce_minor + change.clawback_minor
        if taken == 0:
            return
        # ``amount_minor`` stays what was earned; ``payout_minor`` is what is left of it.
        program = _section_or_none(runtime)
        converted = (
            rules.to_payout_currency(program, earned.amount_minor, earned.currency)
            if program is not None
            else None
        )
        original_payout = converted if converted is not None else earned.payout_minor
        payout_share = -(-original_payout * taken // earned.amount_minor)
        earned.reversed_minor += taken
        if change.reduce_minor:
            earned.payout_minor = max(earned.payout_minor - payout_share, 0)
            if change.cancelled or earned.payout_minor <= 0:
                earned.status = rules.next_status(earned.status, rules.CommissionEvent.refunded)
                earned.reason = "The order was refunded before the commission was paid out."
        if change.clawback_minor:
            await repository.add(
                Commission(
                    affiliate_id=earned.affiliate_id,
                    order_id=order.id,
                    kind=CommissionKind.clawback,
                    status=CommissionStatus.payable,
                    amount_minor=-change.clawback_minor,
                    currency=earned.currency,
                    payout_minor=-payout_share,
                    reversed_minor=0,
                    available_at=utcnow(),
                    reason="The order was refunded after its commission was paid out.",
                )
            )
        await session.flush()
        log.info("affiliate.reversal commission_id=%s taken=%s", earned.id, taken)

    async def release_due(self, runtime: Runtime, *, now: datetime | None = None) -> int:
        """Pending commissions past their holding period become payable."""
        async with unit_of_work(runtime.sessionmaker) as session:
            return await AffiliateRepository(session).release_due(now or utcnow())

    async def review(
        self,
        session: AsyncSession,
        actor: Actor,
        commission_id: int,
        decision: str,
        reason: str,
    ) -> Commission:
        """An administrator clears (pending again) or rejects (cancelled) a held commission."""
        commission = await session.get(Commission, commission_id)
        if commission is None:
            raise CommissionNotFound(commission_id)
        event = (
            rules.CommissionEvent.cleared if decision == "clear" else rules.CommissionEvent.rejected
        )
        if commission.status != CommissionStatus.held:
            raise ReviewNotAllowed(commission_id, commission.status)
        target = rules.next_status(commission.status, event)
        won = await compare_and_set(
            session,
            commission,
            Commission.status == CommissionStatus.held,
            {"status": target, "reason": reason},
        )
        if not won:
            raise ReviewNotAllowed(commission_id, commission.status)
        await admin_audit.record(
            session, actor, f"commission.{decision}", "commission", commission.id, reason, None
        )
        return commission

    # --- payouts -----------------------------------------------------------------------------

    async def mine(self, session: AsyncSession, account_id: int) -> Affiliate:
        found = await AffiliateRepository(session).of_account(account_id)
        if found is None:
            raise NotAnAffiliate()
        return found

    async def dashboard(
        self, session: AsyncSession, runtime: Runtime, account_id: int, base_url: str
    ) -> Dashboard:
        program = section(runtime)
        affiliate = await self.mine(session, account_id)
        repository = AffiliateRepository(session)
        commissions = await repository.commissions_of(affiliate.id)
        by_status: dict[str, int] = defaultdict(int)
        by_month: dict[str, int] = defaultdict(int)
        for commission in commissions:
            by_status[commission.status] += commission.payout_minor
            if commission.kind == CommissionKind.earned:
                by_month[commission.created_at.strftime("%Y-%m")] += commission.payout_minor
        return Dashboard(
            affiliate=affiliate,
            link=f"{base_url.rstrip('/')}{REFERRAL_PATH}{affiliate.code}",
            signups=await repository.referrals_count(affiliate.id),
            paid_orders=len(await repository.referred_orders(affiliate.id)),
            balance_minor=by_status.get(CommissionStatus.payable, 0),
            currency=program.currency,
            by_status=dict(by_status),
            commissions=commissions,
            payouts=await repository.items_of_affiliate(affiliate.id),
            by_month=sorted(by_month.items()),
        )

    async def admin_rows(
        self, session: AsyncSession, runtime: Runtime, *, now: datetime | None = None
    ) -> list[AffiliateRow]:
        program = section(runtime)
        repository = AffiliateRepository(session)
        rows = []
        for affiliate in await repository.listed():
            balance = sum(
                c.payout_minor
                for c in await repository.commissions_of(affiliate.id)
                if c.status == CommissionStatus.payable
            )
            rate = await self._rate(session, program, affiliate, now or utcnow())
            rows.append(AffiliateRow(affiliate, balance, rate))
        return rows

    async def held(self, session: AsyncSession) -> list[Commission]:
        return await AffiliateRepository(session).by_status(CommissionStatus.held)

    async def batches(self, session: AsyncSession) -> list[PayoutBatch]:
        return await AffiliateRepository(session).batches()

    async def items(self, session: AsyncSession, batch_id: int) -> list[PayoutItem]:
        return await AffiliateRepository(session).items_of(batch_id)

    async def _rate(
        self,
        session: AsyncSession,
        program: AffiliatesSection,
        affiliate: Affiliate,
        now: datetime,
    ) -> rules.RefundRate:
        orders = await AffiliateRepository(session).referred_orders(affiliate.id)
        referred = [
            rules.ReferredOrder(o.paid_at, o.status != OrderStatus.paid)
            for o in orders
            if o.paid_at is not None
        ]
        return rules.refund_rate(referred, now, program.refund_rate_window_days)

    # --- the program's rules, on a schedule --------------------------------------------------

    async def enforce(self, runtime: Runtime, *, now: datetime | None = None) -> dict[str, int]:
        """Suspend affiliates whose refund rate is too high, notify and then end inactive
        ones. Returns how many of each."""
        program = _section_or_none(runtime)
        done = {"suspended": 0, "notified": 0, "ended": 0}
        if program is None:
            return done
        now = now or utcnow()
        async with unit_of_work(runtime.sessionmaker) as session:
            ids = [
                a.id for a in await AffiliateRepository(session).listed([AffiliateStatus.approved])
            ]
        for affiliate_id in ids:
            async with unit_of_work(runtime.sessionmaker) as session:
                await lock_row(session, Affiliate, affiliate_id)
                affiliate = await AffiliateRepository(session).get(affiliate_id)
                if affiliate is None or affiliate.status != AffiliateStatus.approved:
                    continue
                await session.refresh(affiliate)
                rate = await self._rate(session, program, affiliate, now)
                if rules.refund_rate_too_high(program, rate):
                    reason = (
                        f"{rate.refunded} of the {rate.orders} referred orders of the last "
                        f"{program.refund_rate_window_days} days were refunded ({rate.percent} %), "
                        f"above the program's {program.refund_rate_threshold_percent} %."
                    )
                    await self._set_status(session, runtime, affiliate, "suspend", reason)
                    done["suspended"] += 1
                    continue
                state = rules.inactivity(
                    program,
                    last_active_at=affiliate.last_active_at or affiliate.created_at,
                    notice_at=affiliate.inactivity_notice_at,
                    now=now,
                )
                if state == rules.Inactivity.notify:
                    affiliate.inactivity_notice_at = now
                    await self._notify_inactive(session, runtime, affiliate, program)
                    done["notified"] += 1
                elif state == rules.Inactivity.end:
                    reason = (
                        f"No referred paid order and no sign-in for "
                        f"{program.inactivity_termination_months} months."
                    )
                    await self._set_status(session, runtime, affiliate, "terminate", reason)
                    done["ended"] += 1
        return done

    async def _notify_inactive(
        self,
        session: AsyncSession,
        runtime: Runtime,
        affiliate: Affiliate,
        program: AffiliatesSection,
    ) -> None:
        if affiliate.account_id is None:
            return
        account = await AffiliateRepository(session).get_account(affiliate.account_id)
        if account is None:
            return
        subject, body = _inactive_notice(runtime, program)
        mailer, to = runtime.mailer, account.email
        after_commit(session, lambda: mailer.send(to, subject, body))

    async def signed_in(self, session: AsyncSession, account_id: int) -> None:
        """A sign-in counts as activity. Only its day is kept: inactivity is counted in
        months, and the time of a sign-in is nothing the program needs."""
        affiliate = await AffiliateRepository(session).of_account(account_id)
        if affiliate is not None:
            today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
            if affiliate.last_active_at is None or affiliate.last_active_at < today:
                affiliate.last_active_at = today

    # --- privacy -----------------------------------------------------------------------------

    async def export(self, session: AsyncSession, account_id: int) -> AffiliateData:
        """The affiliate data of one account, for its data export: its membership with
        commissions and payouts, and the referral that brought it."""
        repository = AffiliateRepository(session)
        affiliate = await repository.of_account(account_id)
        referral = await repository.referral_of(account_id)
        if affiliate is None:
            return AffiliateData(None, referral, [], [])
        return AffiliateData(
            affiliate,
            referral,
            await repository.commissions_of(affiliate.id),
            await repository.items_of_affiliate(affiliate.id),
        )

    async def erase(self, session: AsyncSession, runtime: Runtime, account_id: int) -> None:
        """Erasure: the affiliate's personal data goes; its payouts stay, anonymised (like
        invoices), and the program ends for it."""
        repository = AffiliateRepository(session)
        affiliate = await repository.of_account(account_id)
        if affiliate is None:
            return
        if affiliate.status != AffiliateStatus.terminated:
            affiliate.status = AffiliateStatus.terminated
            affiliate.status_reason = "The account was erased."
            await self._end_commissions(session, runtime, affiliate)
        affiliate.account_id = None
        affiliate.contact_name = None
        affiliate.website = None
        affiliate.paypal_email = None
        affiliate.email_digest = None
        affiliate.paypal_digest = None
        for item in await repository.items_of_affiliate(affiliate.id):
            item.receiver = None
        await session.flush()


_emails = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "emails"),
    autoescape=False,  # plain-text mail  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def _inactive_notice(runtime: Runtime, program: AffiliatesSection) -> tuple[str, str]:
    """The subject and body of the inactivity notice (``emails/inactive.txt``)."""
    text = _emails.get_template("inactive.txt").render(
        provider=runtime.policy.provider.name,
        months=program.inactivity_termination_months,
        days=program.inactivity_notice_days,
        login_link=runtime.settings.public_link("/login"),
    )
    subject, _, body = text.partition("\n")
    return subject.strip(), body
