"""Accounts: registration, email verification, sign-in and sessions, two-factor, status.

Callers: the accounts and admin endpoints, ``deps.current_account`` (``authenticate``) and the
CLI. Failed sign-ins are counted in the live store only (RAM), per account and per client; the
client's address is turned into a keyed digest at once and never stored or logged.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    AccountCreate,
    Email,
    TotpEnrolment,
    normalise_email,
)
from burrow.control.db import after_commit
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.errors import (
    BurrowError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    AgeAttestation,
    EmailVerification,
    utcnow,
)
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.security import (
    DUMMY_PASSWORD_HASH,
    hash_password,
    hash_token,
    keyed_digest,
    new_token,
    password_needs_rehash,
    verify_password,
)
from burrow.control.terms.service import terms as terms_service

# Where the emailed link points: the web page, since a person clicks it in a browser. The
# page verifies through this same service; API clients keep GET/POST
# /api/v1/accounts/verify-email with the token from the link.
VERIFY_EMAIL_PATH = "/verify-email"
SESSION_EXPIRED = "Your session has expired; sign in again."
LOGIN_FAILED = "Wrong email or password."


class EmailTaken(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "An account with this email already exists; sign in or reset your password.",
            field="email",
        )


class WeakPassword(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, field="password")


class TermsNotAccepted(InvalidInput):
    pass


class AgeAttestationRefused(InvalidInput):
    pass


class VerificationLinkInvalid(BurrowError):
    status = 400
    title = "Invalid link"
    type_slug = "verification-link-invalid"


class VerificationLinkGone(BurrowError):
    status = 410
    title = "Link no longer valid"
    type_slug = "verification-link-gone"


class AlreadyVerified(Conflict):
    pass


class LoginFailed(NotAuthenticated):
    pass


class SecondFactorRequired(NotAuthenticated):
    title = "Two-factor code needed"
    type_slug = "totp-required"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="totp_code", totp_required=True)


class AccountTerminated(Forbidden):
    def __init__(self) -> None:
        super().__init__(
            "This account has been terminated and cannot be used; contact support if you "
            "think this is a mistake."
        )


class LoginThrottled(TooManyRequests):
    pass


class WrongPassword(InvalidInput):
    def __init__(self, field: str = "current_password") -> None:
        super().__init__("Your current password is not right.", field=field)


class WrongTotpCode(InvalidInput):
    def __init__(self, field: str = "code") -> None:
        super().__init__(
            "That code is not right or was already used; enter the current code from your "
            "authenticator app.",
            field=field,
        )


class TotpStateConflict(Conflict):
    pass


class AccountNotFound(NotFound):
    pass


class StatusChangeRefused(Conflict):
    pass


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    account: Account
    # The web's first step: the password was right, the session waits for its TOTP code.
    needs_second_factor: bool = False


@dataclass(frozen=True)
class AccountSearch:
    items: list[Account]
    total: int


_email_adapter: TypeAdapter[str] = TypeAdapter(Email)


def parse_email(raw: str) -> str:
    """Validate and normalise an address typed outside the API (the CLI)."""
    try:
        return _email_adapter.validate_python(raw)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InvalidInput(
            f"'{raw}' is not a usable email address: {reason}", field="email"
        ) from exc


def check_password(password: str, email: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise WeakPassword(f"Choose a password of at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise WeakPassword(f"A password has at most {PASSWORD_MAX} characters.")
    if password.strip().lower() == email.strip().lower():
        raise WeakPassword("Your password must not be your email address.")


async def _hash(password: str) -> str:
    # argon2 is slow on purpose; keep it off the event loop.
    return await asyncio.to_thread(hash_password, password)


async def _verify(stored_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, stored_hash, password)


class _LoginThrottle:
    """Failure counters and lockouts in the live store, per account and per client.

    After ``max`` failures within the window a key is locked for the lockout time, which
    doubles with every further lockout of the same key (up to the cap) and is forgotten a day
    later. Keys are keyed digests: neither an address nor an IP is ever a key.
    """

    STRIKE_MEMORY_SECONDS = 24 * 3600.0

    def __init__(self, runtime: Runtime) -> None:
        self.live = runtime.live
        self.settings = runtime.settings
        self._secret = runtime.settings.secret_key.get_secret_value()

    def account_key(self, email: str) -> tuple[str, int]:
        digest = keyed_digest(self._secret, f"login-account:{email}")
        return f"login:a:{digest}", self.settings.login_max_failures

    def client_key(self, address: str | None) -> tuple[str, int]:
        digest = keyed_digest(self._secret, f"login-client:{address or 'unknown'}")
        return f"login:c:{digest}", self.settings.login_client_max_failures

    def check(self, keys: list[tuple[str, int]]) -> None:
        waits = [self.live.ttl(f"{key}:lock") for key, _limit in keys]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None and wait > 0:
            seconds = max(1, round(wait))
            raise LoginThrottled(
                f"Too many failed sign-in attempts; wait {seconds} seconds and try again.",
                retry_after=wait,
                retry_after_seconds=seconds,
            )

    def failed(self, keys: list[tuple[str, int]]) -> None:
        settings = self.settings
        for key, limit in keys:
            failures = self.live.incr(f"{key}:fails", ttl=settings.login_failure_window_seconds)
            if failures < limit:
                continue
            strikes = int(self.live.get(f"{key}:strikes") or 0) + 1
            self.live.set(f"{key}:strikes", strikes, ttl=self.STRIKE_MEMORY_SECONDS)
            lockout = min(
                settings.login_lockout_seconds * 2 ** min(strikes - 1, 32),
                max(settings.login_lockout_max_seconds, settings.login_lockout_seconds),
            )
            self.live.set(f"{key}:lock", True, ttl=lockout)
            self.live.delete(f"{key}:fails")

    def succeeded(self, account_key: tuple[str, int]) -> None:
        # Only the account is cleared: one good password must not reset a client's count.
        key, _limit = account_key
        self.live.delete(f"{key}:fails")
        self.live.delete(f"{key}:strikes")


def _qr_svg(data: str) -> str:
    buffer = io.BytesIO()
    segno.make(data, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


class AccountService:
    # Registration and email verification.

    async def register(
        self, session: AsyncSession, runtime: Runtime, data: AccountCreate
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
        check_password(data.password, email)
        repo = AccountRepository(session)
        if await repo.get_by_email(email) is not None:
            raise EmailTaken()
        now = utcnow()
        account = Account(
            email=email,
            password_hash=await _hash(data.password),
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
        await self.confirm_identity(session, runtime, account, password=password)
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

    async def confirm_identity(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        *,
        password: str,
        totp_code: str | None = None,
        require_totp: bool = False,
    ) -> None:
        """The signed-in person proves they are the account's owner again, for a change that
        cannot be undone (an email change, erasure). Failures count like failed sign-ins."""
        throttle = _LoginThrottle(runtime)
        keys = [throttle.account_key(account.email)]
        throttle.check(keys)
        if not await _verify(account.password_hash, password):
            throttle.failed(keys)
            raise WrongPassword("password")
        if require_totp and account.totp_enabled:
            if not totp_code:
                raise SecondFactorRequired("Enter the 6-digit code from your authenticator app.")
            if not await self._accept_totp(AccountRepository(session), account, totp_code):
                throttle.failed(keys)
                raise WrongTotpCode("totp_code")

    async def resend_verification(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> None:
        if account.email_verified_at is not None:
            raise AlreadyVerified("Your email address is already verified.")
        key = f"verify-resend:{account.id}"
        wait = runtime.live.ttl(key)
        if wait is not None and wait > 0:
            seconds = max(1, round(wait))
            raise TooManyRequests(
                f"A link was sent a moment ago; check your inbox or ask again in {seconds} "
                "seconds.",
                retry_after=wait,
            )
        runtime.live.set(key, True, ttl=runtime.settings.verification_resend_seconds)
        await self._send_verification(session, runtime, account)

    # Sessions.

    async def sign_in(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        email: str,
        password: str,
        totp_code: str | None = None,
        client_address: str | None = None,
    ) -> SignedIn:
        email = str(normalise_email(email))
        throttle = _LoginThrottle(runtime)
        account_key = throttle.account_key(email)
        keys = [account_key, throttle.client_key(client_address)]
        throttle.check(keys)
        repo = AccountRepository(session)
        account = await repo.get_by_email(email)
        if account is not None and account.status is AccountStatus.erased:
            account = None  # its placeholder address is no one's; answer as for an unknown one
        # An unknown address costs the same time as a known one.
        matches = await _verify(
            account.password_hash if account is not None else DUMMY_PASSWORD_HASH, password
        )
        if account is None or not matches:
            throttle.failed(keys)
            raise LoginFailed(LOGIN_FAILED)
        if account.status is AccountStatus.terminated:
            raise AccountTerminated()
        if account.totp_enabled:
            if not totp_code:
                raise SecondFactorRequired("Enter the 6-digit code from your authenticator app.")
            if not await self._accept_totp(repo, account, totp_code):
                throttle.failed(keys)
                raise SecondFactorRequired(
                    "That code is not right or was already used; enter the current code from "
                    "your authenticator app."
                )
        throttle.succeeded(account_key)
        self._remember_login_address(runtime.policy, account, client_address)
        if password_needs_rehash(account.password_hash):
            account.password_hash = await _hash(password)
        token = new_token()
        expires_at = utcnow() + timedelta(hours=runtime.settings.session_ttl_hours)
        await repo.add_session(
            AccountSession(
                account_id=account.id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                needs_second_factor=False,
                second_factor_at=utcnow() if account.totp_enabled else None,
            )
        )
        return SignedIn(token=token, expires_at=expires_at, account=account)

    @staticmethod
    def _remember_login_address(
        policy: Policy, account: Account, client_address: str | None
    ) -> None:
        """Keep the sign-in's address and time only where ``privacy.store_last_login_ip`` is on
        (fraud prevention); the purge job forgets it after the policy's retention. It is never
        logged: the log filter would remove it anyway, and nothing here writes it."""
        if not policy.privacy.store_last_login_ip or client_address is None:
            return
        try:
            address = ipaddress.ip_address(client_address.strip().strip("[]"))
        except ValueError:
            return  # not an address (a test client's name, a Unix socket): nothing to keep
        account.last_login_ip = str(address)
        account.last_login_ip_at = utcnow()

    async def authenticate(self, session: AsyncSession, runtime: Runtime, token: str) -> Account:
        found = await AccountRepository(session).get_session(hash_token(token))
        if found is None:
            raise NotAuthenticated(SESSION_EXPIRED)
        row, account = found
        if (
            row.expires_at <= utcnow()
            or row.needs_second_factor
            or account.status is AccountStatus.erased
        ):
            raise NotAuthenticated(SESSION_EXPIRED)
        if account.status is AccountStatus.terminated:
            raise AccountTerminated()
        return account

    # The web's two-step sign-in: the password first, then (with two-factor on) the code.
    PENDING_SECOND_FACTOR_SECONDS = 600

    async def sign_in_first_step(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        email: str,
        password: str,
        client_address: str | None = None,
    ) -> SignedIn:
        """Like ``sign_in`` without a code; with two-factor on, the session it returns waits
        for ``complete_second_factor`` and ``authenticate`` refuses it until then."""
        try:
            return await self.sign_in(
                session, runtime, email=email, password=password, client_address=client_address
            )
        except SecondFactorRequired:
            pass  # raised only after the password was found right
        repo = AccountRepository(session)
        account = await repo.get_by_email(str(normalise_email(email)))
        assert account is not None
        token = new_token()
        expires_at = utcnow() + timedelta(seconds=self.PENDING_SECOND_FACTOR_SECONDS)
        await repo.add_session(
            AccountSession(
                account_id=account.id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                needs_second_factor=True,
            )
        )
        return SignedIn(
            token=token, expires_at=expires_at, account=account, needs_second_factor=True
        )

    async def complete_second_factor(
        self,
        session: AsyncSession,
        runtime: Runtime,
        pending_token: str,
        code: str,
        *,
        client_address: str | None = None,
    ) -> SignedIn:
        """Swap a session waiting for its second factor for a full one, given a right code.

        The sign-in completes here, so here its address is kept (where the policy allows)."""
        repo = AccountRepository(session)
        found = await repo.get_session(hash_token(pending_token))
        if found is None:
            raise NotAuthenticated(SESSION_EXPIRED)
        row, account = found
        if not row.needs_second_factor or row.expires_at <= utcnow():
            raise NotAuthenticated(SESSION_EXPIRED)
        if account.status is AccountStatus.terminated:
            raise AccountTerminated()
        throttle = _LoginThrottle(runtime)
        account_key = throttle.account_key(account.email)
        throttle.check([account_key])
        if not await self._accept_totp(repo, account, code):
            throttle.failed([account_key])
            raise SecondFactorRequired(
                "That code is not right or was already used; enter the current code from "
                "your authenticator app."
            )
        throttle.succeeded(account_key)
        self._remember_login_address(runtime.policy, account, client_address)
        # A new token: the one that only proved the password is retired.
        await repo.delete_session(account.id, row.token_hash)
        token = new_token()
        expires_at = utcnow() + timedelta(hours=runtime.settings.session_ttl_hours)
        await repo.add_session(
            AccountSession(
                account_id=account.id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                needs_second_factor=False,
                second_factor_at=utcnow(),
            )
        )
        return SignedIn(token=token, expires_at=expires_at, account=account)

    async def second_factor_passed(self, session: AsyncSession, token: str) -> bool:
        """Whether the session of ``token`` proved the second factor when it was opened (a
        session opened before two-factor sign-in was turned on did not)."""
        found = await AccountRepository(session).get_session(hash_token(token))
        return found is not None and found[0].second_factor_at is not None

    async def purge_expired(self, session: AsyncSession) -> int:
        repo = AccountRepository(session)
        now = utcnow()
        return await repo.delete_expired_sessions(now) + await repo.delete_stale_verifications(now)

    async def sign_out(self, session: AsyncSession, account: Account, token: str) -> None:
        await AccountRepository(session).delete_session(account.id, hash_token(token))

    async def sign_out_everywhere(self, session: AsyncSession, account: Account) -> None:
        await AccountRepository(session).delete_sessions(account.id)

    async def change_password(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        *,
        current_password: str,
        new_password: str,
        current_token: str | None = None,
    ) -> None:
        """Set a new password and end every session but ``current_token``'s."""
        throttle = _LoginThrottle(runtime)
        keys = [throttle.account_key(account.email)]
        throttle.check(keys)
        if not await _verify(account.password_hash, current_password):
            throttle.failed(keys)
            raise WrongPassword()
        check_password(new_password, account.email)
        account.password_hash = await _hash(new_password)
        keep = hash_token(current_token) if current_token is not None else None
        await AccountRepository(session).delete_sessions(account.id, keep_hash=keep)

    # Two-factor (TOTP).

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

    async def disable_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        if not account.totp_enabled:
            raise TotpStateConflict("Two-factor sign-in is not on.")
        await self._require_code(session, runtime, account, code)
        account.totp_enabled = False
        account.totp_secret = None
        account.totp_last_step = None

    async def _require_code(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        throttle = _LoginThrottle(runtime)
        keys = [throttle.account_key(account.email)]
        throttle.check(keys)
        if not await self._accept_totp(AccountRepository(session), account, code):
            throttle.failed(keys)
            raise WrongTotpCode()

    @staticmethod
    async def _accept_totp(repo: AccountRepository, account: Account, code: str) -> bool:
        """A code of the previous, current or next 30 s step, each step usable once."""
        if account.totp_secret is None:
            return False
        totp = pyotp.TOTP(account.totp_secret)
        current = totp.timecode(utcnow())
        for step in (current - 1, current, current + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                return await repo.claim_totp_step(account, step)
        return False

    # Status, for administrators and the CLI.

    async def get(self, session: AsyncSession, account_id: int) -> Account:
        account = await AccountRepository(session).get(account_id)
        if account is None:
            raise AccountNotFound(f"There is no account {account_id}.")
        return account

    async def find(self, session: AsyncSession, ref: str) -> Account:
        """An account by id (digits) or by email address."""
        ref = ref.strip()
        if ref.isdigit() and len(ref) < 19:
            return await self.get(session, int(ref))
        account = await AccountRepository(session).get_by_email(str(normalise_email(ref)))
        if account is None:
            raise AccountNotFound(f"There is no account with the email address {ref}.")
        return account

    async def search(
        self,
        session: AsyncSession,
        query: str | None = None,
        status: AccountStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> AccountSearch:
        limit = max(1, min(limit, 500))
        items, total = await AccountRepository(session).search(
            query or None, status, limit, max(0, offset)
        )
        return AccountSearch(items=list(items), total=total)

    async def suspend(
        self, session: AsyncSession, runtime: Runtime, account_id: int, reason: str
    ) -> Account:
        """The account may still sign in (to read why) but loses VPN access at once."""
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(
                f"Account {account_id} is terminated; a terminated account cannot be suspended."
            )
        self._set_status(account, AccountStatus.suspended, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    async def unsuspend(
        self, session: AsyncSession, runtime: Runtime, account_id: int, reason: str | None = None
    ) -> Account:
        account = await self.get(session, account_id)
        if account.status is not AccountStatus.suspended:
            raise StatusChangeRefused(
                f"Account {account_id} is {account.status.value}, not suspended; only a "
                "suspended account can be reinstated."
            )
        self._set_status(account, AccountStatus.active, reason)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    async def terminate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account_id: int,
        reason: str,
        *,
        clause: str | None = None,
    ) -> Account:
        """For good: every session ends and VPN access ends at once.

        ``clause`` names the clause of the terms that was broken (the admin domain checks it
        against the policy); the customer reads it in the status reason.
        """
        if not reason.strip():
            raise InvalidInput("Give the reason for the termination.", field="reason")
        account = await self.get(session, account_id)
        self._refuse_erased(account)
        if account.status is AccountStatus.terminated:
            raise StatusChangeRefused(f"Account {account_id} is already terminated.")
        if clause is not None:
            reason = f"Terminated for breaking the terms ({clause}): {reason.strip()}"
        self._set_status(account, AccountStatus.terminated, reason)
        account.terminated_clause = clause
        await AccountRepository(session).delete_sessions(account.id)
        await desired_state_service.refresh_account(session, runtime, account.id)
        return account

    @staticmethod
    def _refuse_erased(account: Account) -> None:
        if account.status is AccountStatus.erased:
            raise StatusChangeRefused(
                f"Account {account.id} was erased at its owner's request; it has no status "
                "left to change."
            )

    @staticmethod
    def _set_status(account: Account, status: AccountStatus, reason: str | None) -> None:
        account.status = status
        account.status_reason = reason.strip() if reason and reason.strip() else None
        account.status_changed_at = utcnow()

    async def create_admin(
        self, session: AsyncSession, email: str, password: str | None, *, promote: bool = False
    ) -> Account:
        """A verified administrator; ``promote`` makes an existing account one instead.

        Promoting keeps the account's password; a new account needs ``password``.
        """
        email = parse_email(email)
        repo = AccountRepository(session)
        existing = await repo.get_by_email(email)
        if existing is not None:
            if not promote:
                raise Conflict(
                    f"An account with the email {email} already exists; pass --promote to make "
                    "it an administrator.",
                    field="email",
                )
            if existing.status is AccountStatus.terminated:
                raise StatusChangeRefused("A terminated account cannot become an administrator.")
            existing.is_admin = True
            return existing
        if password is None:
            raise InvalidInput(
                f"There is no account with the email {email} to promote; give a password to "
                "create a new administrator.",
                field="password",
            )
        check_password(password, email)
        now = utcnow()
        account = Account(
            email=email,
            password_hash=await _hash(password),
            status=AccountStatus.active,
            is_admin=True,
            totp_enabled=False,
            email_verified_at=now,
            created_at=now,
        )
        try:
            await repo.add(account)
        except IntegrityError as exc:
            raise EmailTaken() from exc
        return account


account = AccountService()
