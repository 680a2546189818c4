"""Sign-up: one answer whether the address is free or taken, the owner told, limited per client."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account
from burrow.control.runtime import Runtime
from tests.support.app import app_client, running_runtime
from tests.support.factories import create_account, unique_email
from tests.support.smtp import Inbox, SmtpServer


def _body(runtime: Runtime, email: str) -> dict[str, object]:
    return {
        "email": email,
        "password": "a long enough password",
        "accept_terms_version": runtime.policy.terms.version,
        "age_attestation": "adult",
    }


async def _accounts_with(runtime: Runtime, email: str) -> int:
    async with unit_of_work(runtime.sessionmaker) as s:
        return int(
            await s.scalar(select(func.count()).select_from(Account).where(Account.email == email))
            or 0
        )


async def test_a_taken_address_gets_the_same_answer_and_its_owner_an_email(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        owner = await create_account(s)
    fresh = unique_email("fresh")

    new = await client.post("/api/v1/accounts", json=_body(runtime, fresh))
    taken = await client.post("/api/v1/accounts", json=_body(runtime, owner.email.upper()))

    assert new.status_code == taken.status_code == 202, (new.text, taken.text)
    assert new.json()["detail"] == taken.json()["detail"].replace(owner.email, fresh)
    assert "Check your mail" in taken.json()["detail"]
    assert "reset" not in taken.text.lower()
    assert await _accounts_with(runtime, owner.email) == 1
    assert await _accounts_with(runtime, fresh) == 1

    # The new address gets its link; the owner of the taken one hears someone tried.
    link = Inbox.body(smtp.inbox.wait_for(fresh)[0])
    assert "/verify-email?token=" in link
    notice = smtp.inbox.wait_for(owner.email)[0]
    assert "tried to" in str(notice["Subject"]).lower()
    text = Inbox.body(notice)
    assert "http://testserver/forgot-password" in text
    assert "/verify-email" not in text


async def test_sign_ups_are_limited_per_client(settings: Settings, smtp: SmtpServer) -> None:
    tight = settings.model_copy(update={"signup_limit_client": "3 per hour"})
    async with running_runtime(tight) as runtime, app_client(runtime) as client:
        answers = [
            (await client.post("/api/v1/accounts", json=_body(runtime, unique_email("many"))))
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        refused = answers[-1]
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        assert "Too many sign-ups" in refused.json()["detail"]


async def test_twenty_sign_ups_at_once_for_one_address_make_one_account(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    email = unique_email("race")
    responses = await asyncio.gather(
        *(client.post("/api/v1/accounts", json=_body(runtime, email)) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {202}
    assert await _accounts_with(runtime, email) == 1
