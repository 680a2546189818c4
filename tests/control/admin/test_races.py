"""Account state changes are compare-and-set: twenty administrators' requests at once against a
real server (uvicorn on loopback), on SQLite and PostgreSQL, change the account once."""

from __future__ import annotations

import asyncio

import httpx

from burrow.control.audit.service import admin_audit
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import AccountStatus
from burrow.control.policy.clauses import terms_clauses
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_session_token
from tests.support.server import serving

ROUND = 20


async def test_twenty_concurrent_state_changes_apply_once(
    settings: Settings, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        customer = await create_account(s)
        tokens = []
        for _ in range(ROUND):  # twenty administrators, each with a session that proved 2FA
            admin = await create_account(s, admin=True)
            tokens.append(await create_session_token(s, admin))
    clause = terms_clauses(runtime.policy)[0]

    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def act(verb: str, token: str) -> httpx.Response:
                body: dict[str, str] = {"reason": f"{verb} at once"}
                if verb == "terminate":
                    body["clause"] = clause or ""
                return await client.post(
                    f"/api/v1/admin/accounts/{customer.id}/{verb}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )

            for verb, status in (
                ("suspend", AccountStatus.suspended),
                ("unsuspend", AccountStatus.active),
                ("terminate", AccountStatus.terminated),
            ):
                answers = await asyncio.wait_for(
                    asyncio.gather(*(act(verb, token) for token in tokens)), timeout=120
                )
                codes = sorted(a.status_code for a in answers)
                assert codes == [200] + [409] * (ROUND - 1), (verb, codes)
                for lost in (a for a in answers if a.status_code == 409):
                    assert lost.headers["content-type"].startswith("application/problem+json")
                    detail = lost.json()["detail"]
                    assert status.value in detail or "already" in detail, detail
                async with unit_of_work(runtime.sessionmaker) as s:
                    from burrow.control.accounts.service import account as account_service

                    assert (await account_service.get(s, customer.id)).status is status

    async with unit_of_work(runtime.sessionmaker) as s:
        page = await admin_audit.search(s)
    assert sorted(e.action.action for e in page.items) == [
        "account.suspend",
        "account.terminate",
        "account.unsuspend",
    ]
