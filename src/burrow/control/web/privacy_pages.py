"""The privacy center's pages: download the data, change the email address or the billing
details, give or withdraw consents, ask for something a person must answer, delete the
account (after reading what is kept, and for how long).

Every action is the privacy service's (the same as ``/api/v1/privacy``), so the pages and the
API answer alike; every form works without JavaScript.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from burrow.control.billing.schemas import BillingDetailsIn
from burrow.control.billing.service import NoBillingDetails
from burrow.control.billing.service import billing as billing_service
from burrow.control.deps import SESSION_COOKIE, RuntimeDep, SessionDep
from burrow.control.models import Account, ConsentPurpose, PrivacyRequestKind
from burrow.control.privacy.schemas import EmailChangeIn, ErasureIn, PrivacyRequestIn
from burrow.control.privacy.service import Erased, retention_statement
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.runtime import Runtime
from burrow.control.web.auth import Person, WebAccount, WebPerson
from burrow.control.web.cookies import delete_cookie
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

KIND_LABELS = {
    PrivacyRequestKind.access: "A copy of something not in the download",
    PrivacyRequestKind.rectification: "Correct something we hold about you",
    PrivacyRequestKind.restriction: "Restrict how your data is used",
    PrivacyRequestKind.objection: "Object to a use of your data",
    PrivacyRequestKind.erasure: "Erase something in particular",
}
CONSENT_LABELS = {
    ConsentPurpose.marketing_email: "Marketing email",
    ConsentPurpose.product_analytics: "Product analytics",
}
CONFIRM_MISSING = "Tick the box to confirm that the account and its devices go for good."


async def _overview(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    *,
    request_form: Form | None = None,
    status_code: int = 200,
) -> Response:
    consents = await privacy_service.consents(session, account)
    return render(
        request,
        "privacy/index.html",
        {
            "account": request.state.person,
            "consents": [(s, CONSENT_LABELS[s.purpose]) for s in consents],
            "requests": await privacy_service.own_requests(session, account),
            "request_form": request_form or Form.empty(),
            "kinds": [(kind.value, label) for kind, label in KIND_LABELS.items()],
            "response_days": runtime.policy.privacy.request_response_days,
            "mode": runtime.policy.privacy.mode,
        },
        status_code=status_code,
    )


@router.get("/privacy")
async def privacy_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _overview(request, session, runtime, account)


@router.post("/privacy/export")
async def export(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    """The same JSON document as ``GET /api/v1/privacy/export``, as a file to save."""
    document = await privacy_service.export(session, runtime, account)
    day = document.generated_at.date().isoformat()
    return Response(
        content=document.model_dump_json(indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="burrow-export-{account.id}-{day}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/privacy/consents")
async def consents(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    # An unticked box is not posted: every purpose the page shows is set, ticked or not.
    form = await Form.read(request)
    changes = {purpose: form.checked(purpose.value) for purpose in ConsentPurpose}
    await privacy_service.set_consents(session, runtime, account, changes, source="web")
    return redirect(request, "/privacy", flash="Your choices are saved.")


@router.post("/privacy/requests")
async def open_request(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await submit(
        request,
        session,
        PrivacyRequestIn,
        lambda body: privacy_service.open_request(
            session, runtime, account, body.kind, body.details
        ),
        page=lambda form, status: _overview(
            request, session, runtime, account, request_form=form, status_code=status
        ),
        done=lambda _body, made: redirect(
            request,
            "/privacy",
            flash=f"Request received; we answer by {made.due_at.date().isoformat()}.",
        ),
    )


# Change the email address.


def _email_page(request: Request, person: Person, form: Form, status_code: int = 200) -> Response:
    return render(
        request, "privacy/email.html", {"account": person, "form": form}, status_code=status_code
    )


@router.get("/privacy/email")
async def email_page(request: Request, person: WebPerson) -> Response:
    return _email_page(request, person, Form.empty())


@router.post("/privacy/email")
async def change_email(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    return await submit(
        request,
        session,
        EmailChangeIn,
        lambda body: privacy_service.request_email_change(
            session, runtime, account, new_email=body.new_email, password=body.password
        ),
        page=lambda form, status: _email_page(request, person, form, status),
        done=lambda _body, new_email: redirect(
            request,
            "/privacy",
            flash=f"A link is on its way to {new_email}. Your address changes when you open it.",
            kind="info",
        ),
        fields=("password",),
        # The address is taken: say so next to the address.
        renamed={"email": "new_email"},
    )


# Billing details.


async def _billing_page(
    request: Request,
    session: SessionDep,
    account: Account,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    if form is None:
        try:
            details = await billing_service.details(session, account.id)
        except NoBillingDetails:
            form = Form.empty()
        else:
            form = Form.empty(
                country=details.country,
                city=details.city,
                postal_code=details.postal_code,
                card_last4=details.card_last4 or "",
                name_or_company=details.name_or_company or "",
            )
    return render(request, "privacy/billing.html", {"form": form}, status_code=status_code)


@router.get("/privacy/billing")
async def billing_page(request: Request, session: SessionDep, account: WebAccount) -> Response:
    return await _billing_page(request, session, account)


@router.post("/privacy/billing")
async def billing_details(request: Request, session: SessionDep, account: WebAccount) -> Response:
    return await submit(
        request,
        session,
        BillingDetailsIn,
        lambda body: billing_service.set_details(session, account.id, body),
        page=lambda form, status: _billing_page(request, session, account, form, status),
        done=lambda _body, _: redirect(
            request, "/privacy/billing", flash="Your billing details are saved."
        ),
    )


# Delete the account.


def _delete_page(
    request: Request, runtime: Runtime, person: Person, form: Form, status_code: int = 200
) -> Response:
    context: dict[str, Any] = {
        "account": person,
        "form": form,
        "retention": retention_statement(runtime.policy),
    }
    return render(request, "privacy/delete.html", context, status_code=status_code)


@router.get("/privacy/delete")
async def delete_page(request: Request, runtime: RuntimeDep, person: WebPerson) -> Response:
    return _delete_page(request, runtime, person, Form.empty())


@router.post("/privacy/delete")
async def delete_account(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    person: WebPerson,
) -> Response:
    def confirm_box(form: Form) -> None:
        if not form.checked("confirm"):
            form.errors["confirm"] = CONFIRM_MISSING

    def deleted(_body: ErasureIn, erased: Erased) -> Response:
        # Signed out from here on: the page must not show the account in its header.
        request.state.person = None
        response = render(request, "privacy/deleted.html", {"retention": erased.retention})
        delete_cookie(request, response, SESSION_COOKIE)
        return response

    return await submit(
        request,
        session,
        ErasureIn,
        lambda body: privacy_service.erase(
            session, runtime, account, password=body.password, totp_code=body.totp_code
        ),
        page=lambda form, status: _delete_page(request, runtime, person, form, status),
        done=deleted,
        fields=("password", "totp_code"),
        fixed=lambda _form: {"confirm": True},
        check=confirm_box,
    )
