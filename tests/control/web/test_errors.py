"""Error pages after the request's transaction rolled back still show who is signed in."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from burrow.control.deps import SessionDep
from burrow.control.errors import Conflict
from burrow.control.web.auth import Person, WebAccount
from burrow.control.web.routing import page_router
from tests.control.web.conftest import MakeWebCustomer


async def test_an_error_raised_after_a_change_renders_with_the_signed_in_header(
    app: FastAPI, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    router = page_router()

    @router.get("/test-only/fails-after-a-change")
    async def fails(session: SessionDep, account: WebAccount) -> HTMLResponse:
        account.status_reason = "changed, then rolled back"
        await session.flush()
        raise Conflict("Refused after a change.")

    app.include_router(router)
    await web_customer()

    page = await client.get("/test-only/fails-after-a-change")

    assert page.status_code == 409, page.text
    assert "Refused after a change." in page.text
    assert 'id="logout"' in page.text  # the header still knows someone is signed in


async def test_the_header_reads_the_frozen_person_not_the_row_a_rollback_expired(
    app: FastAPI, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    # The admin link and the email come from the copy made at sign-in: the row itself is
    # expired by the rollback and would need the database (which the error page never reads).
    router = page_router()
    seen: list[object] = []

    @router.get("/test-only/changes-the-row")
    async def changes_the_row(
        request: Request, session: SessionDep, account: WebAccount
    ) -> HTMLResponse:
        seen.append(request.state.person)
        account.email = "changed-then-rolled-back@example.test"
        await session.flush()
        raise Conflict("Refused after a change.")

    app.include_router(router)
    customer = await web_customer(admin=True)

    page = await client.get("/test-only/changes-the-row")

    assert page.status_code == 409, page.text
    assert "Refused after a change." in page.text
    assert 'href="/admin"' in page.text
    assert "changed-then-rolled-back" not in page.text
    person = seen[0]
    assert isinstance(person, Person)
    assert person.email == customer.account.email
    with pytest.raises(dataclasses.FrozenInstanceError):
        person.email = "someone-else@example.test"  # type: ignore[misc]
