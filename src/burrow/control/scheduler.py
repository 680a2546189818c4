"""Timed work of the control plane: each job runs every ``scheduler_interval_seconds``.

Jobs are the domains' ``tasks.py`` functions; each takes the runtime and opens its own
unit of work, so one failing job neither stops the others nor the next round.

Several replicas run a scheduler each, yet each job runs on one of them at a time and once
per interval: before a job, the replica takes the job's lease in the live store (one atomic
step; in Redis when replicas share it). A lease lasts one interval from the moment it is
taken and is renewed while the job runs, so the next run, on whichever replica comes first,
is at least one interval later; when the holder dies its lease simply runs out, and another
replica takes the job over at its next round, within one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from burrow.control.accounts.tasks import purge_expired_sessions
from burrow.control.affiliates.tasks import (
    check_payout_batches,
    enforce_affiliate_rules,
    release_held_commissions,
    scheduled_payouts,
)
from burrow.control.billing.tasks import (
    process_webhook_events,
    reduce_handled_webhook_events,
    send_renewal_reminders,
)
from burrow.control.connections.tasks import end_lapsed_leases, purge_connection_records
from burrow.control.desired_state.tasks import prune_change_log
from burrow.control.devices.tasks import purge_address_history
from burrow.control.live import Kind
from burrow.control.nodes.tasks import void_expired_enrollments
from burrow.control.privacy.tasks import clear_old_login_ips, purge_expired_invoices
from burrow.control.refunds.tasks import execute_approved_refunds, recheck_queued_refunds
from burrow.control.refunds.usage.tasks import expire_usage_counters
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.tasks import expire_due_subscriptions

log = logging.getLogger(__name__)

Job = Callable[[Runtime], Awaitable[object]]

JOBS: tuple[tuple[str, Job], ...] = (
    ("expire subscriptions", expire_due_subscriptions),
    ("prune desired-state change log", prune_change_log),
    ("purge expired sessions", purge_expired_sessions),
    ("void expired enrollment tokens", void_expired_enrollments),
    ("end lapsed connection leases", end_lapsed_leases),
    ("purge connection records past their retention", purge_connection_records),
    ("purge the tunnel address history past its retention", purge_address_history),
    ("delete usage counters past their refund window", expire_usage_counters),
    ("handle stored webhook events", process_webhook_events),
    ("reduce handled webhook events past their retention", reduce_handled_webhook_events),
    ("execute approved refunds", execute_approved_refunds),
    ("check queued refund requests against the rules again", recheck_queued_refunds),
    ("forget last-login addresses past their retention", clear_old_login_ips),
    ("purge erased accounts' invoices past their retention", purge_expired_invoices),
    ("send renewal reminders", send_renewal_reminders),
    ("make affiliate commissions past their holding period payable", release_held_commissions),
    ("enforce the affiliate program's refund-rate and inactivity rules", enforce_affiliate_rules),
    ("pay affiliates out, where the policy schedules it", scheduled_payouts),
    ("check unfinished affiliate payout batches with PayPal", check_payout_batches),
)


@dataclass(frozen=True, slots=True)
class JobLease:
    """Which replica runs a job, since when and until when (live store clock)."""

    holder: str
    until: float
    # When this run took the lease; renewals while it runs keep it.
    taken: float = 0.0


JOB_LEASES = Kind("scheduler:job:", JobLease)


def _take(
    holder: str, now: float, seconds: float, *, renew: bool
) -> Callable[[JobLease | None], tuple[JobLease | None, bool]]:
    """The pure step: take a free (or lapsed) lease, or renew our own while the job runs."""

    def step(current: JobLease | None) -> tuple[JobLease | None, bool]:
        free = current is None or current.until <= now
        if free and not renew:
            return JobLease(holder, now + seconds, now), True
        if renew and current is not None and current.holder == holder:
            return JobLease(holder, now + seconds, current.taken), True
        return current, False

    return step


class Scheduler:
    def __init__(self, runtime: Runtime, jobs: tuple[tuple[str, Job], ...] = JOBS) -> None:
        self._runtime = runtime
        self._jobs = jobs
        self._task: asyncio.Task[None] | None = None
        self.replica = uuid.uuid4().hex

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="burrow-scheduler")

    async def _lease(self, name: str, *, renew: bool = False) -> bool:
        live = self._runtime.live
        seconds = self._runtime.settings.scheduler_interval_seconds
        step = _take(self.replica, live.clock(), seconds, renew=renew)
        return await live.update(JOB_LEASES, name, step, ttl=seconds)

    async def _renew_while_running(self, name: str) -> None:
        # Half an interval apart: a lease never lapses under a job that runs long.
        while True:
            await asyncio.sleep(self._runtime.settings.scheduler_interval_seconds / 2)
            await self._lease(name, renew=True)

    async def run_once(self) -> None:
        for name, job in self._jobs:
            try:
                if not await self._lease(name):
                    continue  # another replica ran it less than an interval ago
                renewing = asyncio.create_task(self._renew_while_running(name))
                try:
                    await job(self._runtime)
                finally:
                    renewing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewing
            except Exception:
                log.exception("scheduled job %r failed; it will run again next round", name)

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self._runtime.settings.scheduler_interval_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
