"""Two-factor sign-in (TOTP): enrolment, confirmation, turning it off, and checking a code."""

from __future__ import annotations

import hmac
import io

import pyotp
import segno
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import TotpEnrolment
from burrow.control.accounts.service.errors import TotpStateConflict, WrongTotpCode
from burrow.control.accounts.service.notifications import OwnerNotice, notify_owner
from burrow.control.accounts.service.throttling import LoginThrottle
from burrow.control.models import Account, utcnow
from burrow.control.runtime import Runtime


def _qr_svg(data: str) -> str:
    buffer = io.BytesIO()
    segno.make(data, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


async def accept_totp(repo: AccountRepository, account: Account, code: str) -> bool:
    """A code of the previous, current or next 30 s step, each step usable once."""
    if account.totp_secret is None:
        return False
    totp = pyotp.TOTP(account.totp_secret)
    current = totp.timecode(utcnow())
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return await repo.claim_totp_step(account, step)
    return False


class TwoFactorService:
    async def start_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> TotpEnrolment:
        if account.totp_enabled:
            raise TotpStateConflict(
                "Two-factor sign-in is already on; turn it off first to enrol a new app."
            )
        secret = pyotp.random_base32()
        account.totp_secret = secret
        account.totp_last_step = None
        uri = pyotp.TOTP(secret).provisioning_uri(
            name=account.email, issuer_name=runtime.policy.provider.name
        )
        await session.flush()
        return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    def pending_enrolment(self, runtime: Runtime, account: Account) -> TotpEnrolment | None:
        """An enrolment started and not yet confirmed, to show its QR code again (the web)."""
        if account.totp_enabled or account.totp_secret is None:
            return None
        uri = pyotp.TOTP(account.totp_secret).provisioning_uri(
            name=account.email, issuer_name=runtime.policy.provider.name
        )
        return TotpEnrolment(secret=account.totp_secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    async def confirm_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        if account.totp_enabled:
            raise TotpStateConflict("Two-factor sign-in is already on.")
        if account.totp_secret is None:
            raise TotpStateConflict(
                "Start the enrolment first (POST /api/v1/accounts/me/totp), then confirm with "
                "a code."
            )
        await self._require_code(session, runtime, account, code)
        account.totp_enabled = True
        notify_owner(session, runtime, account.email, OwnerNotice.two_factor_on)

    async def disable_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        if not account.totp_enabled:
            raise TotpStateConflict("Two-factor sign-in is not on.")
        await self._require_code(session, runtime, account, code)
        account.totp_enabled = False
        account.totp_secret = None
        account.totp_last_step = None
        notify_owner(session, runtime, account.email, OwnerNotice.two_factor_off)

    async def _require_code(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        throttle = LoginThrottle(runtime)
        await throttle.attempt_signed_in(account.email)
        if not await accept_totp(AccountRepository(session), account, code):
            await throttle.failed(account.email, account.email)
            raise WrongTotpCode()


two_factor_service = TwoFactorService()
