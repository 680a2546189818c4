"""Error pages after the request's transaction rolled back still show who is signed in."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from burrow.control.deps import SessionDep
from burrow.control.errors import Conflict
from burrow.control.web.auth import WebAccount
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


async def test_the_error_page_survives_a_page_that_kept_the_database_row(
    app: FastAPI, client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    # A page that hands the header the ORM row itself (as the admin pages once had to work
    # around): after the rollback the row is expired, and reading it would need the database.
    router = page_router()

    @router.get("/test-only/keeps-the-row")
    async def keeps_the_row(
        request: Request, session: SessionDep, account: WebAccount
    ) -> HTMLResponse:
        request.state.account = account
        account.status_reason = "changed, then rolled back"
        await session.flush()
        raise Conflict("Refused after a change.")

    app.include_router(router)
    await web_customer(admin=True)

    page = await client.get("/test-only/keeps-the-row")

    assert page.status_code == 409, page.text
    assert "Refused after a change." in page.text
    assert 'id="logout"' in page.text
    assert 'href="/admin"' in page.text
