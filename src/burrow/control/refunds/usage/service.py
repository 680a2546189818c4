"""Usage counters: a first order's traffic and sessions, kept only for the refund rules.

Kept under ``privacy.mode = "metered"`` with ``privacy.first_order_usage_counters`` and a
refund rule that reads them (``refunds.max_data_bytes`` / ``max_sessions``). A counter belongs
to the account's first paid order (what was counted before it, a trial, is part of it); it
stops growing once that order's refund window has passed, and ``expire`` deletes it then:
nothing is kept longer than a refund rule needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.billing.service import billing as billing_service
from burrow.control.live import Kind
from burrow.control.models import Order, UsageCounter, utcnow
from burrow.control.refunds.usage.repository import UsageRepository
from burrow.control.runtime import Runtime


def _utcnow() -> datetime:
    """Wall time of the refund windows (tests replace it with the connections' own)."""
    return utcnow()


@dataclass(frozen=True, slots=True)
class OpenBytes:
    """Bytes of one open connection that the usage counter does not hold yet, as the latest
    node report gave them; ``expires`` is its lease's expiry (live-store clock)."""

    bytes: int
    expires: float


@dataclass(frozen=True, slots=True)
class OpenUsage:
    """One account's open connections (by lease id), in the live store (RAM only)."""

    leases: Mapping[str, OpenBytes] = field(default_factory=dict)


OPEN_USAGE = Kind("usage:open:", OpenUsage)


@dataclass(frozen=True)
class CountedOrder:
    """The order new usage counts for; ``order_id`` None before the first payment (a trial,
    whose counts become that order's)."""

    order_id: int | None


@dataclass
class Tally:
    """Adds usage for one unit of work, looking each account's counted order up once."""

    session: AsyncSession
    runtime: Runtime
    _orders: dict[int, CountedOrder | None] = field(default_factory=dict)

    async def add(self, account_id: int, *, bytes_total: int, sessions: int, at: datetime) -> None:
        if not (bytes_total or sessions):
            return
        if account_id not in self._orders:
            self._orders[account_id] = await usage.counted_order(
                self.session, self.runtime, account_id
            )
        counted = self._orders[account_id]
        if counted is None:
            return  # the first order's refund window has passed: nothing is counted any more
        await UsageRepository(self.session).add_usage(
            account_id,
            order_id=counted.order_id,
            bytes_total=bytes_total,
            sessions=sessions,
            now=at,
        )


class UsageService:
    @staticmethod
    def counters_on(runtime: Runtime) -> bool:
        policy = runtime.policy
        refunds = policy.refunds
        return (
            policy.privacy.keeps_connection_records
            and policy.privacy.first_order_usage_counters
            and refunds is not None
            and (refunds.max_data_bytes is not None or refunds.max_sessions is not None)
        )

    async def note_open(
        self, runtime: Runtime, account_id: int, leases: Mapping[str, OpenBytes]
    ) -> None:
        """The connections domain's latest view of the account's open connections: what they
        carried that the counter does not have yet (flushed only every few minutes, or at the
        end). The refund rules add it, so a connection still open when a refund is asked for
        counts as much as one that ended."""
        if not self.counters_on(runtime):
            return
        kept = {lid: open_ for lid, open_ in leases.items() if open_.bytes > 0}
        ttl = max((o.expires for o in kept.values()), default=0.0) - runtime.live.clock()

        def step(_old: OpenUsage | None) -> tuple[OpenUsage | None, None]:
            return (OpenUsage(kept) if kept else None), None

        await runtime.live.update(OPEN_USAGE, str(account_id), step, ttl=max(ttl, 1.0))

    async def open_bytes(self, runtime: Runtime, account_id: int) -> int:
        """Bytes of the account's connections still open, not in its counter yet."""
        found = await runtime.live.read(OPEN_USAGE, str(account_id))
        now = runtime.live.clock()
        return sum(o.bytes for o in found.leases.values() if o.expires > now) if found else 0

    def tally(self, session: AsyncSession, runtime: Runtime) -> Tally:
        return Tally(session, runtime)

    async def of_account(self, session: AsyncSession, account_id: int) -> UsageCounter | None:
        return await UsageRepository(session).usage_counter(account_id)

    async def counted_order(
        self, session: AsyncSession, runtime: Runtime, account_id: int
    ) -> CountedOrder | None:
        """The order new usage of this account counts for; None once the first paid order's
        refund window has passed and nothing is counted any more."""
        first_id = await billing_service.first_paid_order_id(session, account_id)
        if first_id is None:
            return CountedOrder(None)
        order = await billing_service.get_order(session, first_id)
        if order is None or self._window_passed(runtime, order, _utcnow()):
            return None
        return CountedOrder(first_id)

    @staticmethod
    def _window_passed(runtime: Runtime, order: Order, now: datetime) -> bool:
        refunds = runtime.policy.refunds
        if refunds is None:
            return True
        # The refund engine counts exactly ``window_days`` after the order as still inside.
        return now > (order.paid_at or order.created_at) + timedelta(days=refunds.window_days)

    async def delete_all_unless_kept(self, session: AsyncSession, runtime: Runtime) -> int:
        """Without counters in the policy (strict mode, say) every counter goes."""
        if self.counters_on(runtime):
            return 0
        return await UsageRepository(session).delete_all_usage_counters()

    async def expire(self, session: AsyncSession, runtime: Runtime) -> int:
        """Tie counters to their first paid order and delete those no refund rule needs.

        A counter goes once its order's refund window has passed (unless a refund request
        of that order still waits for a decision, which reads it again). A counter of an
        account that never paid goes once a trial and a refund window after it was made have
        passed: usage that old would no longer belong to an order bought now. Without counters
        in the policy every counter goes. Returns how many were deleted.
        """
        repository = UsageRepository(session)
        policy = runtime.policy
        if not self.counters_on(runtime) or policy.refunds is None:
            return await repository.delete_all_usage_counters()
        now = _utcnow()
        window = timedelta(days=policy.refunds.window_days)
        trial = timedelta(days=policy.trial.days if policy.trial and policy.trial.enabled else 0)
        deleted = 0
        for counter in await repository.unlinked_usage_counters():
            first_id = await billing_service.first_paid_order_id(session, counter.account_id)
            if first_id is not None:
                counter.order_id = first_id
            elif counter.created_at < now - trial - window:
                await repository.delete_usage_counter(counter.id)
                deleted += 1
        await session.flush()
        return deleted + await repository.delete_usage_counters_ordered_before(now - window)


usage = UsageService()
