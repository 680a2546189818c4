"""Fixtures for subscription tests: a record of the accounts the desired state was asked about."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.runtime import Runtime


@pytest.fixture
def refreshed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Account ids passed to ``refresh_account``, in call order; the real refresh still runs."""
    calls: list[int] = []
    original = desired_state_service.refresh_account

    async def recording(session: AsyncSession, runtime: Runtime, account_id: int) -> None:
        calls.append(account_id)
        await original(session, runtime, account_id)

    monkeypatch.setattr(desired_state_service, "refresh_account", recording)
    return calls
