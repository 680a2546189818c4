"""web/forms.py: the read -> validate -> call -> page-or-redirect helper, and the savepoint
each form action runs in, so a refused form no longer rolls back the rest of the request."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from burrow.control.db import after_commit, unit_of_work
from burrow.control.deps import SessionDep
from burrow.control.errors import Conflict
from burrow.control.models import Account, AccountSession, utcnow
from burrow.control.runtime import Runtime
from burrow.control.web.auth import WebAccount
from burrow.control.web.forms import Form, press, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render
from tests.control.web.conftest import MakeWebCustomer
from tests.support.web import csrf_token, field_error, post_form


async def _last_used(runtime: Runtime, account_id: int) -> object:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await session.scalar(
            select(AccountSession.last_used_at).where(AccountSession.account_id == account_id)
        )


async def _age_session(runtime: Runtime, account_id: int) -> None:
    long_ago = utcnow() - timedelta(days=1)
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(
            update(AccountSession)
            .where(AccountSession.account_id == account_id)
            .values(last_used_at=long_ago)
        )


async def test_a_refused_form_keeps_what_the_request_did_before_it(
    runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    # Signing the request in marks the session as used; a wrong current password used to roll
    # that back with the refused change (the whole request's transaction).
    customer = await web_customer()
    page = await client.get("/account")
    await _age_session(runtime, customer.account.id)
    before = await _last_used(runtime, customer.account.id)

    wrong = await client.post(
        "/account/password",
        data={
            "current_password": "not the password",
            "new_password": "another long password",
            "csrf_token": csrf_token(page),
        },
    )

    assert wrong.status_code == 422, wrong.text
    assert field_error(wrong, "current_password") == "Your current password is not right."
    assert await _last_used(runtime, customer.account.id) != before


class _Reason(BaseModel):
    reason: str = Field(min_length=3, max_length=100)


def _savepoint_pages(app: FastAPI, ran: list[str]) -> None:
    """Test-only pages: one change before the form's action, one inside it, then a refusal."""
    router = page_router()

    def page(request: Request, form: Form, status: int) -> Response:
        return render(
            request,
            "error.html",
            {"title": "Form", "message": form.message or "-"},
            status_code=status,
        )

    @router.post("/test-only/refused-form")
    async def refused_form(request: Request, session: SessionDep, account: WebAccount) -> Response:
        account.status_reason = "before the form"
        after_commit(session, lambda: ran.append("before"))

        async def action(body: _Reason) -> None:
            account.terminated_clause = body.reason
            after_commit(session, lambda: ran.append("inside"))
            await session.flush()
            raise Conflict("Refused on purpose.")

        return await submit(
            request,
            session,
            _Reason,
            action,
            page=lambda form, status: page(request, form, status),
            done=lambda _body, _: redirect(request, "/done"),
        )

    @router.post("/test-only/refused-button")
    async def refused_button(
        request: Request, session: SessionDep, account: WebAccount
    ) -> Response:
        account.status_reason = "before the button"

        async def action() -> None:
            account.terminated_clause = "inside the button"
            after_commit(session, lambda: ran.append("inside"))
            await session.flush()
            raise Conflict("Refused on purpose.")

        return await press(
            request, session, action, back="/account", done=lambda _: redirect(request, "/done")
        )

    app.include_router(router)


async def _row(runtime: Runtime, account_id: int) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account


async def test_a_refused_action_undoes_only_itself_and_its_after_commit_callbacks(
    app: FastAPI, runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    ran: list[str] = []
    _savepoint_pages(app, ran)
    customer = await web_customer()

    refused = await post_form(
        client, "/test-only/refused-form", {"reason": "inside the form"}, page="/account"
    )

    assert refused.status_code == 409, refused.text
    assert "Refused on purpose." in refused.text
    assert 'id="logout"' in refused.text  # the header: the frozen person, after the rollback
    row = await _row(runtime, customer.account.id)
    assert row.status_reason == "before the form"  # the request's own work committed
    assert row.terminated_clause is None  # the action's did not
    assert ran == ["before"]


async def test_an_invalid_form_never_calls_its_action(
    app: FastAPI, runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    ran: list[str] = []
    _savepoint_pages(app, ran)
    customer = await web_customer()

    invalid = await post_form(client, "/test-only/refused-form", {"reason": ""}, page="/account")

    assert invalid.status_code == 422, invalid.text
    row = await _row(runtime, customer.account.id)
    assert row.status_reason == "before the form"
    assert row.terminated_clause is None
    assert ran == ["before"]


async def test_a_refused_button_says_why_on_the_page_it_came_from(
    app: FastAPI, runtime: Runtime, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    ran: list[str] = []
    _savepoint_pages(app, ran)
    customer = await web_customer()

    refused = await post_form(client, "/test-only/refused-button", page="/account")

    assert refused.status_code == 303
    assert refused.headers["location"] == "/account"
    assert "Refused on purpose." in (await client.get("/account")).text
    row = await _row(runtime, customer.account.id)
    assert row.status_reason == "before the button"
    assert row.terminated_clause is None
    assert ran == []
