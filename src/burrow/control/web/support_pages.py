"""The support pages: open a request (signed in, or signed out with an email address), read
the conversation and write again.

Signed out, the link in the request's emails (``?key=``, a signed token) is the way back;
the same key in the reply form lets that visitor write. Every action is the support
service's, as ``/api/v1/support`` does it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.models import Account, SupportTopic, SupportVia, utcnow
from burrow.control.runtime import Runtime
from burrow.control.support.addresses import view_token
from burrow.control.support.schemas import (
    SignedOutSupportRequestIn,
    SupportMessageIn,
    SupportRequestIn,
)
from burrow.control.support.service import STATUS_NAMES, TOPIC_NAMES, SupportView
from burrow.control.support.service import support as support_service
from burrow.control.web.admin_pages.common import time_left
from burrow.control.web.auth import LoginRequired, OptionalWebAccount
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

Key = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-fA-F]*$")]


def _topics() -> list[tuple[str, str]]:
    return [(topic.value, name) for topic, name in TOPIC_NAMES.items()]


async def _index(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account | None,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    requests = await support_service.own(session, account) if account is not None else []
    default_topic = request.query_params.get("topic", "")
    return render(
        request,
        "support/index.html",
        {
            "requests": requests,
            "form": form or Form.empty(topic=default_topic),
            "topics": _topics(),
            "statuses": STATUS_NAMES,
            "signed_in": account is not None,
            "message_in_email": runtime.policy.support.message_in_email,
            "mode": runtime.policy.privacy.mode,
        },
        status_code=status_code,
    )


@router.get("/support")
async def support_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: OptionalWebAccount
) -> Response:
    return await _index(request, session, runtime, account)


@router.post("/support")
async def open_request(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: OptionalWebAccount
) -> Response:
    schema: type[SupportRequestIn] = (
        SupportRequestIn if account is not None else SignedOutSupportRequestIn
    )

    def email_of(body: SupportRequestIn) -> str | None:
        return str(body.email) if isinstance(body, SignedOutSupportRequestIn) else None

    def opened(body: SupportRequestIn, view: SupportView) -> Response:
        if account is None:
            return render(request, "support/sent.html", {"email": email_of(body)})
        return redirect(
            request,
            f"/support/requests/{view.request.id}",
            flash=f"Your request {view.request.id} is with support.",
        )

    return await submit(
        request,
        session,
        schema,
        lambda body: support_service.open(
            session,
            runtime,
            account=account,
            email=email_of(body),
            topic=SupportTopic(body.topic),
            subject=body.subject,
            body=body.message,
            via=SupportVia.web,
        ),
        page=lambda form, status: _index(request, session, runtime, account, form, status),
        done=opened,
    )


async def _reachable(
    session: SessionDep,
    runtime: Runtime,
    account: Account | None,
    request_id: int,
    key: str | None,
) -> SupportView:
    """The request by its key (from an email), else as one of the signed-in account's."""
    if key:
        return await support_service.by_key(session, runtime, request_id, key)
    if account is None:
        raise LoginRequired(f"/support/requests/{request_id}")
    return await support_service.own_one(session, account, request_id)


def _conversation(
    request: Request,
    runtime: Runtime,
    view: SupportView,
    key: str | None,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "support/request.html",
        {
            "view": view,
            "key": key or "",
            "topic_name": TOPIC_NAMES[view.request.topic],
            "status_name": STATUS_NAMES[view.request.status],
            "time_left": time_left(view.seconds_left(utcnow())),
            "form": form or Form.empty(),
        },
        status_code=status_code,
    )


@router.get("/support/requests/{request_id}")
async def conversation(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: OptionalWebAccount,
    request_id: int,
    key: Key = None,
) -> Response:
    view = await _reachable(session, runtime, account, request_id, key)
    return _conversation(request, runtime, view, key)


@router.post("/support/requests/{request_id}/messages")
async def write(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    account: OptionalWebAccount,
    request_id: int,
) -> Response:
    form = await Form.read(request)
    key = form.raw("key") or None
    if key is not None and len(key) > 64:
        key = key[:64]
    view = await _reachable(session, runtime, account, request_id, key)
    body = form.validate(SupportMessageIn)
    if body is None:
        return _conversation(request, runtime, view, key, form, 422)
    await support_service.customer_reply(
        session, runtime, view.request, body.message, SupportVia.web
    )
    where = f"/support/requests/{request_id}"
    if key:
        where += f"?key={view_token(runtime, request_id)}"
    return redirect(request, where, flash="Your message is with support.")
