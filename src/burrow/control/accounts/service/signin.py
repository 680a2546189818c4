"""Sign-in and sessions: the password (and code) step, the web's two-step sign-in, the session
check every request makes (maximum age and idle time), a customer's list of their sessions,
signing out, changing the password and proving identity again.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import ua_parser
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import normalise_email
from burrow.control.accounts.service.errors import (
    LOGIN_FAILED,
    SESSION_EXPIRED,
    AccountTerminated,
    LoginFailed,
    SecondFactorRequired,
    SessionNotFound,
    WrongPassword,
    WrongTotpCode,
)
from burrow.control.accounts.service.notifications import OwnerNotice, notify_owner
from burrow.control.accounts.service.passwords import (
    check_new_password,
    new_password_hash,
    password_matches,
)
from burrow.control.accounts.service.recovery import accept_recovery_code
from burrow.control.accounts.service.throttling import LoginThrottle
from burrow.control.accounts.service.two_factor import accept_second_factor, accept_totp
from burrow.control.affiliates.service import affiliate as affiliate_service
from burrow.control.errors import NotAuthenticated
from burrow.control.models import Account, AccountSession, AccountStatus, utcnow
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.security import (
    DUMMY_PASSWORD_HASH,
    hash_token,
    new_token,
    password_needs_rehash,
)


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    account: Account
    # The web's first step: the password was right, the session waits for its TOTP code.
    needs_second_factor: bool = False


@dataclass(frozen=True)
class SessionInfo:
    """One of a customer's sessions, as they see it in their list."""

    id: int
    device: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool


UNKNOWN_DEVICE = "Unknown device"
_DEVICE_MAX = 120


def _summarise_user_agent(user_agent: str) -> str | None:
    # The regex extra (Rust, linear time) parses when installed; the length cap bounds the
    # pure-Python fallback on a hostile header.
    parsed = ua_parser.parse(user_agent[:512])
    browser = parsed.user_agent.family if parsed.user_agent else None
    system = parsed.os.family if parsed.os else None
    if browser in (None, "Other"):
        # Not a browser (an app or a script): its own first word says most ("curl/8.5").
        browser = user_agent.split(" ", 1)[0].split("/", 1)[0].strip()[:40] or None
    if system == "Other":
        system = None
    if browser and system:
        return f"{browser} on {system}"[:_DEVICE_MAX]
    return browser or system


async def describe_device(user_agent: str | None) -> str | None:
    """Summarise a User-Agent as "Firefox on Linux"; None when it says nothing usable."""
    if not user_agent or not user_agent.isprintable():
        return None
    # The parser's first use compiles its rules: off the event loop.
    return await asyncio.to_thread(_summarise_user_agent, user_agent)


class SignInService:
    async def sign_in(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        email: str,
        password: str,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        client_address: str | None = None,
        user_agent: str | None = None,
    ) -> SignedIn:
        """``recovery_code`` stands in for ``totp_code`` (each recovery code works once)."""
        email = str(normalise_email(email))
        throttle = LoginThrottle(runtime)
        # Counted before the password is looked at, so a burst gets no further than the limit.
        await throttle.attempt(email, client_address)
        repo = AccountRepository(session)
        account = await repo.get_by_email(email)
        if account is not None and account.status is AccountStatus.erased:
            account = None  # its placeholder address is no one's; answer as for an unknown one
        # An unknown address costs the same time as a known one.
        matches = await password_matches(
            account.password_hash if account is not None else DUMMY_PASSWORD_HASH, password
        )
        if account is None or not matches:
            await throttle.failed(email, account.email if account is not None else None)
            raise LoginFailed(LOGIN_FAILED)
        if account.status is AccountStatus.terminated:
            raise AccountTerminated()
        if account.totp_enabled:
            if recovery_code:
                accepted = await accept_recovery_code(repo, runtime, account, recovery_code)
            elif totp_code:
                accepted = await accept_totp(repo, account, totp_code)
            else:
                raise SecondFactorRequired(
                    "Enter the 6-digit code from your authenticator app, or one of your "
                    "recovery codes."
                )
            if not accepted:
                await throttle.failed(email, account.email)
                raise SecondFactorRequired(
                    "That code is not right or was already used; enter the current code from "
                    "your authenticator app, or an unused recovery code."
                )
        await throttle.succeeded(email, client_address)
        self._remember_login_address(runtime.policy, account, client_address)
        # An affiliate's sign-in keeps the affiliate account from ending for inactivity.
        await affiliate_service.signed_in(session, account.id)
        if password_needs_rehash(account.password_hash):
            account.password_hash = await new_password_hash(password)
        token = new_token()
        expires_at = utcnow() + timedelta(hours=runtime.settings.session_ttl_hours)
        await repo.add_session(
            AccountSession(
                account_id=account.id,
                token_hash=hash_token(token),
                expires_at=expires_at,
                needs_second_factor=False,
                second_factor_at=utcnow() if account.totp_enabled else None,
                device=await describe_device(user_agent),
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
        now = utcnow()
        settings = runtime.settings
        last_used = row.last_used_at or row.created_at
        if (
            row.expires_at <= now
            or last_used + timedelta(hours=settings.session_idle_hours) <= now
            or row.needs_second_factor
            or account.status is AccountStatus.erased
        ):
            raise NotAuthenticated(SESSION_EXPIRED)
        if account.status is AccountStatus.terminated:
            raise AccountTerminated()
        if now - last_used >= timedelta(seconds=settings.session_touch_seconds):
            # At most one write a minute per session: a conditional UPDATE, so requests racing
            # on the same session write once.
            await AccountRepository(session).touch_session(
                row, now, now - timedelta(seconds=settings.session_touch_seconds)
            )
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
        user_agent: str | None = None,
    ) -> SignedIn:
        """Like ``sign_in`` without a code; with two-factor on, the session it returns waits
        for ``complete_second_factor`` and ``authenticate`` refuses it until then."""
        try:
            return await self.sign_in(
                session,
                runtime,
                email=email,
                password=password,
                client_address=client_address,
                user_agent=user_agent,
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
                device=await describe_device(user_agent),
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
        throttle = LoginThrottle(runtime)
        await throttle.attempt(account.email, client_address)
        if not await accept_second_factor(repo, runtime, account, code):
            await throttle.failed(account.email, account.email)
            raise SecondFactorRequired(
                "That code is not right or was already used; enter the current code from "
                "your authenticator app, or an unused recovery code."
            )
        await throttle.succeeded(account.email, client_address)
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
                device=row.device,
            )
        )
        return SignedIn(token=token, expires_at=expires_at, account=account)

    async def purge_expired(self, session: AsyncSession, runtime: Runtime | None = None) -> int:
        """Forget expired sessions (with ``runtime``: idle ones too), links and resets."""
        repo = AccountRepository(session)
        now = utcnow()
        idle_before = (
            now - timedelta(hours=runtime.settings.session_idle_hours) if runtime else None
        )
        return (
            await repo.delete_expired_sessions(now, idle_before)
            + await repo.delete_stale_verifications(now)
            + await repo.delete_stale_password_resets(now)
        )

    async def sign_out(self, session: AsyncSession, account: Account, token: str) -> None:
        await AccountRepository(session).delete_session(account.id, hash_token(token))

    async def sign_out_everywhere(self, session: AsyncSession, account: Account) -> None:
        await AccountRepository(session).delete_sessions(account.id)

    async def end_all_sessions(self, session: AsyncSession, account: Account) -> None:
        """Every session of ``account`` ends (a password reset, an erasure)."""
        await AccountRepository(session).delete_sessions(account.id)

    async def list_sessions(
        self, session: AsyncSession, runtime: Runtime, account: Account, current_token: str
    ) -> Sequence[SessionInfo]:
        """The account's live sessions, newest use first; ``current`` marks the asker's."""
        now = utcnow()
        idle = timedelta(hours=runtime.settings.session_idle_hours)
        current = hash_token(current_token)
        found = []
        for row in await AccountRepository(session).sessions_of(account.id):
            last_used = row.last_used_at or row.created_at
            if row.needs_second_factor or row.expires_at <= now or last_used + idle <= now:
                continue
            found.append(
                SessionInfo(
                    id=row.id,
                    device=row.device or UNKNOWN_DEVICE,
                    created_at=row.created_at,
                    last_used_at=last_used,
                    expires_at=min(row.expires_at, last_used + idle),
                    current=row.token_hash == current,
                )
            )
        return sorted(found, key=lambda s: (not s.current, -s.last_used_at.timestamp()))

    async def end_session(
        self,
        session: AsyncSession,
        account: Account,
        session_id: int,
        current_token: str | None = None,
    ) -> bool:
        """End one of ``account``'s own sessions (another account's is not found); true when
        it was ``current_token``'s own."""
        repo = AccountRepository(session)
        target = next(
            (row for row in await repo.sessions_of(account.id) if row.id == session_id), None
        )
        if target is None or not await repo.delete_session_by_id(account.id, session_id):
            raise SessionNotFound("There is no such session of yours; it may have ended already.")
        return current_token is not None and target.token_hash == hash_token(current_token)

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
        """Set a new password, end every session but ``current_token``'s, tell the owner."""
        throttle = LoginThrottle(runtime)
        await throttle.attempt_signed_in(account.email)
        if not await password_matches(account.password_hash, current_password):
            await throttle.failed(account.email, account.email)
            raise WrongPassword()
        await check_new_password(new_password, account.email)
        account.password_hash = await new_password_hash(new_password)
        keep = hash_token(current_token) if current_token is not None else None
        await AccountRepository(session).delete_sessions(account.id, keep_hash=keep)
        notify_owner(session, runtime, account.email, OwnerNotice.password_changed)

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
        throttle = LoginThrottle(runtime)
        await throttle.attempt_signed_in(account.email)
        if not await password_matches(account.password_hash, password):
            await throttle.failed(account.email, account.email)
            raise WrongPassword("password")
        if require_totp and account.totp_enabled:
            if not totp_code:
                raise SecondFactorRequired("Enter the 6-digit code from your authenticator app.")
            if not await accept_totp(AccountRepository(session), account, totp_code):
                await throttle.failed(account.email, account.email)
                raise WrongTotpCode("totp_code")


signin_service = SignInService()
