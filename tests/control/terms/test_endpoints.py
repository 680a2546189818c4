"""The terms through the real app: /terms and /terms.md, their versions, an account's acceptance.

Both example policies are loaded through the app (migrations, start-up, routes), so an example
that the app cannot serve fails here.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, utcnow
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from burrow.control.terms.service import terms as terms_service
from tests.conftest import ROOT, TEST_SECRET
from tests.support.factories import create_account, create_session_token, unique_email

POLICIES = ROOT / "examples" / "policies"
PROBLEM = "application/problem+json"


@pytest.fixture(params=["strict-no-logs.toml", "metered.toml"])
async def example_client(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[tuple[Path, httpx.AsyncClient]]:
    policy_path = POLICIES / request.param
    settings = Settings(
        environment="test",
        database_url=database_url,
        policy_path=policy_path,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        scheduler_enabled=False,
        email_enabled=False,
    )
    runtime = Runtime.build(settings)
    await prepare(runtime)
    app = create_app(runtime=runtime)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield policy_path, c
    finally:
        await runtime.close()


async def test_each_example_policy_serves_its_terms(
    example_client: tuple[Path, httpx.AsyncClient],
) -> None:
    policy_path, client = example_client
    page = await client.get("/terms")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    markdown = await client.get("/terms.md")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    current = (await client.get("/api/v1/terms")).json()
    assert current["content_sha256"] == hashlib.sha256(markdown.content).hexdigest()
    assert current["content_sha256"] in page.text
    if policy_path.name == "metered.toml":
        assert "We keep connection records for 30 days" in page.text
        assert "You must be 18 or older" in page.text
    else:
        assert "We do not store the IP address you connect from" in page.text
        assert "30 days of your order" in page.text
    # A sign-up on this policy records its acceptance of these terms.
    body = {
        "email": unique_email("terms"),
        "password": "a long enough password",
        "accept_terms_version": current["version"],
        "age_attestation": "adult",
    }
    assert (await client.post("/api/v1/accounts", json=body)).status_code == 202


async def test_terms_history_and_one_version(
    client: httpx.AsyncClient, session: AsyncSession, runtime: Runtime
) -> None:
    newer = runtime.policy.model_copy(
        update={"terms": runtime.policy.terms.model_copy(update={"version": "2027-01"})}
    )
    await terms_service.publish(session, newer)
    await session.commit()
    history = (await client.get("/api/v1/terms/versions")).json()
    assert [v["version"] for v in history] == ["2027-01", "2026-11"]
    oldest = await client.get(f"/api/v1/terms/versions/{history[-1]['id']}")
    assert oldest.status_code == 200
    assert oldest.json()["markdown"].startswith("# Terms of service: Example Strict VPN")
    assert "Version 2026-11" in oldest.json()["markdown"]
    current = (await client.get("/api/v1/terms")).json()
    assert current["version"] == "2027-01"
    assert current["continued_use_is_acceptance"] is True


@pytest.mark.parametrize(("version_id", "status"), [("999999", 404), ("0", 422), ("x", 422)])
async def test_a_bad_version_id_is_a_problem(
    client: httpx.AsyncClient, version_id: str, status: int
) -> None:
    response = await client.get(f"/api/v1/terms/versions/{version_id}")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM


async def test_what_my_account_accepted(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = {
        "email": unique_email("me"),
        "password": "a long enough password",
        "accept_terms_version": runtime.policy.terms.version,
    }
    created = await client.post("/api/v1/accounts", json=body)
    assert created.status_code == 202, created.text
    async with unit_of_work(runtime.sessionmaker) as s:
        account = await s.scalar(select(Account).where(Account.email == body["email"]))
        assert account is not None
        token = await create_session_token(s, account)
    headers = {"Authorization": f"Bearer {token}"}
    mine = await client.get("/api/v1/accounts/me/terms", headers=headers)
    assert mine.status_code == 200, mine.text
    data = mine.json()
    assert data["accepted_current"] is True
    assert [(a["version"], a["how"]) for a in data["acceptances"]] == [("2026-11", "signup")]
    assert data["acceptances"][0]["content_sha256"] == data["current"]["content_sha256"]

    again = await client.post(
        "/api/v1/accounts/me/terms", json={"version": "2026-11"}, headers=headers
    )
    assert again.status_code == 200
    assert len(again.json()["acceptances"]) == 1  # already accepted: nothing new

    wrong = await client.post(
        "/api/v1/accounts/me/terms", json={"version": "1999"}, headers=headers
    )
    assert wrong.status_code == 409
    assert wrong.json()["current_terms_version"] == "2026-11"
    extra = await client.post(
        "/api/v1/accounts/me/terms", json={"version": "2026-11", "x": 1}, headers=headers
    )
    assert extra.status_code == 422


async def test_continued_use_is_recorded_when_the_account_is_seen(
    client: httpx.AsyncClient, session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    token = await create_session_token(session, account)
    newer = runtime.policy.model_copy(
        update={
            "terms": runtime.policy.terms.model_copy(
                update={"version": "2026-12", "effective_date": utcnow().date() - timedelta(days=1)}
            )
        }
    )
    await terms_service.publish(session, newer)
    await session.commit()
    runtime.policy = newer
    mine = (
        await client.get("/api/v1/accounts/me/terms", headers={"Authorization": f"Bearer {token}"})
    ).json()
    assert mine["current"]["version"] == "2026-12"
    assert mine["accepted_current"] is True
    assert [(a["version"], a["how"]) for a in mine["acceptances"]] == [
        ("2026-11", "signup"),
        ("2026-12", "continued_use"),
    ]


async def test_my_terms_needs_a_session(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/accounts/me/terms")).status_code == 401
    refused = await client.post("/api/v1/accounts/me/terms", json={"version": "2026-11"})
    assert refused.status_code == 401
