"""The abuse desk through the admin API: record, import, trace, act; metered and strict.

Metered (deterministic NAT): the port a complaint names gives the port block, the block the
tunnel address, the history the device that held it then and its account; after the
retention the same trace finds nothing. Strict: the answer is why no trace is possible.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from burrow.control.abuse.service import abuse as abuse_service
from burrow.control.abuse.service import parse_notices
from burrow.control.audit.service import CliOperator
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.devices.service import device as device_service
from burrow.control.devices.tasks import purge_address_history
from burrow.control.models import (
    Account,
    AccountStatus,
    AddressHolding,
    AdminAction,
    utcnow,
)
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_session_token,
    create_subscription,
    new_public_key,
)
from tests.support.smtp import SmtpServer

EGRESS = "203.0.113.6"
CLAUSE = "Policy for using our services"


async def _customer(runtime: Runtime) -> tuple[Account, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        await create_subscription(session, account, plan_code="personal-monthly")
    return account, {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin(runtime: Runtime) -> dict[str, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=True)
        return {"Authorization": f"Bearer {await create_session_token(session, account)}"}


@pytest.fixture
async def node(runtime: Runtime) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        made = await create_node(session, name="ams-1")
        made.egress_ipv4 = EGRESS


async def _device(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, str]:
    answer = await client.post(
        "/api/v1/devices", headers=headers, json={"name": name, "public_key": new_public_key()}
    )
    assert answer.status_code == 201, answer.text
    device: dict[str, str] = answer.json()
    return device


async def _complaint(
    client: httpx.AsyncClient, admin: dict[str, str], port: int, **changes: object
) -> httpx.Response:
    body = {
        "clause": CLAUSE,
        "source": "abuse@victim.example",
        "egress_ip": EGRESS,
        "port": port,
        "seen_at": utcnow().isoformat(),
        "evidence": "SSH brute force against our server",
        **changes,
    }
    return await client.post("/api/v1/admin/abuse/complaints", headers=admin, json=body)


class TestMetered:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"policy_path": METERED_POLICY})

    async def test_the_trace_names_the_account_whose_block_holds_the_port(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        admin: dict[str, str],
        node: None,
    ) -> None:
        alice, alice_headers = await _customer(runtime)
        bob, bob_headers = await _customer(runtime)
        first = await _device(client, alice_headers, "alice-laptop")
        second = await _device(client, bob_headers, "bob-phone")
        # Devices get offsets 2 and 3: blocks 1024-2023 and 2024-3023 (1,000 ports each).
        assert (first["ipv4"], second["ipv4"]) == ("10.64.0.2", "10.64.0.3")

        recorded = await _complaint(client, admin, 2500)
        assert recorded.status_code == 201, recorded.text
        complaint = recorded.json()
        traced = await client.post(
            f"/api/v1/admin/abuse/complaints/{complaint['id']}/trace", headers=admin
        )
        assert traced.status_code == 200, traced.text
        trace = traced.json()
        assert trace["outcome"] == "traced"
        assert trace["account_id"] == bob.id
        assert trace["device_name"] == "bob-phone"
        assert trace["port_block"] == f"{EGRESS}:2024-3023"
        assert "bob-phone" in trace["reason"]
        assert trace["complaint"]["status"] == "traced"

        other = (await _complaint(client, admin, 1024)).json()
        traced = await client.post(
            f"/api/v1/admin/abuse/complaints/{other['id']}/trace", headers=admin
        )
        assert traced.json()["account_id"] == alice.id

    async def test_a_block_used_again_traces_each_time_to_its_holder_then(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        admin: dict[str, str],
        node: None,
    ) -> None:
        alice, alice_headers = await _customer(runtime)
        carol, carol_headers = await _customer(runtime)
        first = await _device(client, alice_headers, "alice-laptop")
        before = (await _complaint(client, admin, 1500)).json()
        await asyncio.sleep(1.1)  # complaints name whole seconds
        removed = await client.delete(f"/api/v1/devices/{first['id']}", headers=alice_headers)
        assert removed.status_code == 204
        # Deterministic NAT: the freed block goes to the next device.
        again = await _device(client, carol_headers, "carol-phone")
        assert again["ipv4"] == first["ipv4"]
        await asyncio.sleep(1.1)
        after = (await _complaint(client, admin, 1500)).json()
        traced = []
        for complaint in (before, after):
            answer = await client.post(
                f"/api/v1/admin/abuse/complaints/{complaint['id']}/trace", headers=admin
            )
            traced.append(answer.json()["account_id"])
        assert traced == [alice.id, carol.id]

    async def test_twenty_devices_added_at_once_get_twenty_blocks_and_twenty_holdings(
        self, client: httpx.AsyncClient, runtime: Runtime, node: None
    ) -> None:
        customers = [await _customer(runtime) for _ in range(20)]
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/devices",
                    headers=headers,
                    json={"name": "laptop", "public_key": new_public_key()},
                )
                for _account, headers in customers
            )
        )
        assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers]
        addresses = sorted(a.json()["ipv4"] for a in answers)
        assert addresses == sorted(f"10.64.0.{n}" for n in range(2, 22))
        async with unit_of_work(runtime.sessionmaker) as session:
            held = (await session.scalars(select(AddressHolding))).all()
        assert sorted(h.ipv4 for h in held) == addresses
        assert {h.account_id for h in held} == {account.id for account, _h in customers}

    async def test_after_the_retention_the_same_trace_finds_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        admin: dict[str, str],
        node: None,
    ) -> None:
        _alice, headers = await _customer(runtime)
        device = await _device(client, headers, "laptop")
        complaint = (await _complaint(client, admin, 1500)).json()
        removed = await client.delete(f"/api/v1/devices/{device['id']}", headers=headers)
        assert removed.status_code == 204
        operator = CliOperator("root")
        async with unit_of_work(runtime.sessionmaker) as session:
            trace = await abuse_service.trace(session, runtime, operator, complaint["id"])
        # Removed after the complaint's time: the history still names it.
        assert trace.outcome == "traced"

        later = utcnow() + timedelta(days=31)
        async with unit_of_work(runtime.sessionmaker) as session:
            assert await device_service.purge_address_history(session, runtime, later) == 1
        async with unit_of_work(runtime.sessionmaker) as session:
            assert (await session.scalars(select(AddressHolding))).all() == []
            trace = await abuse_service.trace(session, runtime, operator, complaint["id"], later)
        assert trace.outcome == "not_found"
        assert "30 days" in trace.reason

    async def test_the_purge_keeps_what_the_retention_allows(
        self, client: httpx.AsyncClient, runtime: Runtime, node: None
    ) -> None:
        _alice, headers = await _customer(runtime)
        device = await _device(client, headers, "laptop")
        await client.delete(f"/api/v1/devices/{device['id']}", headers=headers)
        assert await purge_address_history(runtime) == 0
        async with unit_of_work(runtime.sessionmaker) as session:
            (holding,) = (await session.scalars(select(AddressHolding))).all()
        assert holding.held_until is not None
        assert holding.ipv4 == device["ipv4"]

    async def test_a_port_outside_every_block_and_a_foreign_address_find_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], node: None
    ) -> None:
        _alice, headers = await _customer(runtime)
        await _device(client, headers, "laptop")
        for port, address, words in (
            (80, EGRESS, "lies in no device's block"),
            (1500, "198.51.100.9", "is not the egress address of any"),
        ):
            complaint = (await _complaint(client, admin, port, egress_ip=address)).json()
            trace = await client.post(
                f"/api/v1/admin/abuse/complaints/{complaint['id']}/trace", headers=admin
            )
            assert trace.json()["outcome"] == "not_found"
            assert words in trace.json()["reason"]

    async def test_terminating_for_the_clause_tells_the_holder_once_of_twenty(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        admin: dict[str, str],
        node: None,
        smtp: SmtpServer,
    ) -> None:
        alice, headers = await _customer(runtime)
        await _device(client, headers, "laptop")
        complaint = (await _complaint(client, admin, 1100)).json()
        url = f"/api/v1/admin/abuse/complaints/{complaint['id']}"
        early = await client.post(
            f"{url}/act", headers=admin, json={"action": "warn", "reason": "x"}
        )
        assert early.status_code == 409
        assert "trace it first" in early.json()["detail"]
        await client.post(f"{url}/trace", headers=admin)

        body = {"action": "terminate", "reason": "Brute force from your account."}
        answers = await asyncio.gather(
            *(client.post(f"{url}/act", headers=admin, json=body) for _ in range(20))
        )
        assert sorted(a.status_code for a in answers) == [200] + [409] * 19
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await session.get(Account, alice.id)
            assert account is not None
            assert account.status is AccountStatus.terminated
            assert account.terminated_clause == CLAUSE
            actions = (
                await session.scalars(
                    select(AdminAction.action).where(AdminAction.target_id == str(alice.id))
                )
            ).all()
        assert sorted(actions) == ["abuse.terminate", "account.terminate"]
        (notice,) = await smtp.inbox.arrived(alice.email)
        assert "terminated" in str(notice["Subject"])
        text = smtp.inbox.body(notice)
        assert CLAUSE in text
        assert "Brute force from your account." in text


class TestFewBlocks:
    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        text = METERED_POLICY.read_text().replace(
            "nat_devices_per_egress_ip = 64", "nat_devices_per_egress_ip = 2"
        )
        policy = tmp_path / "two-blocks.toml"
        policy.write_text(text)
        return settings.model_copy(update={"policy_path": policy})

    async def test_a_device_past_every_block_is_refused_with_the_reason(
        self, client: httpx.AsyncClient, runtime: Runtime, node: None
    ) -> None:
        _alice, headers = await _customer(runtime)
        first = await _device(client, headers, "one")
        await _device(client, headers, "two")
        third = await client.post(
            "/api/v1/devices",
            headers=headers,
            json={"name": "three", "public_key": new_public_key()},
        )
        assert third.status_code == 409
        assert third.headers["content-type"].startswith("application/problem+json")
        assert "all 2 are in use" in third.json()["detail"]
        assert "Remove a device you no longer use" in third.json()["detail"]
        # A freed block is taken again.
        await client.delete(f"/api/v1/devices/{first['id']}", headers=headers)
        again = await _device(client, headers, "three")
        assert again["ipv4"] == first["ipv4"]


class TestSeveralEgressAddresses:
    """Two blocks per address and two addresses: four devices, the last two on the second."""

    SECOND = "203.0.113.7"

    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        text = METERED_POLICY.read_text().replace(
            "nat_devices_per_egress_ip = 64", "nat_devices_per_egress_ip = 2"
        )
        policy = tmp_path / "two-blocks.toml"
        policy.write_text(text)
        return settings.model_copy(update={"policy_path": policy})

    @pytest.fixture
    async def node(self, runtime: Runtime) -> None:
        async with unit_of_work(runtime.sessionmaker) as session:
            made = await create_node(session, name="ams-1")
            made.egress_ipv4 = EGRESS
            made.egress_ipv4_extra = self.SECOND

    async def test_a_device_on_the_second_address_is_traced_and_the_fifth_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], node: None
    ) -> None:
        customers = [await _customer(runtime) for _ in range(4)]
        devices = [
            await _device(client, headers, f"dev-{n}") for n, (_a, headers) in enumerate(customers)
        ]
        assert [d["ipv4"] for d in devices] == [f"10.64.0.{n}" for n in range(2, 6)]
        fifth = await client.post(
            "/api/v1/devices",
            headers=customers[0][1],
            json={"name": "five", "public_key": new_public_key()},
        )
        assert fifth.status_code == 409
        assert "all 4 are in use" in fifth.json()["detail"]

        # The third device holds the first block of the second address; the fourth its second.
        for address, port, holder, block in (
            (self.SECOND, 1500, 2, "1024-2023"),
            (self.SECOND, 2024, 3, "2024-3023"),
            (EGRESS, 1500, 0, "1024-2023"),
        ):
            complaint = (await _complaint(client, admin, port, egress_ip=address)).json()
            trace = (
                await client.post(
                    f"/api/v1/admin/abuse/complaints/{complaint['id']}/trace", headers=admin
                )
            ).json()
            assert trace["outcome"] == "traced", trace["reason"]
            assert trace["account_id"] == customers[holder][0].id
            assert trace["tunnel_ipv4"] == devices[holder]["ipv4"]
            assert trace["port_block"] == f"{address}:{block}"

    async def test_the_capacity_is_addresses_times_blocks(
        self, runtime: Runtime, node: None
    ) -> None:
        async with unit_of_work(runtime.sessionmaker) as session:
            (made,) = await node_service.list_all(session)
            held = await abuse_service.nat_capacity(session, runtime, made)
        assert held is not None
        assert (held.blocks, held.refused) == (4, 0)
        async with unit_of_work(runtime.sessionmaker) as session:
            # A factory device sits far up the pool, past both addresses' blocks.
            await create_device(session, await create_account(session))
        async with unit_of_work(runtime.sessionmaker) as session:
            held = await abuse_service.nat_capacity(session, runtime, made)
        assert held is not None
        assert held.refused == 1
        assert (
            f"ams-1 refuses 1 device: each device leaves from a block of 1000 ports of its own, "
            f"and its 2 egress addresses ({EGRESS}, {self.SECOND}) hold 4 blocks."
        ) in (held.message or "")


class TestStrict:
    async def test_the_trace_is_refused_with_its_reason(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str], node: None
    ) -> None:
        _alice, headers = await _customer(runtime)
        await _device(client, headers, "laptop")
        clause = (await client.get("/api/v1/admin/terms-clauses", headers=admin)).json()
        complaint = (await _complaint(client, admin, 1100, clause=clause["clauses"][0])).json()
        url = f"/api/v1/admin/abuse/complaints/{complaint['id']}"
        trace = (await client.post(f"{url}/trace", headers=admin)).json()
        assert trace["outcome"] == "untraceable"
        assert trace["account_id"] is None
        assert "cannot trace this complaint to a customer, by construction" in trace["reason"]
        assert "random source port" in trace["reason"]
        assert trace["complaint"]["status"] == "untraceable"
        act = await client.post(
            f"{url}/act", headers=admin, json={"action": "suspend", "reason": "spam"}
        )
        assert act.status_code == 409
        async with unit_of_work(runtime.sessionmaker) as session:
            assert (await session.scalars(select(AddressHolding))).all() == []


async def test_a_clause_outside_the_terms_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    answer = await _complaint(client, admin, 1100, clause="Being rude")
    assert answer.status_code == 422
    assert answer.json()["field"] == "clause"


async def test_a_csv_of_notices_is_recorded_whole_or_not_at_all(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    clause = (await client.get("/api/v1/admin/terms-clauses", headers=admin)).json()["clauses"][0]
    url = "/api/v1/admin/abuse/complaints"
    good = (
        "address,port,time\n"
        f"{EGRESS},1100,2026-11-30T10:00:00Z\n"
        "# a comment\n\n"
        f"{EGRESS}, 2500 ,2026-11-30 10:05:00 UTC\n"
        f"{EGRESS},3000,1796033400\n"
    )
    body = {"clause": clause, "source": "notices@rights.example", "csv": good}
    answer = await client.post(f"{url}/import", headers=admin, json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["recorded"] == 3
    assert [c["port"] for c in answer.json()["complaints"]] == [1100, 2500, 3000]

    bad = f"{EGRESS},1100,2026-11-30T10:00:00\nnot-an-ip,1,2026-11-30T10:00:00Z\n{EGRESS},0,1\n"
    answer = await client.post(f"{url}/import", headers=admin, json={**body, "csv": bad})
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["lines"] == [
        "line 1: the time '2026-11-30T10:00:00' has no time zone; add Z for UTC (or its offset)",
        "line 2: 'not-an-ip' is not an IP address",
        "line 3: '0' is not a port (1 to 65535)",
    ]
    listed = (await client.get(url, headers=admin)).json()
    assert listed["total"] == 3


def test_notice_times_in_the_common_formats() -> None:
    parsed = parse_notices("192.0.2.1,80,2026-11-30T10:00:00+01:00\n192.0.2.1,80,1796032800\n")
    assert [when.isoformat() for _a, _p, when in parsed] == [
        "2026-11-30T09:00:00+00:00",
        "2026-11-30T10:00:00+00:00",
    ]


async def test_a_complaint_in_the_future_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    clause = (await client.get("/api/v1/admin/terms-clauses", headers=admin)).json()["clauses"][0]
    later = (utcnow() + timedelta(hours=2)).isoformat()
    answer = await _complaint(client, admin, 1100, clause=clause, seen_at=later)
    assert answer.status_code == 422
    assert "in the future" in answer.json()["detail"]
