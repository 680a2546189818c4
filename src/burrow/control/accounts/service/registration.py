"""Registration and email verification, including a change of address."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import AccountCreate, normalise_email
from burrow.control.accounts.service.errors import (
    AgeAttestationRefused,
    AlreadyVerified,
    EmailTaken,
    TermsNotAccepted,
    VerificationLinkGone,
    VerificationLinkInvalid,
)
from burrow.control.accounts.service.notifications import OwnerNotice, notify_owner
from burrow.control.accounts.service.passwords import check_new_password, new_password_hash
from burrow.control.accounts.service.signin import signin_service
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.db import after_commit
from burrow.control.errors import InvalidInput, TooManyRequests
from burrow.control.live import Kind
from burrow.control.models import (
    Account,
    AccountStatus,
    AgeAttestation,
    EmailVerification,
    ReferralHow,
    utcnow,
)
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, keyed_digest, new_token
from burrow.control.terms.service import terms as terms_service

# Where the emailed link points: the web page, since a person clicks it in a browser. The
# page verifies through this same service; API clients keep GET/POST
# /api/v1/accounts/verify-email with the token from the link.
VERIFY_EMAIL_PATH = "/verify-email"


@dataclass(frozen=True, slots=True)
class ResendWait:
    """A verification link was sent; another waits until ``until`` (live store clock)."""

    until: float


RESEND_WAITS = Kind("verify-resend:", ResendWait)


def _take_resend(
    now: float, pause: float
) -> Callable[[ResendWait | None], tuple[ResendWait | None, float]]:
    """The pure step: the seconds still to wait (0: sent now, and the next one waits)."""

    def step(current: ResendWait | None) -> tuple[ResendWait | None, float]:
        if current is not None and current.until > now:
            return current, current.until - now
        return ResendWait(now + pause), 0.0

    return step


def sign_up_answer(runtime: Runtime, email: str) -> str:
    """The one answer to a sign-up, whether the address was free or already had an account."""
    if runtime.settings.mail_to_output:
        return (
            f"Check your mail: no mail server is set up, so the message to {email} is in the "
            "server's output (the terminal running burrow). Open the link in it to confirm "
            "your address, then sign in."
        )
    return (
        f"Check your mail: we sent a message to {email}. Open the link in it to confirm "
        "your address, then sign in."
    )


class RegistrationService:
    async def sign_up(
        self,
        session: AsyncSession,
        runtime: Runtime,
        data: AccountCreate,
        *,
        client_address: str | None = None,
        referral_cookie: str | None = None,
    ) -> str:
        """A sign-up from the API or the website; returns the normalised address.

        It answers alike whether the address is free or taken, so that no one learns who has
        an account: a new account gets its verification link, the owner of a taken address an
        email saying someone tried. Counted per client before anything is looked at.
        """
        limits = runtime.rate_limits
        client = keyed_digest(
            runtime.settings.secret_key.get_secret_value(), f"signup-client:{client_address}"
        )
        refused = await limits.hit(
            limits.parse(runtime.settings.signup_limit_client), "signup:c", client
        )
        if refused is not None:
            raise TooManyRequests(
                f"Too many sign-ups from your network; try again in {refused.seconds} seconds.",
                retry_after=refused.retry_after,
            )
        email = str(normalise_email(data.email))
        try:
            async with session.begin_nested():
                await self.register(session, runtime, data, referral_cookie=referral_cookie)
        except EmailTaken:
            # As long as a new account takes (the password is hashed either way).
            await new_password_hash(data.password)
            notify_owner(session, runtime, email, OwnerNotice.signup_attempt)
        return email

    async def register(
        self,
        session: AsyncSession,
        runtime: Runtime,
        data: AccountCreate,
        *,
        referral_cookie: str | None = None,
    ) -> Account:
        policy = runtime.policy
        email = str(normalise_email(data.email))
        if data.accept_terms_version != policy.terms.version:
            raise TermsNotAccepted(
                f"Read and accept the current terms, version {policy.terms.version}: send "
                f'accept_terms_version "{policy.terms.version}".',
                field="accept_terms_version",
                current_terms_version=policy.terms.version,
            )
        self._check_age(policy, data.age_attestation)
        await check_new_password(data.password, email)
        repo = AccountRepository(session)
        if await repo.get_by_email(email) is not None:
            raise EmailTaken()
        now = utcnow()
        account = Account(
            email=email,
            password_hash=await new_password_hash(data.password),
            status=AccountStatus.active,
            is_admin=False,
            totp_enabled=False,
            age_attestation=data.age_attestation,
            terms_version_accepted=policy.terms.version,
            terms_accepted_at=now,
            created_at=now,
        )
        try:
            await repo.add(account)
        except IntegrityError as exc:  # the same address registered a moment ago
            raise EmailTaken() from exc
        await terms_service.record_acceptance(session, account.id, policy.terms.version, "signup")
        # The referral sticks to the account from its first moment: a typed code wins over
        # the referral link's cookie.
        if data.referral_code:
            await affiliate_service.attach(
                session, runtime, account.id, data.referral_code, ReferralHow.code
            )
        elif referral_cookie:
            await affiliate_service.attach(
                session, runtime, account.id, referral_cookie, ReferralHow.link
            )
        await self._send_verification(session, runtime, account)
        return account

    @staticmethod
    def _check_age(policy: Policy, attestation: AgeAttestation | None) -> None:
        age = policy.age
        if attestation is None:
            if age.attestation_required:
                raise AgeAttestationRefused(
                    f"Confirm your age: send age_attestation 'adult' if you are "
                    f"{age.minimum_age} or older"
                    + (", or 'guardian_consent'" if age.allow_guardian_consent else "")
                    + (", or 'emancipated_minor'" if age.allow_emancipated_minor else "")
                    + ".",
                    field="age_attestation",
                )
            return
        if attestation is AgeAttestation.guardian_consent and not age.allow_guardian_consent:
            raise AgeAttestationRefused(
                f"This provider needs you to be {age.minimum_age} or older; a guardian's "
                "consent is not accepted.",
                field="age_attestation",
            )
        if attestation is AgeAttestation.emancipated_minor and not age.allow_emancipated_minor:
            raise AgeAttestationRefused(
                f"This provider needs you to be {age.minimum_age} or older; emancipated minors "
                "are not accepted.",
                field="age_attestation",
            )

    async def _send_verification(
        self, session: AsyncSession, runtime: Runtime, account: Account, *, email: str | None = None
    ) -> None:
        """Send a one-time link to ``email`` (default: the account's own address)."""
        repo = AccountRepository(session)
        now = utcnow()
        settings = runtime.settings
        await repo.expire_verifications(account.id, now)
        token = new_token()
        to = email or account.email
        await repo.add_verification(
            EmailVerification(
                account_id=account.id,
                email=to,
                token_hash=hash_token(token),
                expires_at=now + timedelta(hours=settings.verification_ttl_hours),
                created_at=now,
            )
        )
        link = settings.public_link(f"{VERIFY_EMAIL_PATH}?token={token}")
        provider = runtime.policy.provider.name
        subject = f"Confirm your email address for {provider}"
        purpose = (
            f"you asked to make it the address of your {provider} account"
            if to != account.email
            else f"it belongs to your {provider} account"
        )
        body = (
            f"Hello,\n\nplease confirm that this address is yours ({purpose}) by opening this "
            f"link:\n\n{link}\n\n"
            f"The link works once and for {settings.verification_ttl_hours} hours. If you did "
            "not ask for this, ignore this message.\n"
        )
        after_commit(session, lambda: runtime.mailer.send(to, subject, body))

    async def verify_email(
        self, session: AsyncSession, token: str, runtime: Runtime | None = None
    ) -> Account:
        """Use a link: it proves its address. A link sent for a new address (an email change)
        makes that address the account's, and the old address is told (with ``runtime``).

        An account has at most one live link at a time (sending one expires the others), so
        a link for an address other than the account's can only be the latest change asked
        for; an older link for a former address is already used or expired.
        """
        repo = AccountRepository(session)
        row = await repo.get_verification(hash_token(token))
        account = await repo.get(row.account_id) if row is not None else None
        if row is None or account is None or account.status is AccountStatus.erased:
            raise VerificationLinkInvalid(
                "This verification link is not valid; sign in and ask for a new link."
            )
        now = utcnow()
        if row.used_at is not None:
            raise VerificationLinkGone(
                "This verification link was already used. If your address is not verified "
                "yet, sign in and ask for a new link."
            )
        if row.expires_at <= now:
            raise VerificationLinkGone(
                "This verification link has expired; sign in and ask for a new link."
            )
        row.used_at = now
        if account.email != row.email:
            old = account.email
            if await repo.get_by_email(row.email) is not None:
                raise EmailTaken()
            account.email = row.email
            account.email_verified_at = now
            try:
                await session.flush()
            except IntegrityError as exc:  # taken by a sign-up a moment ago
                raise EmailTaken() from exc
            if runtime is not None:
                self._send_change_notice(session, runtime, old, row.email)
            return account
        if account.email_verified_at is None:
            account.email_verified_at = now
        return account

    async def request_email_change(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        *,
        new_email: str,
        password: str,
    ) -> str:
        """Send a link to ``new_email``; the address changes only when the link is used.

        Returns the normalised new address. Any older unused link stops working.
        """
        await signin_service.confirm_identity(session, runtime, account, password=password)
        email = str(normalise_email(new_email))
        if email == account.email:
            raise InvalidInput(
                "That is already your email address; give the new one.", field="new_email"
            )
        existing = await AccountRepository(session).get_by_email(email)
        if existing is not None:
            raise EmailTaken()
        await self._send_verification(session, runtime, account, email=email)
        return email

    @staticmethod
    def _send_change_notice(session: AsyncSession, runtime: Runtime, old: str, new: str) -> None:
        provider = runtime.policy.provider.name
        contact = runtime.policy.provider.contact_email
        subject = f"Your {provider} email address was changed"
        body = (
            f"Hello,\n\nthe email address of your {provider} account was changed from this "
            f"address to {new}. From now on, messages about the account go there.\n\n"
            f"If you did not ask for this, write to {contact} at once.\n"
        )
        after_commit(session, lambda: runtime.mailer.send(old, subject, body))

    async def resend_verification(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> None:
        if account.email_verified_at is not None:
            raise AlreadyVerified("Your email address is already verified.")
        pause = runtime.settings.verification_resend_seconds
        step = _take_resend(runtime.live.clock(), pause)
        # One atomic step, so two clicks on two replicas cannot both send a link.
        wait = await runtime.live.update(RESEND_WAITS, str(account.id), step, ttl=pause)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"A link was sent a moment ago; check your inbox or ask again in {seconds} "
                "seconds.",
                retry_after=wait,
            )
        await self._send_verification(session, runtime, account)

    async def send_verification(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> None:
        """A new link to the account's address, the older ones expired (for operators)."""
        await self._send_verification(session, runtime, account)


registration_service = RegistrationService()
