"""PayPal payout batches: made under a lock (each payable commission in one batch), stored
before they are sent, sent under a sender_batch_id PayPal pays at most once, and their items'
results read back (returned money goes back to the balance)."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.affiliates import rules
from burrow.control.affiliates.repository import AffiliateRepository
from burrow.control.affiliates.service.common import section
from burrow.control.affiliates.service.errors import (
    NothingToPayOut,
    PayoutBatchNotFound,
    PayoutsByHand,
    PayoutsNotSetUp,
)
from burrow.control.audit.service import Actor, admin_audit
from burrow.control.db import after_commit, unit_of_work
from burrow.control.models import (
    Affiliate,
    Commission,
    PayoutBatch,
    PayoutBatchStatus,
    PayoutItem,
    PayoutItemStatus,
    utcnow,
)
from burrow.control.payments import paypal
from burrow.control.payments.providers import ProviderNotConfigured, ProviderUnavailable
from burrow.control.runtime import Runtime
from burrow.control.terms.render import money

log = logging.getLogger(__name__)


class PayoutService:
    async def create_batch(
        self, session: AsyncSession, runtime: Runtime, actor: Actor | None
    ) -> PayoutBatch | None:
        """One batch paying every affiliate whose payable balance (clawbacks included)
        reaches the minimum; None when nobody does. The payable commissions are locked, so
        two payouts started at once put each commission in one batch only."""
        program = section(runtime)
        if program.payout_method != "paypal":
            return None
        repository = AffiliateRepository(session)
        by_affiliate: dict[int, list[Commission]] = defaultdict(list)
        for commission in await repository.payable_locked():
            by_affiliate[commission.affiliate_id].append(commission)
        paying: list[tuple[Affiliate, list[Commission], int]] = []
        for affiliate_id, commissions in by_affiliate.items():
            total = sum(c.payout_minor for c in commissions)
            affiliate = await repository.get(affiliate_id)
            if affiliate is None or not affiliate.paypal_email:
                continue
            if total >= max(program.payout_minimum_minor, 1):
                paying.append((affiliate, commissions, total))
        if not paying:
            return None
        batch = PayoutBatch(
            sender_batch_id=f"burrow-{uuid.uuid4().hex}",
            status=PayoutBatchStatus.created,
            currency=program.currency,
            total_minor=sum(total for _, _, total in paying),
            attempts=0,
        )
        await repository.add(batch)
        for affiliate, commissions, total in paying:
            item = PayoutItem(
                batch_id=batch.id,
                affiliate_id=affiliate.id,
                sender_item_id=f"burrow-item-{uuid.uuid4().hex}",
                amount_minor=total,
                currency=program.currency,
                receiver=affiliate.paypal_email,
                status=PayoutItemStatus.pending,
            )
            await repository.add(item)
            for commission in commissions:
                commission.status = rules.next_status(
                    commission.status, rules.CommissionEvent.paid_out
                )
                commission.payout_item_id = item.id
        await session.flush()
        if actor is not None:
            await admin_audit.record(
                session,
                actor,
                "payout.create",
                "payout_batch",
                batch.id,
                None,
                {"total_minor": batch.total_minor, "items": len(paying)},
            )
        log.info("affiliate.payout_batch batch_id=%s items=%s", batch.id, len(paying))
        return batch

    async def send_batch(self, runtime: Runtime, batch_id: int) -> PayoutBatch:
        """Send a made batch to PayPal (again, after a lost answer: the same sender_batch_id
        is paid at most once), then record what PayPal says about its items."""
        if not paypal.configured(runtime.settings):
            raise PayoutsNotSetUp()
        async with unit_of_work(runtime.sessionmaker) as session:
            repository = AffiliateRepository(session)
            batch = await repository.batch(batch_id)
            if batch is None:
                raise PayoutBatchNotFound(batch_id)
            if batch.status != PayoutBatchStatus.created:
                return batch
            body = _payout_body(batch, await repository.items_of(batch.id))
            batch.attempts += 1
        gateway = paypal.PayPalGateway(runtime.settings)
        error: str | None = None
        answer: dict[str, Any] = {}
        try:
            answer = await gateway.create_payout(body)
        except (ProviderUnavailable, ProviderNotConfigured) as exc:
            error = str(exc)[:2000]
            log.warning("affiliate.payout_unanswered batch_id=%s", batch_id)
        async with unit_of_work(runtime.sessionmaker) as session:
            repository = AffiliateRepository(session)
            found = await repository.batch_locked(batch_id)
            assert found is not None
            found.attempts = max(found.attempts, 1)
            if error is not None:
                found.error = error
                return found
            header = answer.get("batch_header") or {}
            found.provider_batch_id = str(header.get("payout_batch_id") or "") or None
            found.error = None
            found.sent_at = found.sent_at or utcnow()
            if found.status == PayoutBatchStatus.created:
                found.status = PayoutBatchStatus.pending
            if header.get("batch_status") == "DENIED":
                await self._apply_items(session, found, {"items": []}, denied=True)
            elif answer.get("items"):
                await self._apply_items(session, found, answer)
            return found

    async def sync_batch(self, runtime: Runtime, batch_id: int) -> PayoutBatch:
        """Ask PayPal how a sent batch's items ended (success, unclaimed, returned, failed);
        money that did not reach the affiliate goes back to their balance."""
        async with unit_of_work(runtime.sessionmaker) as session:
            batch = await AffiliateRepository(session).batch(batch_id)
            if batch is None:
                raise PayoutBatchNotFound(batch_id)
            provider_id = batch.provider_batch_id
            status = batch.status
        if status == PayoutBatchStatus.created:
            return await self.send_batch(runtime, batch_id)
        if provider_id is None or status != PayoutBatchStatus.pending:
            async with unit_of_work(runtime.sessionmaker) as session:
                found = await AffiliateRepository(session).batch(batch_id)
                assert found is not None
                return found
        answer = await paypal.PayPalGateway(runtime.settings).get_payout(provider_id)
        async with unit_of_work(runtime.sessionmaker) as session:
            found = await AffiliateRepository(session).batch_locked(batch_id)
            assert found is not None
            header = answer.get("batch_header") or {}
            await self._apply_items(
                session, found, answer, denied=header.get("batch_status") == "DENIED"
            )
            return found

    async def item_reported(self, session: AsyncSession, resource: dict[str, Any]) -> bool:
        """PayPal's webhook about one payout item (``PAYMENT.PAYOUTS-ITEM.*``): its state is
        recorded at once, as a check of the batch would. False: not an item of ours."""
        sent = resource.get("payout_item")
        sender_item_id = sent.get("sender_item_id") if isinstance(sent, dict) else None
        if not isinstance(sender_item_id, str) or not sender_item_id:
            return False
        repository = AffiliateRepository(session)
        item = await repository.item_by_sender_id(sender_item_id)
        if item is None:
            return False
        batch = await repository.batch_locked(item.batch_id)
        assert batch is not None  # a foreign key
        if batch.status == PayoutBatchStatus.created:
            batch.status = PayoutBatchStatus.pending  # PayPal has it, whatever we were told
        await self._apply_items(session, batch, {"items": [resource]})
        return True

    async def _apply_items(
        self,
        session: AsyncSession,
        batch: PayoutBatch,
        answer: dict[str, Any],
        *,
        denied: bool = False,
    ) -> None:
        repository = AffiliateRepository(session)
        items = await repository.items_of(batch.id)
        reported: dict[str, dict[str, Any]] = {}
        for entry in answer.get("items") or []:
            if not isinstance(entry, dict):
                continue
            sent = entry.get("payout_item") or {}
            reported[str(sent.get("sender_item_id") or "")] = entry
        for item in items:
            entry = reported.get(item.sender_item_id)
            if denied:
                new = PayoutItemStatus.failed
            elif entry is None:
                continue
            else:
                item.provider_item_id = str(entry.get("payout_item_id") or "") or None
                new = _ITEM_STATES.get(str(entry.get("transaction_status")), item.status)
            if item.status in (PayoutItemStatus.credited_back, new):
                continue
            item.status = new
            if new in (PayoutItemStatus.returned, PayoutItemStatus.failed):
                for commission in await repository.commissions_in_item(item.id):
                    commission.status = rules.next_status(
                        commission.status, rules.CommissionEvent.returned
                    )
                    commission.payout_item_id = None
                item.status = PayoutItemStatus.credited_back
                item.error = f"PayPal: {new}"
        if denied:
            batch.status = PayoutBatchStatus.denied
        elif all(
            i.status in (PayoutItemStatus.success, PayoutItemStatus.credited_back) for i in items
        ):
            batch.status = PayoutBatchStatus.done
        await session.flush()

    async def start_payout(
        self, session: AsyncSession, runtime: Runtime, actor: Actor
    ) -> PayoutBatch:
        """The administrator's "pay out now": the batch is made in the caller's unit of work
        and sent to PayPal as soon as that commits (a lost answer leaves it ``created``, to be
        sent again under the same sender_batch_id)."""
        program = section(runtime)
        if program.payout_method != "paypal":
            raise PayoutsByHand(program.payout_method)
        if not paypal.configured(runtime.settings):
            raise PayoutsNotSetUp()
        batch = await self.create_batch(session, runtime, actor)
        if batch is None:
            raise NothingToPayOut(money(program.payout_minimum_minor, program.currency))
        batch_id = batch.id

        async def send() -> None:
            await self.send_batch(runtime, batch_id)

        after_commit(session, send)
        return batch

    async def resend(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, batch_id: int
    ) -> PayoutBatch:
        """The administrator's retry of a batch: recorded, then (after commit) sent again
        under its own sender_batch_id, or asked for its items' results."""
        if not paypal.configured(runtime.settings):
            raise PayoutsNotSetUp()
        batch = await self.get_batch(session, batch_id)
        await admin_audit.record(
            session, actor, "payout.resend", "payout_batch", batch.id, None, None
        )

        async def sync() -> None:
            await self.sync_batch(runtime, batch_id)

        after_commit(session, sync)
        return batch

    async def get_batch(self, session: AsyncSession, batch_id: int) -> PayoutBatch:
        found = await AffiliateRepository(session).batch(batch_id)
        if found is None:
            raise PayoutBatchNotFound(batch_id)
        return found

    async def check_unfinished(self, runtime: Runtime, *, limit: int = 50) -> int:
        """Send again or check each unfinished batch (bounded); one failing batch (PayPal
        down) leaves the others checked and is tried on the next run."""
        if not paypal.configured(runtime.settings):
            return 0
        async with unit_of_work(runtime.sessionmaker) as session:
            unfinished = (await AffiliateRepository(session).unfinished_batches())[:limit]
        checked = 0
        for batch_id in unfinished:
            try:
                await self.sync_batch(runtime, batch_id)
            except ProviderUnavailable as exc:
                log.warning("affiliate.payout_check_failed batch_id=%s: %s", batch_id, exc)
                continue
            checked += 1
        return checked

    async def pay_out(self, runtime: Runtime, actor: Actor | None) -> PayoutBatch | None:
        """Make a batch of everyone due and send it; the admin's button and the scheduled
        job (when the policy enables it). A batch whose answer was lost earlier is sent
        again first, under its own sender_batch_id."""
        if not paypal.configured(runtime.settings):
            raise PayoutsNotSetUp()
        await self.check_unfinished(runtime)
        async with unit_of_work(runtime.sessionmaker) as session:
            batch = await self.create_batch(session, runtime, actor)
            batch_id = batch.id if batch is not None else None
        if batch_id is None:
            return None
        return await self.send_batch(runtime, batch_id)

    # --- reading -----------------------------------------------------------------------------


_ITEM_STATES = {
    "SUCCESS": PayoutItemStatus.success,
    "UNCLAIMED": PayoutItemStatus.unclaimed,
    "RETURNED": PayoutItemStatus.returned,
    "FAILED": PayoutItemStatus.failed,
    "BLOCKED": PayoutItemStatus.failed,
    "REFUNDED": PayoutItemStatus.returned,
    "REVERSED": PayoutItemStatus.returned,
    "DENIED": PayoutItemStatus.failed,
    "CANCELED": PayoutItemStatus.returned,  # an unclaimed item the sender took back
    "HELD": PayoutItemStatus.pending,
    "PENDING": PayoutItemStatus.pending,
    "ONHOLD": PayoutItemStatus.pending,
}


def _payout_body(batch: PayoutBatch, items: list[PayoutItem]) -> dict[str, Any]:
    return {
        "sender_batch_header": {
            "sender_batch_id": batch.sender_batch_id,
            "recipient_type": "EMAIL",
            "email_subject": "Your affiliate payout",
            "email_message": "Thank you for referring customers to us.",
        },
        "items": [
            {
                "recipient_type": "EMAIL",
                "amount": {
                    "value": paypal.money_text(item.amount_minor, item.currency),
                    "currency": item.currency,
                },
                "receiver": item.receiver or "",
                "sender_item_id": item.sender_item_id,
                "note": "Affiliate commission",
            }
            for item in items
        ],
    }
