"""Timed work of the privacy center, for the scheduler.

- Forget last-login addresses past ``privacy.last_login_ip_retention_days`` (all of them when
  the policy keeps none).
- Delete erased accounts' invoices once ``privacy.invoice_retention_years`` have passed.
"""

from __future__ import annotations

from burrow.control.db import unit_of_work
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.runtime import Runtime


async def clear_old_login_ips(runtime: Runtime) -> int:
    """Returns how many accounts' last-login address was forgotten."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await privacy_service.clear_old_login_ips(session, runtime)


async def purge_expired_invoices(runtime: Runtime) -> int:
    """Returns how many orders of erased accounts were deleted."""
    async with unit_of_work(runtime.sessionmaker) as session:
        return await privacy_service.purge_expired_invoices(session, runtime)
