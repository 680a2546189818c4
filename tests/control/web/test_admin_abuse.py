"""The admin panel's abuse desk: record, import, trace and act, under both example policies."""

from __future__ import annotations

import re

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Account, AccountStatus, utcnow
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_session_token,
    create_subscription,
    new_public_key,
)
from tests.support.web import csrf_token

EGRESS = "203.0.113.6"


@pytest.fixture
async def admin(web_customer: MakeWebCustomer, runtime: Runtime) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, name="ams-1")
        node.egress_ipv4 = EGRESS
    return (await web_customer(None, admin=True, two_factor=True)).account


async def _holder(runtime: Runtime, client: httpx.AsyncClient) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        await create_subscription(session, account, plan_code="personal-monthly")
    added = await client.post(
        "/api/v1/devices",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "home-router", "public_key": new_public_key()},
    )
    assert added.status_code == 201, added.text
    return account


async def _record(client: httpx.AsyncClient, port: int) -> str:
    desk = await client.get("/admin/abuse")
    assert desk.status_code == 200
    clause = re.findall(r'<option value="([^"]+)"', desk.text)[0]
    posted = await client.post(
        "/admin/abuse",
        data={
            "clause": clause,
            "source": "abuse@victim.example",
            "egress_ip": EGRESS,
            "port": str(port),
            "seen_at": utcnow().isoformat(),
            "evidence": "Port scan of 198.51.100.0/24",
            "csrf_token": csrf_token(desk),
        },
    )
    assert posted.status_code == 303, posted.text
    location: str = posted.headers["location"]
    return location


class TestMetered:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"policy_path": METERED_POLICY})

    async def test_the_fleet_page_names_the_devices_beyond_a_nodes_port_blocks(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: Account
    ) -> None:
        await _holder(runtime, client)
        page = await client.get("/admin/fleet")
        assert "-nat" not in page.text
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await create_account(session)
            # Factory devices sit far up the pool, past the 64 blocks of the node's address.
            await create_device(session, account)
            await create_device(session, account)
        page = await client.get("/admin/fleet")
        assert 'class="notice notice-warning" id="node-' in page.text
        assert (
            f"ams-1 refuses 2 devices: each device leaves from a block of 1000 ports of its own, "
            f"and {EGRESS} holds 64 blocks."
        ) in page.text

    async def test_record_trace_and_terminate_from_the_panel(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: Account
    ) -> None:
        holder = await _holder(runtime, client)
        url = await _record(client, 1500)
        page = await client.get(url)
        traced = await client.post(f"{url}/trace", data={"csrf_token": csrf_token(page)})
        assert traced.status_code == 303
        page = await client.get(url)
        assert "What the trace found" in page.text
        assert "home-router" in page.text
        assert f'href="/admin/accounts/{holder.id}"' in page.text
        assert 'id="act-form"' in page.text

        refused = await client.post(
            f"{url}/act",
            data={"action": "terminate", "reason": "", "csrf_token": csrf_token(page)},
        )
        assert refused.status_code == 422
        acted = await client.post(
            f"{url}/act",
            data={
                "action": "terminate",
                "reason": "A port scan from your account.",
                "csrf_token": csrf_token(page),
            },
        )
        assert acted.status_code == 303
        page = await client.get(url)
        assert "actioned (terminate)" in page.text
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await session.get(Account, holder.id)
            assert account is not None
            assert account.status is AccountStatus.terminated

    async def test_a_bad_csv_names_its_lines_and_records_nothing(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        desk = await client.get("/admin/abuse")
        clause = re.findall(r'<option value="([^"]+)"', desk.text)[0]
        answer = await client.post(
            "/admin/abuse/import",
            data={
                "clause": clause,
                "source": "notices@rights.example",
                "csv": f"{EGRESS},1100,2026-11-30T10:00:00Z\n{EGRESS},99999,2026-11-30T10:00:00Z",
                "csrf_token": csrf_token(desk),
            },
        )
        assert answer.status_code == 422
        assert "line 2: &#39;99999&#39; is not a port" in answer.text
        assert 'id="complaints-empty"' in answer.text


async def test_under_strict_the_panel_gives_the_answer_to_send_on(
    client: httpx.AsyncClient, runtime: Runtime, admin: Account
) -> None:
    await _holder(runtime, client)
    desk = await client.get("/admin/abuse")
    assert "cannot be traced to anyone" in desk.text
    url = await _record(client, 1500)
    page = await client.get(url)
    await client.post(f"{url}/trace", data={"csrf_token": csrf_token(page)})
    page = await client.get(url)
    assert "Answer to send on" in page.text
    assert "cannot trace this complaint to a customer, by construction" in page.text
    assert 'id="act-form"' not in page.text
