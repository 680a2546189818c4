"""Refunds: a customer's request, the policy's decision with its evidence, the admin queue,
and executing an approved refund once.

The decision itself is ``engine.evaluate`` (pure); this service gathers the facts, stores
every rule's outcome against the terms version in force, and carries out what was decided:
the money goes back through the order's provider under an idempotency key, the subscription
ends and access goes through the desired state, and ``on_refund_executed`` runs.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.audit.service import Actor, admin_audit, require_administrator
from burrow.control.billing.service import billing as billing_service
from burrow.control.db import unit_of_work
from burrow.control.errors import Conflict, InvalidInput, NotFound
from burrow.control.models import (
    Account,
    AccountStatus,
    Order,
    OrderKind,
    OrderStatus,
    RefundedPersonKind,
    RefundRequest,
    RefundRuleOutcome,
    RefundStatus,
    utcnow,
)
from burrow.control.payments.providers import RefundRefused
from burrow.control.payments.registry import registry as payment_providers
from burrow.control.refunds.engine import Decision, RefundFacts, Verdict, evaluate
from burrow.control.refunds.repository import RefundRepository
from burrow.control.refunds.usage.service import usage as usage_service
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest
from burrow.control.subscriptions.service import add_months, trial_email_key
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.terms.render import money

log = logging.getLogger(__name__)


class RefundNotFound(NotFound):
    title = "Unknown refund request"
    type_slug = "unknown-refund-request"

    def __init__(self, request_id: int) -> None:
        super().__init__(f"There is no refund request with the id {request_id}.")


class OrderNotRefundable(Conflict):
    title = "Order not refundable"
    type_slug = "order-not-refundable"

    def __init__(self, order_id: int, status: str) -> None:
        super().__init__(
            f"Order {order_id} is {status.replace('_', ' ')}, so there is nothing to refund."
        )


class RefundAlreadyRequested(Conflict):
    title = "Refund already requested"
    type_slug = "refund-already-requested"

    def __init__(self, request: RefundRequest) -> None:
        super().__init__(
            f"You already asked for a refund of this order (request {request.id}, "
            f"{request.status}); GET /api/v1/refunds shows where it stands.",
            refund_request_id=request.id,
        )


class RefundAlreadyDecided(Conflict):
    title = "Refund already decided"
    type_slug = "refund-already-decided"

    def __init__(
        self,
        request: RefundRequest,
        decided_by_email: str | None = None,
        decided_at: datetime | None = None,
    ) -> None:
        who = f"by {decided_by_email}" if decided_by_email else "by the refund rules"
        when = f" at {decided_at:%Y-%m-%d %H:%M:%S} UTC" if decided_at is not None else ""
        super().__init__(
            f"Refund request {request.id} was already decided {who}{when} and is now "
            f"{request.status}; only a queued request can be decided.",
            refund_request_id=request.id,
            refund_status=request.status,
            decided_by=request.decided_by,
        )


class RefundAmountTooHigh(InvalidInput):
    title = "Amount too high"
    type_slug = "refund-amount-too-high"

    def __init__(self, refundable: int, currency: str) -> None:
        super().__init__(
            f"At most {money(refundable, currency)} ({refundable} in minor units) is left to "
            "refund on this order.",
            field="amount_minor",
        )


@dataclass(frozen=True)
class RefundView:
    """A request with its order and its stored rule outcomes."""

    request: RefundRequest
    order: Order
    outcomes: tuple[RefundRuleOutcome, ...]
    message: str = ""

    def seconds_left(self, now: datetime) -> int | None:
        due = self.request.due_at
        return None if due is None else int((due - now).total_seconds())


def _account_id(actor: Actor) -> int | None:
    """The deciding administrator's account; none for the server's command line."""
    return actor.id if isinstance(actor, Account) else None


async def on_refund_executed(session: AsyncSession, runtime: Runtime, order: Order) -> None:
    """The affiliate program's part of a refund: the commission earned on ``order`` shrinks,
    is cancelled, or (paid out already) comes back from the affiliate's next payout. It runs
    in the unit of work that executed the refund, so the reversal and the refund commit
    together."""
    await affiliate_service.order_refunded(session, runtime, order)


def _email_digest(runtime: Runtime, email: str) -> str:
    # The same normalised form as the email match below (and the trial claim), under the
    # server's secret; a purpose prefix keeps it apart from the trial claim's digest.
    secret = runtime.settings.secret_key.get_secret_value()
    return keyed_digest(secret, f"refunded-email:{trial_email_key(email)}")


def _fingerprint_digest(runtime: Runtime, fingerprint: str) -> str:
    secret = runtime.settings.secret_key.get_secret_value()
    return keyed_digest(secret, f"refunded-fingerprint:{fingerprint}")


def _outcome_rows(request_id: int, decision: Decision) -> list[RefundRuleOutcome]:
    return [
        RefundRuleOutcome(
            refund_request_id=request_id,
            rule=outcome.rule,
            passed=outcome.passed,
            needs_judgement=outcome.needs_judgement,
            evidence=json.dumps(outcome.evidence, sort_keys=True),
            message=outcome.message,
        )
        for outcome in decision.outcomes
    ]


class RefundService:
    # --- the customer ------------------------------------------------------------------------

    async def request(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        order_id: int,
        reason: str,
    ) -> RefundView:
        """Ask for a refund of one's own order; decided at once by the policy, or queued."""
        order = await billing_service.order_of(session, account.id, order_id)
        if order.status != OrderStatus.paid:
            raise OrderNotRefundable(order.id, order.status)
        repository = RefundRepository(session)
        await repository.lock_order(order.id)
        standing = await repository.standing_for(order.id)
        if standing is not None:
            raise RefundAlreadyRequested(standing)
        now = utcnow()
        hours = runtime.policy.refunds.service_level_hours if runtime.policy.refunds else None
        request = RefundRequest(
            order_id=order.id,
            account_id=account.id,
            reason=reason.strip(),
            status=RefundStatus.evaluating,
            requested_at=now,
            due_at=now + timedelta(hours=hours) if hours else None,
            terms_version=runtime.policy.terms.version,
            provider_reference=uuid.uuid4().hex,
        )
        if runtime.policy.refunds is not None and runtime.policy.refunds.one_per_person:
            request.email_digest = _email_digest(runtime, account.email)
        if not await repository.add_open(request):
            standing = await repository.standing_for(order.id)
            assert standing is not None  # what the index found
            raise RefundAlreadyRequested(standing)
        decision = await self._decide(session, runtime, account, order, request)
        return await self._apply(session, runtime, account, order, request, decision)

    async def list_own(self, session: AsyncSession, account_id: int) -> list[RefundView]:
        requests = await RefundRepository(session).requests_of(account_id)
        return await self._views(session, list(requests))

    # --- administrators ----------------------------------------------------------------------

    async def queue(self, session: AsyncSession) -> list[RefundView]:
        """Requests waiting for a person, overdue and nearest deadline first."""
        return await self._views(session, list(await RefundRepository(session).queued()))

    async def queue_summary(self, session: AsyncSession) -> tuple[int, int]:
        """How many requests wait for a person, and how many of them are overdue."""
        now = utcnow()
        queued = await RefundRepository(session).queued()
        overdue = sum(1 for r in queued if r.due_at is not None and r.due_at < now)
        return len(queued), overdue

    async def approve(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        request_id: int,
        amount_minor: int | None,
        reason: str,
    ) -> RefundView:
        """Approve a queued request (the proposed amount, or ``amount_minor``) and execute it.

        The decision is a compare-and-set: it is written only while the request is still
        queued, so of two administrators deciding at once one wins and the other gets
        ``RefundAlreadyDecided``. The rules that need no person are then evaluated again (the
        account may have been terminated since the request was queued): when one now refuses
        the request, it is refused with that evidence and nothing goes out. The decision is
        recorded in the admin audit trail before any money moves.
        """
        require_administrator(actor)
        request, order = await self._queued(session, request_id)
        refundable = order.amount_minor - order.refunded_minor
        amount = amount_minor if amount_minor is not None else request.amount_minor
        amount = refundable if amount is None else amount
        if amount <= 0:
            raise InvalidInput("A refund's amount must be above zero.", field="amount_minor")
        if amount > refundable:
            raise RefundAmountTooHigh(refundable, order.currency)
        await self._decide_queued(
            session,
            request,
            status=RefundStatus.approved,
            amount_minor=amount,
            decided_at=utcnow(),
            decided_by=_account_id(actor),
            decision_reason=reason.strip(),
        )
        account = await RefundRepository(session).get_account(request.account_id)
        assert account is not None  # a foreign key
        decision = await self._decide(session, runtime, account, order, request)
        if decision.verdict == Verdict.refused:
            request.status = RefundStatus.refused
            request.amount_minor = None
            request.decision_reason = f"Refused by the rules at approval: {decision.summary}"
            await session.flush()
            await self._record_approval(session, actor, request, order, reason)
            log.info("refund request %s refused by its rules at approval", request.id)
            return await self._view(session, request, request.decision_reason)
        await self._record_approval(session, actor, request, order, reason)
        await self.execute(session, runtime, request)
        log.info("refund request %s approved by admin %s", request.id, _account_id(actor))
        return await self._view(session, request, "Approved and refunded.")

    @staticmethod
    async def _record_approval(
        session: AsyncSession, actor: Actor, request: RefundRequest, order: Order, reason: str
    ) -> None:
        await admin_audit.record(
            session,
            actor,
            "refund.approve",
            "refund_request",
            request.id,
            reason,
            {"amount_minor": request.amount_minor, "currency": order.currency},
        )

    async def refuse(
        self, session: AsyncSession, actor: Actor, request_id: int, reason: str
    ) -> RefundView:
        request, _order = await self._queued(session, request_id)
        await self._decide_queued(
            session,
            request,
            status=RefundStatus.refused,
            amount_minor=None,
            decided_at=utcnow(),
            decided_by=_account_id(actor),
            decision_reason=reason.strip(),
        )
        await admin_audit.record(
            session, actor, "refund.refuse", "refund_request", request.id, reason
        )
        log.info("refund request %s refused by admin %s", request.id, _account_id(actor))
        return await self._view(session, request, "Refused.")

    async def record_finding(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        request_id: int,
        *,
        unsupported_device: bool,
    ) -> RefundView:
        """Record support's finding of an unsupported device, OS or site on a queued request,
        and evaluate it again (a finding the policy excludes refuses it); the admin audit trail
        records who found it and what the request became."""
        require_administrator(actor)  # before the evaluation may send money back
        request, order = await self._queued(session, request_id)
        account = await RefundRepository(session).get_account(request.account_id)
        assert account is not None  # a foreign key
        # Claimed first (still queued, as the database sees it), so a finding cannot rewrite a
        # request an administrator decided meanwhile.
        await self._decide_queued(
            session, request, status=RefundStatus.evaluating, unsupported_device=unsupported_device
        )
        decision = await self._decide(session, runtime, account, order, request)
        view = await self._apply(session, runtime, account, order, request, decision)
        await admin_audit.record(
            session,
            actor,
            "refund.finding",
            "refund_request",
            request.id,
            None,
            {"unsupported_device": unsupported_device, "status": view.request.status},
        )
        return view

    # --- execution ---------------------------------------------------------------------------

    async def execute(
        self, session: AsyncSession, runtime: Runtime, request: RefundRequest
    ) -> bool:
        """Send an approved refund back through the order's provider, once.

        The request's random ``provider_reference`` goes with the refund to the provider, and
        the first attempt's idempotency key is made from it (unique across deployments, and
        the same after a crash rolled the approval back). Before any later attempt the
        provider is asked for a refund under that reference (an attempt answered with a 5xx
        may have paid); only when there is none is it sent again, under a new key. A refund the
        provider refuses for good fails the request, for a person to look at. Then the
        subscription ends, access goes, and the affiliate hook runs.
        """
        if request.status != RefundStatus.approved or request.amount_minor is None:
            return False
        order = await billing_service.get_order(session, request.order_id)
        assert order is not None  # a foreign key
        provider = payment_providers.refunds(order.provider, runtime.settings)
        if provider is None:
            log.warning("refund request %s: no refund provider '%s'", request.id, order.provider)
            request.status = RefundStatus.failed
            request.decision_reason = (
                f"{request.decision_reason or ''} (no way to refund through {order.provider})"
            ).strip()
            await session.flush()
            return False
        payments = await billing_service.payment_ids_of(session, order.id)
        payment = payments[0] if payments else ""
        if request.provider_reference is None:
            request.provider_reference = uuid.uuid4().hex
        reference = request.provider_reference
        found = None
        try:
            if request.idempotency_key is not None:
                found = await provider.find_refund(order, payment, reference)
                request.idempotency_key = f"burrow-refund-{uuid.uuid4().hex}"
            else:
                request.idempotency_key = f"burrow-refund-{reference}"
            request.provider_refund_id = found or await provider.execute_refund(
                order, payment, request.amount_minor, request.idempotency_key, reference
            )
        except RefundRefused as exc:
            log.warning("refund request %s: %s refused it: %s", request.id, order.provider, exc)
            request.status = RefundStatus.failed
            request.decision_reason = (
                f"{request.decision_reason or ''} ({order.provider} refused the refund: {exc})"
            ).strip()
            await session.flush()
            return False
        except Exception:
            # Stays approved (its key and reference kept): the scheduler asks the provider
            # whether it paid before trying again.
            log.exception(
                "refund request %s: %s did not answer clearly", request.id, order.provider
            )
            await session.flush()
            return False
        request.status = RefundStatus.executed
        request.executed_at = utcnow()
        await billing_service.mark_refunded(session, order, request.amount_minor)
        await subscription_service.end_now(session, runtime, order.account_id)
        await on_refund_executed(session, runtime, order)
        await session.flush()
        log.info("refund request %s executed through %s", request.id, order.provider)
        return True

    async def execute_approved(self, runtime: Runtime, *, limit: int = 100) -> int:
        """Execute approved refunds not executed yet (a provider was down, a crash)."""
        async with unit_of_work(runtime.sessionmaker) as session:
            ids = list(await RefundRepository(session).approved_not_executed(limit))
        done = 0
        for request_id in ids:
            try:
                async with unit_of_work(runtime.sessionmaker) as session:
                    request = await RefundRepository(session).get(request_id)
                    if request is not None and await self.execute(session, runtime, request):
                        done += 1
            except Exception:
                log.exception("refund request %s did not go out; it is tried again", request_id)
        return done

    async def recheck_queued(self, runtime: Runtime, *, limit: int = 500) -> int:
        """Evaluate queued requests again with today's facts; a request a rule that needs no
        person now refuses (the account was terminated for a violation since it asked) is
        refused, compare-and-set, with the new evidence. Returns how many were refused."""
        async with unit_of_work(runtime.sessionmaker) as session:
            ids = [r.id for r in await RefundRepository(session).queued()][:limit]
        refused = 0
        for request_id in ids:
            async with unit_of_work(runtime.sessionmaker) as session:
                repository = RefundRepository(session)
                request = await repository.get(request_id)
                if request is None or request.status != RefundStatus.queued:
                    continue
                account = await repository.get_account(request.account_id)
                order = await billing_service.get_order(session, request.order_id)
                assert account is not None  # a foreign key
                assert order is not None  # a foreign key
                facts = await self.facts(session, runtime, account, order, request)
                decision = evaluate(runtime.policy.refunds, facts)
                if decision.verdict != Verdict.refused:
                    continue
                reason = f"Refused by the rules when checked again: {decision.summary}"
                values = {
                    "status": RefundStatus.refused,
                    "amount_minor": None,
                    "decided_at": utcnow(),
                    "decision_reason": reason,
                }
                if await repository.transition(request, RefundStatus.queued, **values):
                    await repository.replace_outcomes(
                        request.id, _outcome_rows(request.id, decision)
                    )
                    log.info("refund request %s refused when checked again", request.id)
                    refused += 1
        return refused

    async def remember_refunded_person(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> int:
        """Before ``account`` is erased: if it was ever granted a refund, keep keyed digests of
        its normalised email and of the payment fingerprints on its refunded orders, linked to
        no account, so that one_per_person still knows the person. Returns how many digests
        were kept (0 for an account never refunded, which keeps nothing)."""
        refunds = runtime.policy.refunds
        if refunds is None or not refunds.one_per_person:
            # No rule needs them, and the retention statement promises nothing is kept.
            return 0
        repository = RefundRepository(session)
        fingerprints = await repository.refunded_fingerprints_of(account.id)
        if fingerprints is None:
            return 0
        await repository.remember_refunded_person(
            RefundedPersonKind.email, [_email_digest(runtime, account.email)]
        )
        await repository.remember_refunded_person(
            RefundedPersonKind.fingerprint, [_fingerprint_digest(runtime, f) for f in fingerprints]
        )
        return 1 + len(fingerprints)

    # --- helpers -----------------------------------------------------------------------------

    async def facts(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        order: Order,
        request: RefundRequest,
    ) -> RefundFacts:
        """Everything the policy's rules look at, for one request."""
        repository = RefundRepository(session)
        ordered_at = order.paid_at or order.created_at
        privacy = runtime.policy.privacy
        counted = privacy.mode == "metered" and privacy.first_order_usage_counters
        first_id = await billing_service.first_paid_order_id(session, account.id)
        usage_bytes = usage_sessions = None
        # Usage is counted for the account's first paid order only (a trial's counts are
        # part of it); a later order, a renewal, has no counts and a person judges them.
        if counted and first_id == order.id:
            counter = await repository.usage_of(account.id)
            # A counter not tied to an order yet holds the usage before and since payment.
            if counter is not None and counter.order_id not in (None, order.id):
                counter = None
            usage_bytes = counter.bytes_total if counter else 0
            usage_sessions = counter.sessions if counter else 0
            # A connection still open has carried bytes the counter gets only at its next
            # flush or its end: the latest node reports give them now.
            usage_bytes += await usage_service.open_bytes(runtime, account.id)
        key = trial_email_key(account.email)
        email_digest = _email_digest(runtime, account.email)
        domain = key.rpartition("@")[2]
        emails = await repository.refunded_emails_elsewhere(account.id, domain)
        fingerprints = await billing_service.fingerprints_of(session, order.id)
        return RefundFacts(
            ordered_at=ordered_at,
            requested_at=request.requested_at,
            order_amount_minor=order.amount_minor - order.refunded_minor,
            currency=order.currency,
            order_period_months=order.period_months,
            order_period_end=add_months(ordered_at, order.period_months),
            is_first_order=first_id == order.id,
            is_renewal=order.kind == OrderKind.renewal,
            payment_method=order.payment_method,
            reason=request.reason,
            # Only a termination for a named clause of the terms is "for a violation" (the
            # seeds refuse refunds to accounts "terminated due to policy violations"); the
            # admin API and panel always name one, the command line may end an account for
            # another reason. (The status reason is written from the same clause.)
            terminated_for_violation=(
                account.status == AccountStatus.terminated and account.terminated_clause is not None
            ),
            unsupported_device_finding=request.unsupported_device,
            usage_bytes=usage_bytes,
            usage_sessions=usage_sessions,
            # Another account of the same person, or one that was erased after its refund
            # (then only keyed digests of its email and fingerprints are left to match).
            refund_for_same_email=any(trial_email_key(e) == key for e in emails)
            or await repository.email_digest_refunded_elsewhere(account.id, email_digest)
            or await repository.refunded_person_known(RefundedPersonKind.email, [email_digest]),
            refund_for_same_fingerprint=await repository.fingerprint_refunded_elsewhere(
                account.id, fingerprints
            )
            or await repository.refunded_person_known(
                RefundedPersonKind.fingerprint,
                [_fingerprint_digest(runtime, f) for f in fingerprints],
            ),
        )

    async def _decide(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        order: Order,
        request: RefundRequest,
    ) -> Decision:
        facts = await self.facts(session, runtime, account, order, request)
        decision = evaluate(runtime.policy.refunds, facts)
        await RefundRepository(session).replace_outcomes(
            request.id, _outcome_rows(request.id, decision)
        )
        return decision

    async def _apply(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        order: Order,
        request: RefundRequest,
        decision: Decision,
    ) -> RefundView:
        now = utcnow()
        request.amount_minor = decision.amount_minor
        if decision.verdict == Verdict.refused:
            request.status = RefundStatus.refused
            request.decided_at = now
            request.decision_reason = decision.summary
        elif decision.verdict == Verdict.queued:
            request.status = RefundStatus.queued
        else:
            request.status = RefundStatus.approved
            request.decided_at = now
            request.decision_reason = decision.summary
            await session.flush()
            await self.execute(session, runtime, request)
        await session.flush()
        log.info("refund request %s on order %s: %s", request.id, order.id, decision.verdict.value)
        return await self._view(session, request, decision.summary)

    async def _decide_queued(
        self, session: AsyncSession, request: RefundRequest, **values: object
    ) -> None:
        """Write a decision on ``request`` only if it is still queued; otherwise tell who
        decided it first."""
        repository = RefundRepository(session)
        if not await repository.transition(request, RefundStatus.queued, **values):
            raise RefundAlreadyDecided(request, *await repository.decided_by(request))

    async def _queued(self, session: AsyncSession, request_id: int) -> tuple[RefundRequest, Order]:
        repository = RefundRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise RefundNotFound(request_id)
        if request.status != RefundStatus.queued:
            raise RefundAlreadyDecided(request, *await repository.decided_by(request))
        order = await billing_service.get_order(session, request.order_id)
        assert order is not None  # a foreign key
        return request, order

    async def _view(
        self, session: AsyncSession, request: RefundRequest, message: str = ""
    ) -> RefundView:
        view = (await self._views(session, [request]))[0]
        return RefundView(view.request, view.order, view.outcomes, message)

    async def _views(
        self, session: AsyncSession, requests: list[RefundRequest]
    ) -> list[RefundView]:
        outcomes = await RefundRepository(session).outcomes_of([r.id for r in requests])
        views = []
        for request in requests:
            order = await billing_service.get_order(session, request.order_id)
            assert order is not None  # a foreign key
            mine = tuple(o for o in outcomes if o.refund_request_id == request.id)
            views.append(RefundView(request, order, mine))
        return views


refund = RefundService()
