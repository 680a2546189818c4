"""The accounts service: registration rules, sign-in, throttling, TOTP, status changes."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.schemas import AccountCreate
from burrow.control.accounts.service import (
    AccountNotFound,
    AccountTerminated,
    AgeAttestationRefused,
    EmailTaken,
    LoginFailed,
    LoginThrottled,
    SecondFactorRequired,
    StatusChangeRefused,
    TermsNotAccepted,
    VerificationLinkGone,
    VerificationLinkInvalid,
    WeakPassword,
    WrongPassword,
    WrongTotpCode,
    check_password,
)
from burrow.control.accounts.service import account as account_service
from burrow.control.audit.service import CliOperator
from burrow.control.desired_state.service import desired_state
from burrow.control.errors import Conflict, InvalidInput, NotAuthenticated
from burrow.control.models import (
    AccountSession,
    AccountStatus,
    AgeAttestation,
    EmailVerification,
    utcnow,
)
from burrow.control.policy.schemas import AgeSection
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, verify_password
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_session_token,
    unique_email,
)


def wrong_code(totp: pyotp.TOTP) -> str:
    """A code that no step of the accepted window produces."""
    now = utcnow()
    window = {totp.at(now + timedelta(seconds=totp.interval * k)) for k in (-2, -1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in window)


def _signup(runtime: Runtime, **changes: object) -> AccountCreate:
    data: dict[str, object] = {
        "email": unique_email("signup"),
        "password": "a long enough password",
        "accept_terms_version": runtime.policy.terms.version,
    }
    data.update(changes)
    return AccountCreate.model_validate(data)


OPS = CliOperator("ops")


async def _sessions_of(session: AsyncSession, account_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(AccountSession)
        .where(AccountSession.account_id == account_id)
    )
    return int(count or 0)


# Registration.


async def test_register_normalises_and_records_terms(
    session: AsyncSession, runtime: Runtime
) -> None:
    data = AccountCreate.model_validate(
        {
            "email": "  Mixed.Case@Example.COM ",
            "password": "a long enough password",
            "accept_terms_version": runtime.policy.terms.version,
            "age_attestation": "adult",
        }
    )
    account = await account_service.register(session, runtime, data)
    assert account.email == "mixed.case@example.com"
    assert account.terms_version_accepted == runtime.policy.terms.version
    assert account.terms_accepted_at is not None
    assert account.age_attestation is AgeAttestation.adult
    assert account.email_verified_at is None
    assert account.password_hash != "a long enough password"
    assert verify_password(account.password_hash, "a long enough password")
    links = (
        (
            await session.execute(
                select(EmailVerification).where(EmailVerification.account_id == account.id)
            )
        )
        .scalars()
        .all()
    )
    assert len(links) == 1
    assert links[0].email == account.email


async def test_register_duplicate_email_is_a_conflict(
    session: AsyncSession, runtime: Runtime
) -> None:
    await create_account(session, email="taken@example.com")
    with pytest.raises(EmailTaken) as caught:
        await account_service.register(
            session, runtime, _signup(runtime, email="TAKEN@example.com")
        )
    assert caught.value.status == 409
    assert "already exists" in caught.value.message


async def test_register_refuses_an_old_terms_version(
    session: AsyncSession, runtime: Runtime
) -> None:
    with pytest.raises(TermsNotAccepted) as caught:
        await account_service.register(
            session, runtime, _signup(runtime, accept_terms_version="1999-01")
        )
    assert runtime.policy.terms.version in caught.value.message
    assert caught.value.problem()["current_terms_version"] == runtime.policy.terms.version


async def test_age_attestation_follows_the_policy(session: AsyncSession, runtime: Runtime) -> None:
    runtime.policy = runtime.policy.model_copy(
        update={
            "age": AgeSection(
                attestation_required=True,
                minimum_age=18,
                allow_guardian_consent=True,
                allow_emancipated_minor=False,
            )
        }
    )
    with pytest.raises(AgeAttestationRefused, match="18 or older"):
        await account_service.register(session, runtime, _signup(runtime))
    with pytest.raises(AgeAttestationRefused, match="emancipated"):
        await account_service.register(
            session, runtime, _signup(runtime, age_attestation="emancipated_minor")
        )
    ok = await account_service.register(
        session, runtime, _signup(runtime, age_attestation="guardian_consent")
    )
    assert ok.age_attestation is AgeAttestation.guardian_consent


def test_password_rules() -> None:
    with pytest.raises(WeakPassword, match="at least 10"):
        check_password("short", "a@example.com")
    with pytest.raises(WeakPassword, match="email"):
        check_password("Someone@Example.com", "someone@example.com")
    check_password("ten chars!", "someone@example.com")


# Email verification.


async def test_verification_link_works_once(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session, verified=False)
    token = "a-known-token"
    session.add(
        EmailVerification(
            account_id=account.id,
            email=account.email,
            token_hash=hash_token(token),
            expires_at=utcnow() + timedelta(hours=1),
        )
    )
    await session.flush()
    verified = await account_service.verify_email(session, token)
    assert verified.email_verified_at is not None
    with pytest.raises(VerificationLinkGone, match="new link"):
        await account_service.verify_email(session, token)
    with pytest.raises(VerificationLinkInvalid, match="new link"):
        await account_service.verify_email(session, "never-issued")


async def test_expired_verification_link(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session, verified=False)
    session.add(
        EmailVerification(
            account_id=account.id,
            email=account.email,
            token_hash=hash_token("old"),
            expires_at=utcnow() - timedelta(seconds=1),
        )
    )
    await session.flush()
    with pytest.raises(VerificationLinkGone, match="expired"):
        await account_service.verify_email(session, "old")
    assert account.email_verified_at is None


# Sign-in and sessions.


async def test_sign_in_and_authenticate(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    signed_in = await account_service.sign_in(
        session, runtime, email=account.email.upper(), password=DEFAULT_PASSWORD
    )
    assert signed_in.account.id == account.id
    assert signed_in.expires_at > utcnow() + timedelta(hours=runtime.settings.session_ttl_hours - 1)
    found = await account_service.authenticate(session, runtime, signed_in.token)
    assert found.id == account.id
    # Only the hash is stored.
    row = (
        await session.execute(select(AccountSession).where(AccountSession.account_id == account.id))
    ).scalar_one()
    assert row.token_hash == hash_token(signed_in.token)
    assert signed_in.token not in row.token_hash


async def test_wrong_password_and_unknown_email_answer_alike(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    with pytest.raises(LoginFailed) as wrong:
        await account_service.sign_in(session, runtime, email=account.email, password="nope nope!")
    with pytest.raises(LoginFailed) as unknown:
        await account_service.sign_in(
            session, runtime, email="nobody@example.com", password=DEFAULT_PASSWORD
        )
    assert wrong.value.problem() == unknown.value.problem()


async def test_terminated_cannot_sign_in_suspended_can(
    session: AsyncSession, runtime: Runtime
) -> None:
    gone = await create_account(session, status=AccountStatus.terminated)
    paused = await create_account(session, status=AccountStatus.suspended)
    with pytest.raises(AccountTerminated):
        await account_service.sign_in(session, runtime, email=gone.email, password=DEFAULT_PASSWORD)
    signed_in = await account_service.sign_in(
        session, runtime, email=paused.email, password=DEFAULT_PASSWORD
    )
    assert signed_in.account.status is AccountStatus.suspended


async def test_authenticate_refuses_expired_unknown_and_terminated(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    expired = await create_session_token(session, account, expires_in=timedelta(seconds=-1))
    with pytest.raises(NotAuthenticated, match="expired"):
        await account_service.authenticate(session, runtime, expired)
    with pytest.raises(NotAuthenticated, match="expired"):
        await account_service.authenticate(session, runtime, "made-up")
    live = await create_session_token(session, account)
    account.status = AccountStatus.terminated
    await session.flush()
    with pytest.raises(AccountTerminated):
        await account_service.authenticate(session, runtime, live)


async def test_change_password_keeps_only_the_current_session(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    current = await create_session_token(session, account)
    await create_session_token(session, account)
    with pytest.raises(WrongPassword):
        await account_service.change_password(
            session,
            runtime,
            account,
            current_password="not the one",
            new_password="another long password",
            current_token=current,
        )
    with pytest.raises(WeakPassword):
        await account_service.change_password(
            session,
            runtime,
            account,
            current_password=DEFAULT_PASSWORD,
            new_password=account.email,
            current_token=current,
        )
    await account_service.change_password(
        session,
        runtime,
        account,
        current_password=DEFAULT_PASSWORD,
        new_password="another long password",
        current_token=current,
    )
    assert verify_password(account.password_hash, "another long password")
    assert await _sessions_of(session, account.id) == 1
    assert (await account_service.authenticate(session, runtime, current)).id == account.id


async def test_purge_expired_removes_only_expired_rows(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    await create_session_token(session, account, expires_in=timedelta(seconds=-5))
    keep = await create_session_token(session, account)
    assert await account_service.purge_expired(session) == 1
    assert await _sessions_of(session, account.id) == 1
    assert (await account_service.authenticate(session, runtime, keep)).id == account.id


# Throttling.


async def test_account_and_client_bucket_slows_one_client_and_success_clears(
    session: AsyncSession, runtime: Runtime
) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"login_limit_account_client": "2 per hour"}
    )
    account = await create_account(session)
    guesser, owner = "192.0.2.7", "203.0.113.4"

    async def sign_in(password: str, client: str) -> None:
        await account_service.sign_in(
            session, runtime, email=account.email, password=password, client_address=client
        )

    for _ in range(2):
        with pytest.raises(LoginFailed):
            await sign_in("wrong password", guesser)
    with pytest.raises(LoginThrottled) as caught:
        # Counted before checked: even the right password is not looked at from this client.
        await sign_in(DEFAULT_PASSWORD, guesser)
    assert caught.value.status == 429
    assert 3500 < caught.value.retry_after <= 3600
    # No lockout of the account: the owner, elsewhere, signs in at once, and again.
    await sign_in(DEFAULT_PASSWORD, owner)
    with pytest.raises(LoginFailed):
        await sign_in("a typo password", owner)
    # A success clears this account's count on this client (and only that).
    await sign_in(DEFAULT_PASSWORD, owner)
    for _ in range(2):
        with pytest.raises(LoginFailed):
            await sign_in("a typo password", owner)
    with pytest.raises(LoginThrottled):
        await sign_in(DEFAULT_PASSWORD, owner)
    with pytest.raises(LoginThrottled):
        await sign_in(DEFAULT_PASSWORD, guesser)


async def test_client_bucket_across_accounts_keeps_no_address(
    session: AsyncSession, runtime: Runtime
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"login_limit_client": "3 per hour"})
    for n in range(3):
        with pytest.raises(LoginFailed):
            await account_service.sign_in(
                session,
                runtime,
                email=f"guess{n}@example.com",
                password="wrong password",
                client_address="192.0.2.7",
            )
    with pytest.raises(LoginThrottled):
        await account_service.sign_in(
            session, runtime, email="guess9@example.com", password="x", client_address="192.0.2.7"
        )
    # Another client is not affected, and no key carries the address or the email itself.
    with pytest.raises(LoginFailed):
        await account_service.sign_in(
            session, runtime, email="guess9@example.com", password="x", client_address="192.0.2.8"
        )
    storage = runtime.rate_limits.storage
    keys = [str(key) for key in (*storage.events, *storage.storage)]  # type: ignore[attr-defined]
    assert keys
    assert not any("192.0.2" in key or "guess" in key for key in keys)


# Two-factor.


async def test_totp_enrol_confirm_and_no_replay(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    enrolment = await account_service.start_totp(session, runtime, account)
    assert enrolment.otpauth_uri.startswith("otpauth://totp/")
    assert enrolment.secret in enrolment.otpauth_uri
    assert enrolment.qr_svg.lstrip().startswith("<svg")
    totp = pyotp.TOTP(enrolment.secret)
    with pytest.raises(WrongTotpCode):
        await account_service.confirm_totp(session, runtime, account, wrong_code(totp))
    code = totp.now()
    await account_service.confirm_totp(session, runtime, account, code)
    assert account.totp_enabled
    with pytest.raises(Conflict):
        await account_service.start_totp(session, runtime, account)

    with pytest.raises(SecondFactorRequired) as missing:
        await account_service.sign_in(
            session, runtime, email=account.email, password=DEFAULT_PASSWORD
        )
    assert missing.value.problem()["totp_required"] is True
    # The code used to confirm cannot be used again.
    with pytest.raises(SecondFactorRequired):
        await account_service.sign_in(
            session, runtime, email=account.email, password=DEFAULT_PASSWORD, totp_code=code
        )
    # The next step's code is accepted (clock skew), once.
    next_code = totp.at(utcnow() + timedelta(seconds=totp.interval))
    await account_service.sign_in(
        session, runtime, email=account.email, password=DEFAULT_PASSWORD, totp_code=next_code
    )
    with pytest.raises(SecondFactorRequired):
        await account_service.sign_in(
            session, runtime, email=account.email, password=DEFAULT_PASSWORD, totp_code=next_code
        )


async def test_totp_disable_needs_a_fresh_code(session: AsyncSession, runtime: Runtime) -> None:
    account = await create_account(session)
    enrolment = await account_service.start_totp(session, runtime, account)
    totp = pyotp.TOTP(enrolment.secret)
    await account_service.confirm_totp(
        session, runtime, account, totp.at(utcnow() - timedelta(seconds=totp.interval))
    )
    with pytest.raises(WrongTotpCode):
        await account_service.disable_totp(session, runtime, account, wrong_code(totp))
    await account_service.disable_totp(session, runtime, account, totp.now())
    assert not account.totp_enabled
    assert account.totp_secret is None
    signed_in = await account_service.sign_in(
        session, runtime, email=account.email, password=DEFAULT_PASSWORD
    )
    assert signed_in.token


# Status, admins and search.


@pytest.fixture
def refreshed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    async def record(_session: AsyncSession, _runtime: Runtime, account_id: int) -> None:
        calls.append(account_id)

    monkeypatch.setattr(desired_state, "refresh_account", record)
    return calls


async def test_suspend_unsuspend_terminate(
    session: AsyncSession, runtime: Runtime, refreshed: list[int]
) -> None:
    account = await create_account(session)
    await create_session_token(session, account)

    suspended = await account_service.suspend(
        session, runtime, OPS, account.id, "  unpaid invoice "
    )
    assert suspended.status is AccountStatus.suspended
    assert suspended.status_reason == "unpaid invoice"
    assert suspended.status_changed_at is not None
    assert await _sessions_of(session, account.id) == 1  # may still sign in to read why

    active = await account_service.unsuspend(session, runtime, OPS, account.id)
    assert active.status is AccountStatus.active
    assert active.status_reason is None
    with pytest.raises(StatusChangeRefused):
        await account_service.unsuspend(session, runtime, OPS, account.id)

    gone = await account_service.terminate(session, runtime, OPS, account.id, "abuse")
    assert gone.status is AccountStatus.terminated
    assert gone.status_reason == "abuse"
    assert await _sessions_of(session, account.id) == 0
    with pytest.raises(StatusChangeRefused):
        await account_service.suspend(session, runtime, OPS, account.id, "again")
    with pytest.raises(StatusChangeRefused):
        await account_service.terminate(session, runtime, OPS, account.id, "again")
    assert refreshed == [account.id, account.id, account.id]
    with pytest.raises(AccountNotFound):
        await account_service.suspend(session, runtime, OPS, 10**9, "nobody")


async def test_create_admin_and_promote(session: AsyncSession) -> None:
    admin = await account_service.create_admin(
        session, OPS, " Boss@Example.com ", "a strong password"
    )
    assert admin.is_admin
    assert admin.email == "boss@example.com"
    assert admin.email_verified_at is not None
    with pytest.raises(Conflict, match="--promote"):
        await account_service.create_admin(session, OPS, "boss@example.com", "a strong password")
    with pytest.raises(InvalidInput, match="not a usable email"):
        await account_service.create_admin(session, OPS, "not-an-email", "a strong password")
    with pytest.raises(WeakPassword):
        await account_service.create_admin(session, OPS, "new@example.com", "short")
    customer = await create_account(session)
    promoted = await account_service.create_admin(session, OPS, customer.email, None, promote=True)
    assert promoted.id == customer.id
    assert promoted.is_admin


async def test_search_and_find(session: AsyncSession) -> None:
    first = await create_account(session, email="alice_one@example.com")
    await create_account(session, email="alicexone@example.com", status=AccountStatus.suspended)
    await create_account(session, email="bob@example.org")

    found = await account_service.search(session, "alice", None, 50, 0)
    assert found.total == 2
    # "_" is a literal, not a LIKE wildcard.
    literal = await account_service.search(session, "alice_", None, 50, 0)
    assert [a.email for a in literal.items] == ["alice_one@example.com"]
    suspended = await account_service.search(session, None, AccountStatus.suspended, 50, 0)
    assert [a.email for a in suspended.items] == ["alicexone@example.com"]
    by_id = await account_service.search(session, str(first.id), None, 50, 0)
    assert first.id in [a.id for a in by_id.items]
    page = await account_service.search(session, "example", None, 1, 1)
    assert page.total == 3
    assert len(page.items) == 1

    assert (await account_service.find(session, str(first.id))).id == first.id
    assert (await account_service.find(session, "ALICE_ONE@example.com")).id == first.id
    with pytest.raises(AccountNotFound):
        await account_service.find(session, "ghost@example.com")


async def test_an_operator_resends_verification_and_the_older_link_stops_working(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session, verified=False)
    await account_service.resend_verification_by(session, runtime, OPS, account.id, "by phone")
    first = await session.scalar(
        select(EmailVerification).where(EmailVerification.account_id == account.id)
    )
    assert first is not None
    await account_service.resend_verification_by(session, runtime, OPS, account.id)
    links = (
        await session.scalars(
            select(EmailVerification)
            .where(EmailVerification.account_id == account.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    assert len(links) == 2
    assert sum(1 for link in links if link.expires_at > utcnow()) == 1

    account.email_verified_at = utcnow()
    with pytest.raises(Conflict, match="verified already"):
        await account_service.resend_verification_by(session, runtime, OPS, account.id)
    account.status = AccountStatus.terminated
    with pytest.raises(StatusChangeRefused, match="terminated"):
        await account_service.resend_verification_by(session, runtime, OPS, account.id)
