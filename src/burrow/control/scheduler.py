"""Timed work of the control plane: each job runs every ``scheduler_interval_seconds``.

Jobs are the domains' ``tasks.py`` functions; each takes the runtime and opens its own
unit of work, so one failing job neither stops the others nor the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from burrow.control.accounts.tasks import purge_expired_sessions
from burrow.control.affiliates.tasks import (
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
)


class Scheduler:
    def __init__(self, runtime: Runtime, jobs: tuple[tuple[str, Job], ...] = JOBS) -> None:
        self._runtime = runtime
        self._jobs = jobs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="burrow-scheduler")

    async def run_once(self) -> None:
        for name, job in self._jobs:
            try:
                await job(self._runtime)
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
