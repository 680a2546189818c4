"""Twenty requests at once against a real server (uvicorn on loopback), on SQLite and PostgreSQL,
under the metered policy: devices added at once each get a port block of their own and a row of
history; twenty administrators acting on one traced complaint act once."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import (
    AbuseComplaint,
    AccountStatus,
    AddressHolding,
    AdminAction,
    ComplaintStatus,
    utcnow,
)
from burrow.control.policy.clauses import terms_clauses
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.factories import (
    create_account,
    create_node,
    create_session_token,
    create_subscription,
    new_public_key,
)
from tests.support.server import serving

ROUND = 20
EGRESS = "203.0.113.6"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"policy_path": METERED_POLICY})


async def test_twenty_at_once_get_blocks_of_their_own_and_act_once(
    settings: Settings, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as s:
        node = await create_node(s, name="ams-1")
        node.egress_ipv4 = EGRESS
        customers = []
        for _ in range(ROUND):
            account = await create_account(s)
            await create_subscription(s, account, plan_code="personal-monthly")
            customers.append((account, await create_session_token(s, account)))
        admins = []
        for _ in range(ROUND):
            admin = await create_account(s, admin=True)
            admins.append(await create_session_token(s, admin))
    clause = terms_clauses(runtime.policy)[0]

    with serving(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            def auth(token: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {token}"}

            added = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/devices",
                            headers=auth(token),
                            json={"name": "laptop", "public_key": new_public_key()},
                        )
                        for _account, token in customers
                    )
                ),
                timeout=120,
            )
            assert [a.status_code for a in added] == [201] * ROUND, [a.text for a in added]
            addresses = sorted(a.json()["ipv4"] for a in added)
            assert addresses == sorted(f"10.64.0.{n}" for n in range(2, 2 + ROUND))

            complaint = await client.post(
                "/api/v1/admin/abuse/complaints",
                headers=auth(admins[0]),
                json={
                    "clause": clause,
                    "source": "abuse@victim.example",
                    "egress_ip": EGRESS,
                    "port": 1024 + 7 * 1000 + 5,  # the eighth block: 10.64.0.9
                    "seen_at": utcnow().isoformat(),
                },
            )
            assert complaint.status_code == 201, complaint.text
            url = f"/api/v1/admin/abuse/complaints/{complaint.json()['id']}"
            traces = await asyncio.wait_for(
                asyncio.gather(*(client.post(f"{url}/trace", headers=auth(t)) for t in admins)),
                timeout=120,
            )
            # gather keeps the order: the customer whose answer holds 10.64.0.9.
            holder = next(
                account
                for (account, _token), answer in zip(customers, added, strict=True)
                if answer.json()["ipv4"] == "10.64.0.9"
            )
            assert {t.json()["account_id"] for t in traces} == {holder.id}

            body = {"action": "suspend", "reason": "A port scan from your account."}
            acted = await asyncio.wait_for(
                asyncio.gather(
                    *(client.post(f"{url}/act", headers=auth(t), json=body) for t in admins)
                ),
                timeout=120,
            )
            codes = sorted(a.status_code for a in acted)
            assert codes == [200] + [409] * (ROUND - 1), codes
            assert all(
                a.headers["content-type"].startswith("application/problem+json")
                for a in acted
                if a.status_code == 409
            )

    async with unit_of_work(runtime.sessionmaker) as s:
        held = (await s.scalars(select(AddressHolding.ipv4))).all()
        assert sorted(held) == addresses
        suspended = await s.get(type(holder), holder.id)
        assert suspended is not None
        assert suspended.status is AccountStatus.suspended
        actions = (
            await s.scalars(select(AdminAction.action).where(AdminAction.action == "abuse.suspend"))
        ).all()
        assert actions == ["abuse.suspend"]
        (row,) = (await s.scalars(select(AbuseComplaint))).all()
        assert row.status is ComplaintStatus.actioned
