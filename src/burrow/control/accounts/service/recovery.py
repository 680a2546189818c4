"""Getting back in: forgotten passwords (a one-time link) and two-factor recovery codes.

A reset link is a random token whose SHA-256 is stored; it works once (claimed by a conditional
UPDATE, so two racing uses cannot both win) and for ``RESET_TTL``. Asking for one answers the
same, in the same time, whether or not the address has an account: the request only looks the
address up, and the link is made (in a unit of work of its own) and mailed after the answer, so
the answer waits neither on the extra writes nor on the mail server. Recovery codes are ten
random codes, stored hashed, each usable once instead of a TOTP code.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import normalise_email
from burrow.control.accounts.service.errors import (
    ResetLinkGone,
    ResetLinkInvalid,
    ResetThrottled,
)
from burrow.control.accounts.service.notifications import OwnerNotice, notify_owner
from burrow.control.accounts.service.passwords import check_password, new_password_hash
from burrow.control.accounts.service.throttling import LoginThrottle
from burrow.control.db import after_commit, unit_of_work
from burrow.control.models import Account, AccountStatus, PasswordReset, utcnow
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token

RESET_PASSWORD_PATH = "/reset-password"  # noqa: S105 (a page, not a password)
RESET_TTL = timedelta(hours=1)
RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: the codes are read off paper and typed by hand.
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CODE_SHAPE = re.compile(r"^[a-z0-9]{10}$")

log = logging.getLogger(__name__)

# Emails sent in the background keep a reference here until they are done.
_background: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def _normalise_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def _hash_recovery_code(code: str) -> str:
    return hash_token(f"recovery-code:{_normalise_code(code)}")


async def accept_recovery_code(
    repo: AccountRepository, runtime: Runtime, account: Account, code: str
) -> bool:
    """Use one of the account's unused recovery codes; false if ``code`` is none of them.

    The owner is told (after commit) that a code was used, and how many are left."""
    if not _CODE_SHAPE.match(_normalise_code(code)):
        return False
    if not await repo.claim_recovery_code(account.id, _hash_recovery_code(code), utcnow()):
        return False
    remaining = await repo.count_recovery_codes(account.id)
    notify_owner(
        repo.session, runtime, account.email, OwnerNotice.recovery_code_used, remaining=remaining
    )
    return True


class RecoveryService:
    # Forgotten password.

    async def request_password_reset(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        email: str,
        client_address: str | None = None,
    ) -> None:
        """Email a one-time link to set a new password, if ``email`` has an account.

        Every request counts against the address and the client (like failed sign-ins), known
        address or not, so the throttle says nothing about who has an account either.
        """
        email = str(normalise_email(email))
        throttle = LoginThrottle(runtime)
        limits = runtime.rate_limits
        settings = runtime.settings
        # Buckets of their own (the sign-in's sizes): asking for links locks no one's sign-in.
        refused = await limits.hit(
            limits.parse(settings.login_limit_client),
            "reset:c",
            throttle.client_key(client_address),
        ) or await limits.hit(
            limits.parse(settings.login_limit_account_client),
            "reset:a",
            throttle.account_key(email),
        )
        if refused is not None:
            raise ResetThrottled(
                "Too many requests for a new password from here or for this address; wait "
                f"{refused.seconds} seconds and try again.",
                retry_after=refused.retry_after,
                retry_after_seconds=refused.seconds,
            )
        account = await AccountRepository(session).get_by_email(email)
        if account is None or account.status in (AccountStatus.erased, AccountStatus.terminated):
            return
        # The link is made and mailed after the answer, in its own unit of work: a known
        # address then costs the request exactly what an unknown one does (one lookup).
        account_id = account.id
        after_commit(session, lambda: _in_background(self._send_link(runtime, account_id)))

    async def _send_link(self, runtime: Runtime, account_id: int) -> None:
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                repo = AccountRepository(session)
                account = await repo.get(account_id)
                if account is None:
                    return
                link = await self._new_link(repo, runtime, account)
                to = account.email
        except Exception:
            log.exception("password_reset.link_failed")
            return
        provider = runtime.policy.provider.name
        hours = int(RESET_TTL.total_seconds() // 3600)
        body = (
            f"Hello,\n\nsomeone (we hope you) asked to set a new password for your {provider} "
            f"account. Open this link to choose one:\n\n{link}\n\n"
            f"The link works once and for {hours} hour. If you did not ask for it, ignore this "
            "message: your password stays as it is.\n"
        )
        await runtime.mailer.send(to, f"Set a new password for {provider}", body)

    async def _new_link(self, repo: AccountRepository, runtime: Runtime, account: Account) -> str:
        now = utcnow()
        await repo.expire_password_resets(account.id, now)
        token = new_token()
        await repo.add_password_reset(
            PasswordReset(
                account_id=account.id, token_hash=hash_token(token), expires_at=now + RESET_TTL
            )
        )
        return runtime.settings.public_link(f"{RESET_PASSWORD_PATH}?token={token}")

    async def check_reset_link(self, session: AsyncSession, token: str) -> Account:
        """The account a still-usable link is for (the web shows the form only then)."""
        _row, account = await self._reset_row(AccountRepository(session), token)
        return account

    async def _reset_row(
        self, repo: AccountRepository, token: str
    ) -> tuple[PasswordReset, Account]:
        row = await repo.get_password_reset(hash_token(token))
        account = await repo.get(row.account_id) if row is not None else None
        if (
            row is None
            or account is None
            or account.status in (AccountStatus.erased, AccountStatus.terminated)
        ):
            raise ResetLinkInvalid(
                "This link to set a new password is not valid; ask for a new one."
            )
        if row.used_at is not None:
            raise ResetLinkGone("This link was already used; ask for a new one if you need it.")
        if row.expires_at <= utcnow():
            raise ResetLinkGone(
                "This link has expired (links work for one hour); ask for a new one."
            )
        return row, account

    async def reset_password(
        self, session: AsyncSession, runtime: Runtime, *, token: str, new_password: str
    ) -> Account:
        """Set a new password with a link; every session of the account ends."""
        repo = AccountRepository(session)
        row, account = await self._reset_row(repo, token)
        check_password(new_password, account.email)  # before the link is spent
        now = utcnow()
        if not await repo.claim_password_reset(row, now):
            raise ResetLinkGone("This link was already used; ask for a new one if you need it.")
        account.password_hash = await new_password_hash(new_password)
        await repo.expire_password_resets(account.id, now)
        await repo.delete_sessions(account.id)
        notify_owner(session, runtime, account.email, OwnerNotice.password_changed)
        return account

    async def operator_reset_link(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> str:
        """A link for an operator to hand to a customer who cannot receive email."""
        return await self._new_link(AccountRepository(session), runtime, account)

    # Two-factor recovery codes.

    async def new_recovery_codes(self, session: AsyncSession, account: Account) -> list[str]:
        """Ten fresh codes, replacing any earlier set; shown once and stored hashed."""
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        await AccountRepository(session).replace_recovery_codes(
            account.id, [_hash_recovery_code(code) for code in codes]
        )
        return codes

    async def recovery_codes_left(self, session: AsyncSession, account_id: int) -> int:
        return await AccountRepository(session).count_recovery_codes(account_id)


recovery_service = RecoveryService()
