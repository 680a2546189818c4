"""Sign up, email verification, log in (with the two-factor step, where a recovery code may
stand in for the app's code), a forgotten password, log out, and the account's security page:
password, verification email, two-factor sign-in and its recovery codes, the list of sessions.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import Path, Query, Request, Response

from burrow.control.accounts.schemas import (
    AccountCreate,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    SessionCreate,
)
from burrow.control.accounts.schemas import TotpCodeBody as TotpCodeForm
from burrow.control.accounts.service import SignedIn, sign_up_answer
from burrow.control.accounts.service import account as account_service
from burrow.control.accounts.service.errors import ResetLinkInvalid
from burrow.control.affiliates.service import REFERRAL_COOKIE
from burrow.control.deps import SESSION_COOKIE, RuntimeDep, SessionDep
from burrow.control.errors import BurrowError, NotAuthenticated
from burrow.control.models import AgeAttestation
from burrow.control.runtime import Runtime
from burrow.control.web.auth import (
    OptionalWebAccount,
    Person,
    WebAccount,
    WebPerson,
    client_address,
)
from burrow.control.web.cookies import delete_cookie, set_cookie
from burrow.control.web.forms import Form, attempt, press, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render, safe_next, trusted_svg

router = page_router()

# A 6-digit code from the app, or a recovery code ("abcde-23456").
_SECOND_FACTOR = re.compile(r"^(?:[0-9]{3} ?[0-9]{3}|[A-Za-z0-9]{5}-?[A-Za-z0-9]{5})$")

NextParam = Annotated[str | None, Query(alias="next", max_length=2000)]

AGE_CHOICES = {
    AgeAttestation.adult: "I am {age} or older.",
    AgeAttestation.guardian_consent: "I am younger than {age} and my parent or guardian agrees.",
    AgeAttestation.emancipated_minor: "I am younger than {age} and legally emancipated.",
}


def _age_choices(runtime: Runtime) -> list[tuple[str, str]]:
    age = runtime.policy.age
    allowed = {
        AgeAttestation.adult: True,
        AgeAttestation.guardian_consent: age.allow_guardian_consent,
        AgeAttestation.emancipated_minor: age.allow_emancipated_minor,
    }
    return [
        (choice.value, text.format(age=age.minimum_age))
        for choice, text in AGE_CHOICES.items()
        if allowed[choice]
    ]


def _set_session(request: Request, response: Response, signed_in: SignedIn) -> None:
    runtime = request.app.state.runtime
    max_age = (
        account_service.PENDING_SECOND_FACTOR_SECONDS
        if signed_in.needs_second_factor
        else runtime.settings.session_ttl_hours * 3600
    )
    set_cookie(request, response, SESSION_COOKIE, signed_in.token, max_age=max_age)


# Sign up.


def _signup_page(
    request: Request, runtime: Runtime, form: Form, status_code: int = 200
) -> Response:
    return render(
        request,
        "account/signup.html",
        {
            "form": form,
            "terms_version": runtime.policy.terms.version,
            "age_required": runtime.policy.age.attestation_required,
            "age_choices": _age_choices(runtime),
            "mail_to_output": runtime.settings.mail_to_output,
        },
        status_code=status_code,
    )


@router.get("/signup")
async def signup_page(
    request: Request, runtime: RuntimeDep, account: OptionalWebAccount
) -> Response:
    if account is not None:
        return redirect(request, "/dashboard")
    return _signup_page(request, runtime, Form.empty())


@router.post("/signup")
async def signup(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    version = runtime.policy.terms.version

    def ticked(form: Form) -> bool:
        return form.raw("accept_terms") is not None

    def terms_box(form: Form) -> None:
        if not ticked(form):
            form.errors["accept_terms"] = (
                f"Read and accept the current terms, version {version}, to create an account."
            )

    # The same answer whether the address was free or taken: it must not tell who has an
    # account, so a new account is not signed in here either.
    return await submit(
        request,
        session,
        AccountCreate,
        lambda body: account_service.sign_up(
            session,
            runtime,
            body,
            client_address=client_address(request),
            referral_cookie=request.cookies.get(REFERRAL_COOKIE),
        ),
        page=lambda form, status: _signup_page(request, runtime, form, status),
        done=lambda _body, email: redirect(
            request, "/login", flash=sign_up_answer(runtime, email), kind="info"
        ),
        fields=("age_attestation",),
        fixed=lambda form: {"accept_terms_version": version if ticked(form) else "-"},
        check=terms_box,
    )


@router.get("/verify-email")
async def verify_email(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Where a customer lands from the emailed link (the API's GET answers it too)."""
    try:
        if not token:
            raise NotAuthenticated("This link has no token; open the link from the email.")
        verified = await attempt(
            session, lambda: account_service.verify_email(session, token, runtime)
        )
    except BurrowError as exc:
        return render(
            request,
            "account/verified.html",
            {"ok": False, "message": exc.message},
            status_code=exc.status,
        )
    return render(
        request,
        "account/verified.html",
        {"ok": True, "message": f"Your email address {verified.email} is verified."},
    )


# Log in and out.


@router.get("/login")
async def login_page(
    request: Request, account: OptionalWebAccount, next_url: NextParam = None
) -> Response:
    if account is not None:
        return redirect(request, safe_next(next_url))
    return render(request, "account/login.html", {"form": Form.empty(), "next": next_url or ""})


def _landing(is_admin: bool) -> str:
    return "/admin" if is_admin else "/dashboard"


@router.post("/login")
async def login(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    def page(form: Form, status: int) -> Response:
        context = {"form": form, "next": form.raw("next") or ""}
        return render(request, "account/login.html", context, status_code=status)

    async def sign_in(body: SessionCreate) -> SignedIn:
        return await account_service.sign_in_first_step(
            session,
            runtime,
            email=body.email,
            password=body.password,
            client_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )

    def signed(_body: SessionCreate, signed_in: SignedIn) -> Response:
        # Without a page to return to, an administrator lands on the admin overview.
        target = safe_next(next_field, _landing(signed_in.account.is_admin))
        if signed_in.needs_second_factor:
            response = redirect(request, f"/login/totp?next={quote(target, safe='/')}")
        else:
            response = redirect(request, target)
        _set_session(request, response, signed_in)
        return response

    posted_next = (await request.form()).get("next")
    next_field = posted_next if isinstance(posted_next, str) else None
    return await submit(request, session, SessionCreate, sign_in, page=page, done=signed)


@router.get("/login/totp")
async def totp_page(request: Request, next_url: NextParam = None) -> Response:
    if not request.cookies.get(SESSION_COOKIE):
        return redirect(request, "/login")
    return render(request, "account/totp.html", {"form": Form.empty(), "next": next_url or ""})


@router.post("/login/totp")
async def totp_step(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form = await Form.read(request)
    pending = request.cookies.get(SESSION_COOKIE)
    context = {"form": form, "next": form.raw("next") or ""}
    code = (form.raw("totp_code") or "").strip()
    if not _SECOND_FACTOR.match(code):
        form.errors["totp_code"] = "Enter the 6-digit code from your app, or a recovery code."
        return render(request, "account/totp.html", context, status_code=422)
    if not pending:
        return redirect(request, "/login", flash="Log in again.", kind="info")
    try:
        signed_in = await attempt(
            session,
            lambda: account_service.complete_second_factor(
                session, runtime, pending, code, client_address=client_address(request)
            ),
        )
    except NotAuthenticated as exc:
        if exc.field == "totp_code":
            form.fail(exc, fields=("totp_code",))
            return render(request, "account/totp.html", context, status_code=exc.status)
        response = redirect(request, "/login", flash=exc.message, kind="error")
        delete_cookie(request, response, SESSION_COOKIE)
        return response
    except BurrowError as exc:
        form.fail(exc)
        return render(request, "account/totp.html", context, status_code=exc.status)
    response = redirect(request, safe_next(form.raw("next"), _landing(signed_in.account.is_admin)))
    _set_session(request, response, signed_in)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, account: OptionalWebAccount) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if account is not None and token:
        await account_service.sign_out(session, account, token)
    response = redirect(request, "/login", flash="You are logged out.", kind="info")
    delete_cookie(request, response, SESSION_COOKIE)
    return response


@router.post("/logout-everywhere")
async def logout_everywhere(request: Request, session: SessionDep, account: WebAccount) -> Response:
    await account_service.sign_out_everywhere(session, account)
    response = redirect(
        request, "/login", flash="You are logged out on every device and browser.", kind="info"
    )
    delete_cookie(request, response, SESSION_COOKIE)
    return response


# A forgotten password.


@router.get("/forgot-password")
async def forgot_password_page(request: Request) -> Response:
    return render(request, "account/forgot_password.html", {"form": Form.empty(), "sent": None})


@router.post("/forgot-password")
async def forgot_password(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    def page(form: Form, status: int, sent: str | None = None) -> Response:
        context = {"form": form, "sent": sent}
        return render(request, "account/forgot_password.html", context, status_code=status)

    def sent(body: PasswordResetRequest, _: None) -> Response:
        return page(
            Form.empty(email=body.email),
            200,
            f"If an account uses {body.email}, a link to set a new password is on its way to "
            "it. The link works once, for one hour; check your spam folder if it does not "
            "arrive.",
        )

    return await submit(
        request,
        session,
        PasswordResetRequest,
        lambda body: account_service.request_password_reset(
            session, runtime, email=body.email, client_address=client_address(request)
        ),
        page=page,
        done=sent,
    )


def _reset_page(
    request: Request,
    *,
    token: str = "",
    email: str = "",
    form: Form | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "account/reset_password.html",
        {"token": token, "email": email, "form": form or Form.empty(), "problem": problem},
        status_code=status_code,
    )


@router.get("/reset-password")
async def reset_password_page(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Where the emailed (or operator's) link lands: the form, if the link still works."""
    try:
        if not token:
            raise ResetLinkInvalid("This link has no token; open the link from the email.")
        account = await account_service.check_reset_link(session, token)
    except BurrowError as exc:
        return _reset_page(request, problem=exc.message, status_code=exc.status)
    return _reset_page(request, token=token, email=account.email)


@router.post("/reset-password")
async def reset_password(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    form = await Form.read(request, secret=("new_password",))
    token = form.raw("token") or ""
    body = form.validate(PasswordResetConfirm)
    if body is None:
        if "token" in form.errors:
            return _reset_page(
                request, problem="This link is not valid; ask for a new one.", status_code=400
            )
        return _reset_page(request, token=token, form=form, status_code=422)
    try:
        await attempt(
            session,
            lambda: account_service.reset_password(
                session, runtime, token=body.token, new_password=body.new_password
            ),
        )
    except BurrowError as exc:
        if exc.field == "password":
            form.fail(exc, fields=("new_password",))
            form.errors["new_password"] = form.errors.pop("password", exc.message)
            return _reset_page(request, token=token, form=form, status_code=exc.status)
        return _reset_page(request, problem=exc.message, status_code=exc.status)
    response = redirect(
        request,
        "/login",
        flash="Your new password is set and every session has ended: log in with it.",
    )
    delete_cookie(request, response, SESSION_COOKIE)
    return response


# The account's sessions.


@router.get("/account/sessions")
async def sessions_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    token = request.cookies.get(SESSION_COOKIE) or ""
    found = await account_service.list_sessions(session, runtime, account, token)
    return render(request, "account/sessions.html", {"sessions": found})


@router.post("/account/sessions/{session_id}/end")
async def end_session(
    request: Request,
    session_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    account: WebAccount,
) -> Response:
    def ended(was_current: bool) -> Response:
        if was_current:
            response = redirect(request, "/login", flash="You are logged out.", kind="info")
            delete_cookie(request, response, SESSION_COOKIE)
            return response
        return redirect(request, "/account/sessions", flash="That session has ended.")

    return await press(
        request,
        session,
        lambda: account_service.end_session(
            session, account, session_id, request.cookies.get(SESSION_COOKIE)
        ),
        back="/account/sessions",
        done=ended,
    )


# The account's security page.


async def _account_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    password_form: Form | None = None,
    totp_form: Form | None = None,
    recovery_form: Form | None = None,
    status_code: int = 200,
) -> Response:
    left = (
        await account_service.recovery_codes_left(session, person.id) if person.totp_enabled else 0
    )
    return render(
        request,
        "account/account.html",
        {
            "account": person,
            "password_form": password_form or Form.empty(),
            "totp_form": totp_form or Form.empty(),
            "recovery_form": recovery_form or Form.empty(),
            "recovery_codes_left": left,
        },
        status_code=status_code,
    )


@router.get("/account")
async def account_page(request: Request, session: SessionDep, person: WebPerson) -> Response:
    return await _account_page(request, session, person)


@router.post("/account/password")
async def change_password(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    return await submit(
        request,
        session,
        PasswordChange,
        lambda body: account_service.change_password(
            session,
            runtime,
            account,
            current_password=body.current_password,
            new_password=body.new_password,
            current_token=request.cookies.get(SESSION_COOKIE),
        ),
        page=lambda form, status: _account_page(
            request, session, person, password_form=form, status_code=status
        ),
        done=lambda _body, _: redirect(
            request, "/account", flash="Your password is changed; your other sessions have ended."
        ),
        fields=("current_password",),
        renamed={"password": "new_password"},
    )


@router.post("/account/verification-email")
async def resend_verification(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    return await press(
        request,
        session,
        lambda: account_service.resend_verification(session, runtime, account),
        back="/account",
        done=lambda _: redirect(
            request, "/account", flash=f"A new link is on its way to {person.email}."
        ),
    )


@router.get("/account/two-factor")
async def two_factor_page(request: Request, runtime: RuntimeDep, account: WebAccount) -> Response:
    enrolment = account_service.pending_enrolment(runtime, account)
    if enrolment is None:
        return redirect(request, "/account")
    return render(
        request,
        "account/two_factor.html",
        {"enrolment": enrolment, "qr_svg": trusted_svg(enrolment.qr_svg), "form": Form.empty()},
    )


@router.post("/account/two-factor/start")
async def start_two_factor(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await press(
        request,
        session,
        lambda: account_service.start_totp(session, runtime, account),
        back="/account",
        done=lambda _: redirect(request, "/account/two-factor"),
    )


@router.post("/account/two-factor/confirm")
async def confirm_two_factor(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    form = await Form.read(request)
    body = form.validate(TotpCodeForm)
    error: BurrowError | None = None
    codes: list[str] = []
    if body is not None:
        try:
            codes = await attempt(
                session, lambda: account_service.confirm_totp(session, runtime, account, body.code)
            )
        except BurrowError as exc:
            form.fail(exc, fields=("code",))
            error = exc
    if body is None or error is not None:
        enrolment = account_service.pending_enrolment(runtime, account)
        if enrolment is None:
            return redirect(request, "/account", flash=form.message or "", kind="error")
        return render(
            request,
            "account/two_factor.html",
            {"enrolment": enrolment, "qr_svg": trusted_svg(enrolment.qr_svg), "form": form},
            status_code=error.status if error else 422,
        )
    return _recovery_codes_page(
        request, codes, "Two-factor sign-in is on: logging in will ask for a code from your app."
    )


def _recovery_codes_page(request: Request, codes: list[str], intro: str) -> Response:
    response = render(request, "account/recovery_codes.html", {"codes": codes, "intro": intro})
    # Shown once: no browser or proxy keeps a copy.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/account/two-factor/recovery-codes")
async def new_recovery_codes(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    def code_field(form: Form) -> None:
        if "code" in form.errors:
            form.errors["renew_code"] = form.errors.pop("code")

    return await submit(
        request,
        session,
        TotpCodeForm,
        lambda body: account_service.regenerate_recovery_codes(
            session, runtime, account, body.code
        ),
        page=lambda form, status: _account_page(
            request, session, person, recovery_form=form, status_code=status
        ),
        done=lambda _body, codes: _recovery_codes_page(
            request, codes, "Here are ten new recovery codes; the old ones no longer work."
        ),
        renamed={"code": "renew_code"},
        fixed=lambda form: {"code": form.raw("renew_code") or ""},
        check=code_field,
    )


@router.post("/account/two-factor/disable")
async def disable_two_factor(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    return await submit(
        request,
        session,
        TotpCodeForm,
        lambda body: account_service.disable_totp(session, runtime, account, body.code),
        page=lambda form, status: _account_page(
            request, session, person, totp_form=form, status_code=status
        ),
        done=lambda _body, _: redirect(request, "/account", flash="Two-factor sign-in is off."),
        fields=("code",),
    )
