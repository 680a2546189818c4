"""The accounts domain's errors, in one place.

    BurrowError
    ├── InvalidInput (422)
    │   ├── WeakPassword, TermsNotAccepted, AgeAttestationRefused
    │   └── WrongPassword, WrongTotpCode
    ├── VerificationLinkInvalid (400), VerificationLinkGone (410)
    ├── ResetLinkInvalid (400), ResetLinkGone (410)
    ├── NotAuthenticated (401)
    │   ├── LoginFailed
    │   └── SecondFactorRequired
    ├── Forbidden (403): AccountTerminated, SelfActionRefused, SecondAdminNeeded
    ├── NotFound (404): AccountNotFound, SessionNotFound
    ├── Conflict (409)
    │   ├── EmailTaken, AlreadyVerified, TotpStateConflict
    │   ├── StatusChangeRefused
    │   └── StateChanged (a racing change won)
    └── TooManyRequests (429): LoginThrottled, ResetThrottled

Messages speak to customers; none names an API path or a CLI flag.
"""

from __future__ import annotations

from burrow.control.errors import (
    BurrowError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)

SESSION_EXPIRED = "Your session has expired; sign in again."
LOGIN_FAILED = "Wrong email or password."


class EmailTaken(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "An account with this email already exists.",
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


class SessionNotFound(NotFound):
    pass


class StatusChangeRefused(Conflict):
    pass


class ResetLinkInvalid(BurrowError):
    status = 400
    title = "Invalid link"
    type_slug = "reset-link-invalid"


class ResetLinkGone(BurrowError):
    status = 410
    title = "Link no longer valid"
    type_slug = "reset-link-gone"


class ResetThrottled(TooManyRequests):
    pass


class SelfActionRefused(Forbidden):
    """An administrator acting on their own account (suspend, terminate, demote)."""


class SecondAdminNeeded(Forbidden):
    """Terminating or demoting another administrator, asked from a session (web or API)."""


class StateChanged(Conflict):
    """A compare-and-set lost: the account changed between reading and writing it."""

    title = "Changed meanwhile"
    type_slug = "changed-meanwhile"
