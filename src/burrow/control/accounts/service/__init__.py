"""Accounts: the service, one module per job.

- ``registration``: sign-up and email verification (and a change of address);
- ``signin``: sign-in, the web's two-step sign-in, sessions, password change;
- ``two_factor``: TOTP enrolment and codes;
- ``recovery``: forgotten passwords (one-time links) and two-factor recovery codes;
- ``throttling``: failed sign-in attempts per account and per client;
- ``operators``: what administrators and the CLI do to accounts;
- ``passwords``: the password rules and hashing; ``errors``: every error of the domain;
- ``notifications``: emails to an owner about their account's security (``notify_owner``).

Callers use ``account`` (``from burrow.control.accounts.service import account as
account_service``), one object that answers for all of them, and the errors re-exported here.
"""

from __future__ import annotations

from burrow.control.accounts.service.errors import (
    LOGIN_FAILED,
    SESSION_EXPIRED,
    AccountNotFound,
    AccountTerminated,
    AgeAttestationRefused,
    AlreadyVerified,
    EmailTaken,
    LoginFailed,
    LoginThrottled,
    ResetLinkGone,
    ResetLinkInvalid,
    ResetThrottled,
    SecondAdminNeeded,
    SecondFactorRequired,
    SelfActionRefused,
    SessionNotFound,
    StateChanged,
    StatusChangeRefused,
    TermsNotAccepted,
    TotpStateConflict,
    VerificationLinkGone,
    VerificationLinkInvalid,
    WeakPassword,
    WrongPassword,
    WrongTotpCode,
)
from burrow.control.accounts.service.notifications import (
    FORGOT_PASSWORD_PATH,
    OwnerNotice,
    notify_owner,
)
from burrow.control.accounts.service.operators import AccountSearch, OperatorService
from burrow.control.accounts.service.passwords import (
    check_new_password,
    check_password,
    parse_email,
)
from burrow.control.accounts.service.recovery import RESET_PASSWORD_PATH, RecoveryService
from burrow.control.accounts.service.registration import (
    VERIFY_EMAIL_PATH,
    RegistrationService,
    sign_up_answer,
)
from burrow.control.accounts.service.signin import SessionInfo, SignedIn, SignInService
from burrow.control.accounts.service.two_factor import AdminSecondFactor, TwoFactorService


class AccountService(
    RegistrationService, SignInService, TwoFactorService, RecoveryService, OperatorService
):
    """Every job of the domain behind one name; each base class lives in its own module."""


account = AccountService()
account_service = account

__all__ = [
    "FORGOT_PASSWORD_PATH",
    "LOGIN_FAILED",
    "RESET_PASSWORD_PATH",
    "SESSION_EXPIRED",
    "VERIFY_EMAIL_PATH",
    "AccountNotFound",
    "AccountSearch",
    "AccountService",
    "AccountTerminated",
    "AdminSecondFactor",
    "AgeAttestationRefused",
    "AlreadyVerified",
    "EmailTaken",
    "LoginFailed",
    "LoginThrottled",
    "OwnerNotice",
    "ResetLinkGone",
    "ResetLinkInvalid",
    "ResetThrottled",
    "SecondAdminNeeded",
    "SecondFactorRequired",
    "SelfActionRefused",
    "SessionInfo",
    "SessionNotFound",
    "SignedIn",
    "StateChanged",
    "StatusChangeRefused",
    "TermsNotAccepted",
    "TotpStateConflict",
    "VerificationLinkGone",
    "VerificationLinkInvalid",
    "WeakPassword",
    "WrongPassword",
    "WrongTotpCode",
    "account",
    "account_service",
    "check_new_password",
    "check_password",
    "notify_owner",
    "parse_email",
    "sign_up_answer",
]
