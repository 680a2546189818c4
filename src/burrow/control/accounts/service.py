"""Accounts: registration, sign-in, sessions, two-factor and status. (to be built)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.errors import NotAuthenticated
from burrow.control.models import Account
from burrow.control.runtime import Runtime


class AccountService:
    async def authenticate(self, session: AsyncSession, runtime: Runtime, token: str) -> Account:
        raise NotAuthenticated("Your session has expired; sign in again.")


account = AccountService()
