"""The one place that turns rows into what every node must serve. (being built)

Domains call ``desired_state_service.refresh_account(session, runtime, account_id)`` after any
change that may alter which of an account's devices may use the VPN (device added, removed or
re-keyed; subscription started, expired or cancelled; account suspended, unsuspended,
terminated). It records the difference as new revisions and wakes node long polls after commit.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.runtime import Runtime


class DesiredStateService:
    async def refresh_account(self, session: AsyncSession, runtime: Runtime, account_id: int) -> None:
        return None


desired_state = DesiredStateService()
