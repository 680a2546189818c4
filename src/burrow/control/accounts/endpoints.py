"""The customer API of accounts and sessions: register, verify, sign in and out, 2FA."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from burrow.control.accounts.schemas import (
    AccountCreate,
    AccountRead,
    Message,
    OneTimeToken,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    RecoveryCodes,
    RecoveryCodesLeft,
    SessionCreate,
    SessionCreated,
    SessionRead,
    TotpCodeBody,
    TotpConfirmed,
    TotpEnrolment,
    VerifyEmail,
)
from burrow.control.accounts.service import account as account_service
from burrow.control.accounts.service import sign_up_answer
from burrow.control.affiliates.service import REFERRAL_COOKIE
from burrow.control.deps import (
    SESSION_COOKIE,
    CurrentAccount,
    RuntimeDep,
    SessionDep,
    get_session_token,
)
from burrow.control.models import Account
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1")

SessionToken = Annotated[str, Depends(get_session_token)]


def _read(account: Account) -> AccountRead:
    return AccountRead.model_validate(account)


@router.post(
    "/accounts",
    tags=["accounts"],
    summary="Register an account",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    responses=problem_responses(422, 429),
)
async def register(
    body: AccountCreate, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Message:
    """Creates the account and emails a one-time link that verifies the address.

    The answer is the same when the address already has an account (its owner is emailed
    instead), so that it does not tell who has one."""
    email = await account_service.sign_up(
        session,
        runtime,
        body,
        client_address=request.client.host if request.client else None,
        referral_cookie=request.cookies.get(REFERRAL_COOKIE),
    )
    return Message(detail=sign_up_answer(runtime, email))


async def _verify(session: SessionDep, runtime: RuntimeDep, token: str) -> Message:
    account = await account_service.verify_email(session, token, runtime)
    return Message(detail=f"Your email address {account.email} is verified.")


@router.post(
    "/accounts/verify-email",
    tags=["accounts"],
    summary="Verify the email address with the emailed token",
    response_model=Message,
    responses=problem_responses(400, 409, 410, 422),
)
async def verify_email(body: VerifyEmail, session: SessionDep, runtime: RuntimeDep) -> Message:
    return await _verify(session, runtime, body.token)


@router.get(
    "/accounts/verify-email",
    tags=["accounts"],
    summary="Verify the email address (the emailed link)",
    response_model=Message,
    responses=problem_responses(400, 409, 410, 422),
)
async def verify_email_link(
    session: SessionDep,
    runtime: RuntimeDep,
    token: Annotated[OneTimeToken, Query(description="From the email.")],
) -> Message:
    return await _verify(session, runtime, token)


@router.get(
    "/accounts/me",
    tags=["accounts"],
    summary="Your account",
    response_model=AccountRead,
    responses=problem_responses(401, 403),
)
async def me(account: CurrentAccount) -> AccountRead:
    return _read(account)


@router.post(
    "/accounts/me/verification-email",
    tags=["accounts"],
    summary="Send a new verification link",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    responses=problem_responses(401, 403, 409, 429),
)
async def resend_verification(
    account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> Message:
    await account_service.resend_verification(session, runtime, account)
    return Message(detail=f"A new link is on its way to {account.email}.")


@router.post(
    "/accounts/me/password",
    tags=["accounts"],
    summary="Change your password (ends your other sessions)",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 422, 429),
)
async def change_password(
    body: PasswordChange,
    account: CurrentAccount,
    token: SessionToken,
    session: SessionDep,
    runtime: RuntimeDep,
) -> None:
    await account_service.change_password(
        session,
        runtime,
        account,
        current_password=body.current_password,
        new_password=body.new_password,
        current_token=token,
    )


@router.post(
    "/accounts/me/totp",
    tags=["accounts"],
    summary="Start two-factor enrolment",
    response_model=TotpEnrolment,
    responses=problem_responses(401, 403, 409),
)
async def start_totp(
    account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> TotpEnrolment:
    """Scan the QR code (or type the secret) into an authenticator app, then confirm a code."""
    return await account_service.start_totp(session, runtime, account)


@router.post(
    "/accounts/me/totp/confirm",
    tags=["accounts"],
    summary="Turn two-factor sign-in on with a first code",
    response_model=TotpConfirmed,
    responses=problem_responses(401, 403, 409, 422, 429),
)
async def confirm_totp(
    body: TotpCodeBody, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> TotpConfirmed:
    """The answer carries ten recovery codes, shown this once."""
    codes = await account_service.confirm_totp(session, runtime, account, body.code)
    return TotpConfirmed.model_validate({**_read(account).model_dump(), "recovery_codes": codes})


@router.post(
    "/accounts/me/totp/recovery-codes",
    tags=["accounts"],
    summary="Replace your recovery codes with ten new ones",
    response_model=RecoveryCodes,
    responses=problem_responses(401, 403, 409, 422, 429),
)
async def new_recovery_codes(
    body: TotpCodeBody, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> RecoveryCodes:
    """Needs a current code from your app; the old codes stop working."""
    codes = await account_service.regenerate_recovery_codes(session, runtime, account, body.code)
    return RecoveryCodes(codes=codes)


@router.get(
    "/accounts/me/totp/recovery-codes",
    tags=["accounts"],
    summary="How many unused recovery codes you have left",
    response_model=RecoveryCodesLeft,
    responses=problem_responses(401, 403),
)
async def recovery_codes_left(account: CurrentAccount, session: SessionDep) -> RecoveryCodesLeft:
    remaining = await account_service.recovery_codes_left(session, account.id)
    return RecoveryCodesLeft(remaining=remaining)


RESET_REQUESTED = (
    "If an account uses this address, a link to set a new password is on its way to it. The "
    "link works once, for one hour."
)


@router.post(
    "/accounts/password-reset",
    tags=["accounts"],
    summary="Forgot your password: email a one-time link",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Message,
    responses=problem_responses(422, 429),
)
async def request_password_reset(
    body: PasswordResetRequest, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Message:
    """The same answer whether or not the address has an account."""
    await account_service.request_password_reset(
        session,
        runtime,
        email=body.email,
        client_address=request.client.host if request.client else None,
    )
    return Message(detail=RESET_REQUESTED)


@router.post(
    "/accounts/password-reset/confirm",
    tags=["accounts"],
    summary="Set a new password with the emailed link's token (ends every session)",
    response_model=Message,
    responses=problem_responses(400, 410, 422),
)
async def reset_password(
    body: PasswordResetConfirm, session: SessionDep, runtime: RuntimeDep
) -> Message:
    await account_service.reset_password(
        session, runtime, token=body.token, new_password=body.new_password
    )
    return Message(detail="Your new password is set; every session has ended. Sign in with it.")


@router.delete(
    "/accounts/me/totp",
    tags=["accounts"],
    summary="Turn two-factor sign-in off",
    response_model=AccountRead,
    responses=problem_responses(401, 403, 409, 422, 429),
)
async def disable_totp(
    body: TotpCodeBody, account: CurrentAccount, session: SessionDep, runtime: RuntimeDep
) -> AccountRead:
    await account_service.disable_totp(session, runtime, account, body.code)
    return _read(account)


@router.post(
    "/sessions",
    tags=["sessions"],
    summary="Sign in",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionCreated,
    responses=problem_responses(401, 403, 422, 429),
)
async def sign_in(
    body: SessionCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
) -> SessionCreated:
    """Returns a session token (bearer) and sets it as the ``burrow_session`` cookie.

    With two-factor sign-in on, send ``totp_code`` too; without it the answer is 401 with
    ``totp_required: true``.
    """
    signed_in = await account_service.sign_in(
        session,
        runtime,
        email=body.email,
        password=body.password,
        totp_code=body.totp_code,
        recovery_code=body.recovery_code,
        client_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        max_age=runtime.settings.session_ttl_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return SessionCreated(token=signed_in.token, expires_at=signed_in.expires_at)


def _forget_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.delete(
    "/sessions/current",
    tags=["sessions"],
    summary="Sign out",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403),
)
async def sign_out(
    account: CurrentAccount,
    token: SessionToken,
    session: SessionDep,
    request: Request,
    response: Response,
) -> None:
    await account_service.sign_out(session, account, token)
    _forget_cookie(request, response)


@router.delete(
    "/sessions",
    tags=["sessions"],
    summary="Sign out everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403),
)
async def sign_out_everywhere(
    account: CurrentAccount, session: SessionDep, request: Request, response: Response
) -> None:
    await account_service.sign_out_everywhere(session, account)
    _forget_cookie(request, response)


@router.get(
    "/sessions",
    tags=["sessions"],
    summary="Your sessions",
    response_model=list[SessionRead],
    responses=problem_responses(401, 403),
)
async def list_sessions(
    account: CurrentAccount, token: SessionToken, session: SessionDep, runtime: RuntimeDep
) -> list[SessionRead]:
    """Every session still signed in to your account: the browser and system it was opened
    from, when it was opened and last used, and which one is this one."""
    found = await account_service.list_sessions(session, runtime, account, token)
    return [SessionRead.model_validate(info, from_attributes=True) for info in found]


@router.delete(
    "/sessions/{session_id}",
    tags=["sessions"],
    summary="End one of your sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404),
)
async def end_session(
    session_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    account: CurrentAccount,
    session: SessionDep,
) -> None:
    await account_service.end_session(session, account, session_id)
