"""Sign-in attempts, counted before they are checked, in the rate-limit store (RAM by default).

Three moving-window buckets guard a password (OWASP ASVS v4 2.2.1), none of them a lockout:

- one account from one client (``login_limit_account_client``, five in a quarter of an hour):
  the guesser slows down; the owner on another client is not touched, and a success clears it;
- one account from everywhere (``login_limit_account``): wide, so it bites only under a
  distributed attack, and then only until the window moves on; a client that signed in to the
  account before (remembered for ``login_known_client_days``) is not held back by it, so the
  owner's own browser gets in even then;
- one client, every account (``login_limit_client``): wide too, since many people may sit
  behind one address.

Each attempt is counted atomically before the password is verified, so twenty at once get no
further than the limit. The owner is emailed when their account sees many failures
(``login_failure_notice``), at most once in that window.

A client is its address (resolved from trusted proxies by the app), turned into a keyed digest
at once; the address itself is never stored, logged or written to disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from limits import RateLimitItemPerSecond

from burrow.control.accounts.service.errors import LoginThrottled
from burrow.control.accounts.service.notifications import failed_sign_ins_notice
from burrow.control.ratelimit import Refused
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest

# A signed-in person proving themselves again (password change, 2FA codes) has no client
# bucket of their own: the session is the client.
SIGNED_IN = "signed-in"

# Emails sent while the request itself fails (and rolls back), so not tied to its commit.
_background: set[asyncio.Task[None]] = set()


def _in_background(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _throttled(refused: Refused) -> LoginThrottled:
    return LoginThrottled(
        f"Too many sign-in attempts; wait {refused.seconds} seconds and try again.",
        retry_after=refused.retry_after,
        retry_after_seconds=refused.seconds,
    )


class LoginThrottle:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limits = runtime.rate_limits
        settings = runtime.settings
        self._secret = settings.secret_key.get_secret_value()
        self._account_client = self.limits.parse(settings.login_limit_account_client)
        self._account = self.limits.parse(settings.login_limit_account)
        self._client = self.limits.parse(settings.login_limit_client)
        self._failures = self.limits.parse(settings.login_failure_notice)

    def account_key(self, email: str) -> str:
        return keyed_digest(self._secret, f"login-account:{email}")

    def client_key(self, address: str | None) -> str:
        return keyed_digest(self._secret, f"login-client:{address or 'unknown'}")

    async def attempt(self, email: str, client_address: str | None) -> None:
        """Count a sign-in attempt; ``LoginThrottled`` if a bucket is full (then the password
        is not looked at). The narrowest bucket first, so that a guesser's refused attempts
        do not fill the account's wide bucket for everyone."""
        account, client = self.account_key(email), self.client_key(client_address)
        refused = await self.limits.hit(
            self._account_client, "login:ac", account, client
        ) or await self.limits.hit(self._client, "login:c", client)
        if refused is None and not await self.limits.remembered(self._known(account, client)):
            refused = await self.limits.hit(self._account, "login:a", account)
        if refused is not None:
            raise _throttled(refused)

    async def attempt_signed_in(self, email: str) -> None:
        """Count a signed-in person's password or code check (one bucket per account)."""
        await self.attempt(email, SIGNED_IN)

    async def succeeded(self, email: str, client_address: str | None) -> None:
        # Only this account on this client starts afresh: one good password must not reset
        # the client's count over every account, nor the account's count from everywhere.
        account, client = self.account_key(email), self.client_key(client_address)
        await self.limits.clear(self._account_client, "login:ac", account, client)
        days = self.runtime.settings.login_known_client_days
        if days > 0 and client_address is not None and client_address != SIGNED_IN:
            await self.limits.remember(self._known(account, client), days * 86400)

    @staticmethod
    def _known(account: str, client: str) -> str:
        return f"login:known/{account}/{client}"

    async def failed(self, email: str, owner: str | None) -> None:
        """A wrong password or code for ``email``; ``owner`` is the account's address when it
        exists. Past ``login_failure_notice`` the owner is emailed, once in that window."""
        if owner is None:
            return
        account = self.account_key(email)
        if await self.limits.hit(self._failures, "login:f", account) is None:
            return
        once = [RateLimitItemPerSecond(1, max(item.get_expiry() for item in self._failures))]
        if await self.limits.hit(once, "login:notice", account) is None:
            _in_background(failed_sign_ins_notice(self.runtime, owner))
