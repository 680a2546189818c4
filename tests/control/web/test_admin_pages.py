"""The admin panel over httpx form posts: who may enter, CSRF, and each page's actions with
their rows in the admin audit trail."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from burrow.control.accounts.service import account as account_service
from burrow.control.app import create_app
from burrow.control.audit.service import CliOperator
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import (
    Account,
    AccountSession,
    AccountStatus,
    AdminAction,
    ConnectionRecord,
    Device,
    Node,
    PrivacyRequest,
    PrivacyRequestKind,
    PrivacyRequestStatus,
    RefundRequest,
    WebhookEvent,
    utcnow,
)
from burrow.control.nodes import service as nodes_module
from burrow.control.policy.clauses import terms_clauses
from burrow.control.policy.schemas import DnsFilterSection, DnsSection
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.control.startup import prepare
from burrow.wire import API_PREFIX
from tests.conftest import ROOT
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import (
    DEFAULT_PASSWORD,
    create_account,
    create_device,
    create_node,
    create_session_token,
    create_subscription,
    new_public_key,
)
from tests.support.smtp import Inbox, SmtpServer
from tests.support.web import csrf_token, post_form, sign_in_as

METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"


def by_id(page: httpx.Response, element_id: str) -> str | None:
    """The text inside the element with ``id`` (tags removed), or None when it is absent."""
    found = re.search(
        rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page.text, re.S
    )
    if found is None:
        return None
    text = html.unescape(re.sub(r"<[^>]+>", "", found.group(2)))
    return " ".join(text.split())


async def _trail(runtime: Runtime) -> list[AdminAction]:
    async with unit_of_work(runtime.sessionmaker) as session:
        return list((await session.scalars(select(AdminAction).order_by(AdminAction.id))).all())


async def _account(runtime: Runtime, account_id: int) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account


async def _customer(runtime: Runtime) -> Account:
    async with unit_of_work(runtime.sessionmaker) as session:
        return await create_account(session)


@pytest.fixture
async def admin(web_customer: MakeWebCustomer) -> Account:
    return (await web_customer(None, admin=True, two_factor=True)).account


# --- who may enter ----------------------------------------------------------------------------


async def test_signed_out_goes_to_login(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/accounts")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin/accounts"


async def test_a_customer_is_refused(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    for path in ("/admin", "/admin/accounts", "/admin/refunds", "/admin/audit", "/admin/policy"):
        response = await client.get(path)
        assert response.status_code == 403, path
        assert "text/html" in response.headers["content-type"]
        assert "for administrators" in response.text


async def test_an_admin_without_two_factor_is_sent_to_set_it_up(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, runtime: Runtime
) -> None:
    plain = await web_customer(None, admin=True)
    victim = await _customer(runtime)
    response = await client.get("/admin/accounts")
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    page = await client.get("/account")
    assert "needs two-factor sign-in" in page.text
    # Not even a post with a valid token gets through.
    token = csrf_token(page)
    posted = await client.post(
        f"/admin/accounts/{victim.id}/suspend", data={"reason": "x", "csrf_token": token}
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/account"
    assert (await _account(runtime, victim.id)).status is AccountStatus.active
    assert plain.account.totp_enabled is False
    assert await _trail(runtime) == []


async def test_a_session_waiting_for_its_code_cannot_enter(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        admin.totp_enabled = True
        admin.totp_secret = "JBSWY3DPEHPK3PXP"
        token = new_token()
        session.add(
            AccountSession(
                account_id=admin.id,
                token_hash=hash_token(token),
                expires_at=utcnow() + timedelta(minutes=10),
                needs_second_factor=True,
            )
        )
    sign_in_as(client, token)
    response = await client.get("/admin")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


async def test_a_session_older_than_two_factor_cannot_enter(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True, totp=False)
        token = await create_session_token(session, admin)  # opened with the password alone
        admin.totp_enabled = True  # two-factor turned on afterwards
        admin.totp_secret = pyotp.random_base32()
    sign_in_as(client, token)
    response = await client.get("/admin")
    assert response.status_code == 403
    assert "log in again with a code" in response.text


async def test_logging_in_with_the_code_opens_the_panel(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    secret = pyotp.random_base32()
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        admin.totp_enabled = True
        admin.totp_secret = secret
    first = await post_form(
        client, "/login", {"email": admin.email, "password": DEFAULT_PASSWORD, "next": "/admin"}
    )
    assert first.status_code == 303
    assert first.headers["location"].startswith("/login/totp")
    assert (await client.get("/admin")).status_code == 303  # the password alone is not enough
    second = await post_form(
        client,
        "/login/totp",
        {"totp_code": pyotp.TOTP(secret).now(), "next": "/admin"},
        page=first.headers["location"],
    )
    assert second.status_code == 303, second.text
    assert second.headers["location"] == "/admin"
    panel = await client.get("/admin")
    assert panel.status_code == 200
    assert by_id(panel, "admin-nav-accounts") == "Accounts"


async def test_forms_need_the_csrf_token(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    victim = await _customer(runtime)
    for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "forged"}):
        response = await client.post(f"/admin/accounts/{victim.id}/suspend", data=data)
        assert response.status_code == 403
        assert "Form refused" in response.text
    assert (await _account(runtime, victim.id)).status is AccountStatus.active
    assert await _trail(runtime) == []


# --- accounts ---------------------------------------------------------------------------------


async def test_search_and_view_an_account(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        carol = await create_account(session, email="carol@example.com")
        await create_account(session, email="dave@example.com")
    found = await client.get("/admin/accounts", params={"q": "carol"})
    assert found.status_code == 200
    assert by_id(found, f"account-link-{carol.id}") == "carol@example.com"
    assert "dave@example.com" not in found.text
    bad = await client.get("/admin/accounts", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert "account-search-status-error" in bad.text

    page = await client.get(f"/admin/accounts/{carol.id}")
    assert page.status_code == 200
    assert by_id(page, "account-status") == "active"
    # Strict no-logs: counts, a plain statement, and never an address.
    assert by_id(page, "account-device-count") == "0 devices; 0 connected now."
    assert "keeps no connection records" in (by_id(page, "account-connections-statement") or "")
    # The last sign-in address only where the policy keeps one.
    shows_ip = 'id="account-login-ip"' in page.text
    assert shows_ip is runtime.policy.privacy.store_last_login_ip
    assert (await client.get("/admin/accounts/999999")).status_code == 404


async def test_admin_suspends_then_unsuspends_an_account(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    victim = await _customer(runtime)
    url = f"/admin/accounts/{victim.id}"
    empty = await post_form(client, f"{url}/suspend", {"reason": ""}, page=url)
    assert empty.status_code == 422
    assert by_id(empty, "suspend-reason-error")
    assert await _trail(runtime) == []

    done = await post_form(client, f"{url}/suspend", {"reason": "Chargeback filed"}, page=url)
    assert done.status_code == 303
    assert done.headers["location"] == url
    shown = await client.get(url)
    assert "The account is suspended" in shown.text
    assert by_id(shown, "account-status-reason") == "Chargeback filed"
    assert (await _account(runtime, victim.id)).status is AccountStatus.suspended

    back = await post_form(client, f"{url}/unsuspend", {"reason": "Settled"}, page=url)
    assert back.status_code == 303
    assert (await _account(runtime, victim.id)).status is AccountStatus.active
    rows = await _trail(runtime)
    assert [(r.action, r.admin_id, r.target_id, r.reason) for r in rows] == [
        ("account.suspend", admin.id, str(victim.id), "Chargeback filed"),
        ("account.unsuspend", admin.id, str(victim.id), "Settled"),
    ]
    trail = await client.get(url)
    assert by_id(trail, f"admin-action-{rows[0].id}") is not None


async def test_terminate_for_a_named_clause(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    victim = await _customer(runtime)
    url = f"/admin/accounts/{victim.id}"
    page = await client.get(url)
    assert "Prohibited activities: distributing malware" in page.text
    # Only clauses that describe prohibited conduct are offered, and only they are accepted.
    assert '<option value="General"' not in page.text
    assert '<option value="Your rights"' not in page.text
    general = await post_form(
        client, f"{url}/terminate", {"clause": "General", "reason": "x"}, page=url
    )
    assert general.status_code == 422
    assert "is not a clause of the terms" in (by_id(general, "terminate-clause-error") or "")
    unknown = await post_form(
        client, f"{url}/terminate", {"clause": "Being rude", "reason": "x"}, page=url
    )
    assert unknown.status_code == 422
    assert "is not a clause of the terms" in (by_id(unknown, "terminate-clause-error") or "")
    # The form is kept.
    assert "Being rude" not in (by_id(unknown, "terminate-reason") or "")
    assert (await _account(runtime, victim.id)).status is AccountStatus.active

    clause = "Prohibited activities: distributing malware"
    done = await post_form(
        client, f"{url}/terminate", {"clause": clause, "reason": "Botnet C2 traffic"}, page=url
    )
    assert done.status_code == 303
    account = await _account(runtime, victim.id)
    assert account.status is AccountStatus.terminated
    assert account.terminated_clause == clause
    shown = await client.get(url)
    assert by_id(shown, "account-clause") == clause
    assert "account-no-actions" in shown.text
    rows = await _trail(runtime)
    assert [(r.action, r.reason) for r in rows] == [("account.terminate", "Botnet C2 traffic")]
    assert clause in rows[0].detail


async def test_grant_time(client: httpx.AsyncClient, admin: Account, runtime: Runtime) -> None:
    victim = await _customer(runtime)
    url = f"/admin/accounts/{victim.id}"
    both = await post_form(
        client,
        f"{url}/grant",
        {"plan_code": "personal-monthly", "months": "1", "days": "3"},
        page=url,
    )
    assert both.status_code == 422
    assert "either 'months' or 'days'" in (by_id(both, "grant-error") or "")
    done = await post_form(
        client,
        f"{url}/grant",
        {"plan_code": "personal-monthly", "months": "", "days": "14", "reason": "Outage"},
        page=url,
    )
    assert done.status_code == 303, done.text
    shown = await client.get(url)
    assert "(personal-monthly)" in (by_id(shown, "account-subscription") or "")
    rows = await _trail(runtime)
    assert [(r.action, r.reason) for r in rows] == [("subscription.grant", "Outage")]


# --- fleet ------------------------------------------------------------------------------------


async def test_create_a_node_shows_its_enrollment_command(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    bad = await post_form(
        client,
        "/admin/fleet",
        {"name": "AMS 1", "country": "XX", "city": "Amsterdam", "endpoint_host": "vpn.example.net"},
    )
    assert bad.status_code == 422
    assert by_id(bad, "node-country-error")
    assert 'value="Amsterdam"' in bad.text  # the form is kept

    created = await post_form(
        client,
        "/admin/fleet",
        {
            "name": "ams-1",
            "country": "NL",
            "city": "Amsterdam",
            "endpoint_host": "vpn.example.net",
            "endpoint_port": "51820",
            "capacity": "200",
        },
    )
    assert created.status_code == 201, created.text
    command = by_id(created, "enrollment-command") or ""
    assert command.startswith("burrow node enroll --control http://testserver --token ")
    token = command.rsplit(" ", 1)[1]
    async with unit_of_work(runtime.sessionmaker) as session:
        node = (await session.scalars(select(Node).where(Node.name == "ams-1"))).one()
    assert node.enrollment_token_hash == hash_token(token)
    listed = await client.get("/admin/fleet")
    assert "enrollment-command" not in listed.text  # shown once
    assert "never reported" in (by_id(listed, f"node-{node.id}") or "")

    retired = await post_form(client, f"/admin/fleet/{node.id}/retire", page="/admin/fleet")
    assert retired.status_code == 303
    rows = await _trail(runtime)
    assert [(r.action, r.target_id) for r in rows] == [
        ("node.create", str(node.id)),
        ("node.retire", str(node.id)),
    ]
    assert token not in rows[0].detail


# --- fleet: what reporting nodes show ---------------------------------------------------------


@dataclass
class _Fleet:
    """Two nodes that reported through the node API, and what must never appear of the peers."""

    busy: Node
    quiet: Node
    identities: list[str]


def _cells(page: httpx.Response, row_id: str) -> list[str]:
    """The text of each cell of the table row with ``row_id``."""
    row = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', page.text, re.S)
    assert row is not None, f"no row {row_id}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells]


async def _report(
    client: httpx.AsyncClient, token: str, seq: int, connected: list[str], idle: list[str]
) -> None:
    """One status report through the node API, as the agent sends it."""
    peers = [
        {"public_key": key, "connected": True, "rx_bytes": 5000, "tx_bytes": 7000}
        for key in connected
    ] + [{"public_key": key, "connected": False} for key in idle]
    response = await client.post(
        f"{API_PREFIX}/report",
        json={"boot_id": "boot-1", "seq": seq, "revision": 0, "peers": peers},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is True


async def _reporting_fleet(client: httpx.AsyncClient, runtime: Runtime) -> _Fleet:
    """Node ams-1 (capacity 4) with 3 of 4 customers' devices connected; fra-1 (capacity 10)
    with none. Each device belongs to its own customer, so no plan limit blocks any."""
    tokens = {name: new_token("bwn_") for name in ("ams-1", "fra-1")}
    async with unit_of_work(runtime.sessionmaker) as session:
        busy = await create_node(session, name="ams-1", capacity=4)
        quiet = await create_node(session, name="fra-1", capacity=10)
        busy.node_token_hash = hash_token(tokens["ams-1"])
        quiet.node_token_hash = hash_token(tokens["fra-1"])
        devices: list[Device] = []
        emails: list[str] = []
        for n in range(4):
            account = await create_account(session)
            await create_subscription(session, account)
            devices.append(await create_device(session, account, name=f"Phone of person {n}"))
            await desired_state_service.refresh_account(session, runtime, account.id)
            emails.append(account.email)
    keys = [d.public_key for d in devices]
    await _report(client, tokens["ams-1"], 1, connected=keys[:3], idle=keys[3:])
    await _report(client, tokens["fra-1"], 1, connected=[], idle=[])
    identities = emails + keys + [d.name for d in devices] + [d.ipv4 for d in devices]
    return _Fleet(busy, quiet, identities)


def _assert_counts_only(page: httpx.Response, fleet: _Fleet) -> None:
    for identity in fleet.identities:
        assert identity not in page.text, identity
        assert html.escape(identity) not in page.text, identity


async def test_fleet_shows_reporting_nodes_by_counts_only_under_the_strict_policy(
    client: httpx.AsyncClient,
    admin: Account,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = await _reporting_fleet(client, runtime)
    page = await client.get("/admin/fleet")
    assert page.status_code == 200, page.text

    busy = _cells(page, f"node-{fleet.busy.id}")
    assert busy[0] == "ams-1"
    assert busy[4] == "online"
    assert re.fullmatch(r"\d+ s ago", busy[5]), busy[5]
    assert busy[6] == "3 / 4"
    assert busy[7] == "75%"
    quiet = _cells(page, f"node-{fleet.quiet.id}")
    assert (quiet[4], quiet[6], quiet[7]) == ("online", "0 / 10", "0%")

    assert "only how many devices are connected" in (by_id(page, "fleet-privacy") or "")
    _assert_counts_only(page, fleet)

    # ams-1 stops reporting: its last report is two hours old, and the page says it is silent.
    two_hours_ago = utcnow().timestamp() - 2 * 3600 - 5
    monkeypatch.setattr(nodes_module, "_now", lambda: two_hours_ago)
    async with unit_of_work(runtime.sessionmaker) as session:
        token = new_token("bwn_")
        stale = await create_node(session, name="waw-1", capacity=10)
        stale.node_token_hash = hash_token(token)
    await _report(client, token, 1, connected=[new_public_key()], idle=[])
    monkeypatch.undo()
    later = await client.get("/admin/fleet")
    silent = _cells(later, f"node-{stale.id}")
    assert silent[4] == "silent"
    assert silent[5] == "2 h 0 min ago"
    # Its last count stays visible beside that age; its load now is unknown.
    assert (silent[6], silent[7]) == ("1 / 10", "—")
    assert _cells(later, f"node-{fleet.busy.id}")[4] == "online"


async def test_fleet_shows_only_counts_under_the_metered_policy_too(settings: Settings) -> None:
    runtime = Runtime.build(settings.model_copy(update={"policy_path": METERED_POLICY}))
    await prepare(runtime)
    try:
        async with unit_of_work(runtime.sessionmaker) as session:
            admin = await create_account(session, admin=True)
            admin.totp_enabled = True
            admin.totp_secret = "JBSWY3DPEHPK3PXP"
            token = await create_session_token(session, admin)
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            fleet = await _reporting_fleet(client, runtime)
            sign_in_as(client, token)
            page = await client.get("/admin/fleet")
        assert page.status_code == 200, page.text
        busy = _cells(page, f"node-{fleet.busy.id}")
        assert (busy[4], busy[6], busy[7]) == ("online", "3 / 4", "75%")
        # The metered policy keeps connection records, but the fleet is no place for them.
        assert 'id="fleet-privacy"' not in page.text
        _assert_counts_only(page, fleet)
    finally:
        await runtime.close()


# --- refunds ----------------------------------------------------------------------------------


async def _queued_refund(client: httpx.AsyncClient, runtime: Runtime, n: int) -> int:
    """A strict-policy refund request waiting for a person (a reason that needs judgement)."""
    async with unit_of_work(runtime.sessionmaker) as session:
        api_admin = await create_account(session, admin=True)
        customer = await create_account(session)
        admin_auth = {"Authorization": f"Bearer {await create_session_token(session, api_admin)}"}
        auth = {"Authorization": f"Bearer {await create_session_token(session, customer)}"}
    paid = await client.post(
        f"/api/v1/admin/accounts/{customer.id}/payments",
        json={
            "plan_code": "personal-monthly",
            "amount_minor": 699,
            "currency": "USD",
            "method": "card",
            "reference": f"r-{n}",
        },
        headers=admin_auth,
    )
    assert paid.status_code == 201, paid.text
    asked = await client.post(
        f"/api/v1/billing/orders/{paid.json()['order']['id']}/refund",
        json={"reason": "Does not work with my TV"},
        headers=auth,
    )
    assert asked.json()["status"] == "queued", asked.text
    request_id: int = asked.json()["id"]
    return request_id


async def test_admin_decides_refunds_from_the_queue(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    first = await _queued_refund(client, runtime, 1)
    second = await _queued_refund(client, runtime, 2)
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(
            update(RefundRequest)
            .where(RefundRequest.id == second)
            .values(due_at=utcnow() - timedelta(hours=2))
        )
    before = len(await _trail(runtime))  # the API's manual payments
    queue = await client.get("/admin/refunds")
    assert queue.status_code == 200
    # Overdue first, with the time left and every rule with its evidence.
    assert queue.text.index(f'id="refund-{second}"') < queue.text.index(f'id="refund-{first}"')
    assert (by_id(queue, f"refund-deadline-{second}") or "").startswith("overdue by 2 h")
    # The strict policy sets no service level: a request without a deadline comes last.
    assert by_id(queue, f"refund-deadline-{first}") == "no deadline"
    assert f'id="refund-rules-{first}"' in queue.text
    assert f'id="refund-{first}-rule-window_days"' in queue.text
    assert "Asked within the refund window" in queue.text
    assert "window_days<" not in queue.text
    assert "minor units" not in queue.text

    too_much = await post_form(
        client,
        f"/admin/refunds/{first}/approve",
        {"amount": "999.99", "reason": "x"},
        page="/admin/refunds",
    )
    assert too_much.status_code == 422
    assert "At most 6.99 USD" in (by_id(too_much, f"approve-error-{first}") or "") + (
        by_id(too_much, f"approve-amount-{first}-error") or ""
    )
    partial = await post_form(
        client,
        f"/admin/refunds/{first}/approve",
        {"amount": "3.00", "reason": "Half, goodwill"},
        page="/admin/refunds",
    )
    assert partial.status_code == 303, partial.text
    no_reason = await post_form(
        client, f"/admin/refunds/{second}/refuse", {"reason": ""}, page="/admin/refunds"
    )
    assert no_reason.status_code == 422
    refused = await post_form(
        client,
        f"/admin/refunds/{second}/refuse",
        {"reason": "Works as advertised"},
        page="/admin/refunds",
    )
    assert refused.status_code == 303
    async with unit_of_work(runtime.sessionmaker) as session:
        decided = {
            r.id: (r.status, r.amount_minor)
            for r in (await session.scalars(select(RefundRequest))).all()
        }
    assert decided[first][1] == 300
    assert decided[second][0] == "refused"
    rows = (await _trail(runtime))[before:]
    assert [(r.action, r.target_id, r.reason, r.admin_id) for r in rows] == [
        ("refund.approve", str(first), "Half, goodwill", admin.id),
        ("refund.refuse", str(second), "Works as advertised", admin.id),
    ]
    empty = await client.get("/admin/refunds")
    assert "refund-queue-empty" in empty.text


async def test_admin_sees_a_parked_payment_event_and_tries_it_again(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        parked = WebhookEvent(
            provider="stripe",
            event_id="evt_parked",
            type="customer.updated",
            payload=json.dumps({"id": "evt_parked", "type": "customer.updated", "data": {}}),
            attempts=8,
            error="ProviderUnavailable: Stripe did not answer",
            failed_at=utcnow(),
        )
        session.add(parked)
    page = await client.get("/admin/payment-events")
    assert page.status_code == 200
    assert by_id(page, f"payment-event-error-{parked.id}") == (
        "ProviderUnavailable: Stripe did not answer"
    )
    assert by_id(page, f"payment-event-attempts-{parked.id}") == "8"
    retried = await post_form(
        client, f"/admin/payment-events/{parked.id}/retry", page="/admin/payment-events"
    )
    assert retried.status_code == 303, retried.text
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(WebhookEvent, parked.id)
        assert stored is not None
        assert stored.processed_at is not None
        assert stored.failed_at is None
    assert "payment-events-empty" in (await client.get("/admin/payment-events")).text
    [row] = (await _trail(runtime))[-1:]
    assert (row.action, row.target_id, row.admin_id) == (
        "webhook_event.retry",
        str(parked.id),
        admin.id,
    )


# --- policy, audit, trail, privacy ------------------------------------------------------------


async def test_policy_page_and_audit_on_demand(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    page = await client.get("/admin/policy")
    assert page.status_code == 200
    assert (by_id(page, "policy-check") or "").startswith("policy OK: Example Strict VPN")
    assert "2026-11" in (by_id(page, "policy-terms-version") or "")
    assert "[provider]" in (by_id(page, "policy-text") or "")
    ran = await post_form(client, "/admin/policy/audit", page="/admin/policy")
    assert ran.status_code == 200, ran.text
    assert by_id(ran, "audit-verdict") == "Nothing breaks the policy."
    assert "Scanned" in (by_id(ran, "audit-counts") or "")
    rows = await _trail(runtime)
    assert [r.action for r in rows] == ["policy.audit"]


async def test_policy_page_shows_the_dns_lists_and_their_malformed_lines(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "ads.txt").write_text("ads.example\nnot a name\nhttp://x/\ntracker.example\n")
    section = DnsSection(
        filters={
            "ads": DnsFilterSection(title="Ads", file=str(tmp_path / "ads.txt")),
            "gone": DnsFilterSection(title="Gone", file=str(tmp_path / "gone.txt")),
        }
    )
    runtime.policy = runtime.policy.model_copy(update={"dns": section})
    page = await client.get("/admin/policy")
    assert page.status_code == 200
    ads = by_id(page, "dns-list-ads") or ""
    assert "Ads" in ads
    counts = r"<td[^>]*>2</td><td class=\"dns-malformed\"[^>]*>2</td>"
    assert re.search(counts, page.text) is not None
    assert "cannot read" in (by_id(page, "dns-list-gone") or "")


async def test_audit_trail_page_newest_first_with_filters(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    victim = await _customer(runtime)
    url = f"/admin/accounts/{victim.id}"
    await post_form(client, f"{url}/suspend", {"reason": "first"}, page=url)
    await post_form(client, f"{url}/unsuspend", {"reason": "second"}, page=url)
    page = await client.get("/admin/audit")
    assert page.status_code == 200
    assert by_id(page, "audit-count") == "2 actions."
    rows = await _trail(runtime)
    newest, oldest = f'id="admin-action-{rows[1].id}"', f'id="admin-action-{rows[0].id}"'
    assert page.text.index(newest) < page.text.index(oldest)
    only = await client.get("/admin/audit", params={"action": "account.suspend"})
    assert by_id(only, "audit-count") == "1 action."
    bad = await client.get("/admin/audit", params={"action": "a\x00"})
    assert bad.status_code == 422


async def test_the_trail_names_the_command_line_operator(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    victim = await _customer(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        await account_service.suspend(session, runtime, CliOperator("ops"), victim.id, "unpaid")
    page = await client.get("/admin/audit")
    (row,) = await _trail(runtime)
    text = by_id(page, f"admin-action-{row.id}") or ""
    assert "command line (ops)" in text
    assert "(deleted admin)" not in text


async def test_privacy_requests_needing_a_person(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        customer = await create_account(session)
        request = PrivacyRequest(
            account_id=customer.id,
            kind=PrivacyRequestKind.rectification,
            status=PrivacyRequestStatus.pending,
            received_at=utcnow(),
            due_at=utcnow() + timedelta(days=30),
            details="My name on invoices is wrong.",
        )
        session.add(request)
        await session.flush()
        request_id = request.id
    page = await client.get("/admin/privacy")
    assert page.status_code == 200
    assert "29 d" in (by_id(page, f"privacy-deadline-{request_id}") or "")
    empty = await post_form(
        client,
        f"/admin/privacy/{request_id}/resolve",
        {"decision": "done", "outcome": ""},
        page="/admin/privacy",
    )
    assert empty.status_code == 422
    done = await post_form(
        client,
        f"/admin/privacy/{request_id}/resolve",
        {"decision": "done", "outcome": "Corrected the name."},
        page="/admin/privacy",
    )
    assert done.status_code == 303, done.text
    rows = await _trail(runtime)
    assert [(r.action, r.target_id, r.reason) for r in rows] == [
        ("privacy_request.resolve", str(request_id), "Corrected the name.")
    ]
    after = await client.get("/admin/privacy")
    assert "privacy-queue-empty" in after.text


async def test_metered_account_shows_connection_records_not_addresses(settings: Settings) -> None:
    """The metered seed keeps connection records (shown) and no login address (not shown)."""
    runtime = Runtime.build(settings.model_copy(update={"policy_path": METERED_POLICY}))
    await prepare(runtime)
    try:
        async with unit_of_work(runtime.sessionmaker) as session:
            admin = await create_account(session, admin=True)
            admin.totp_enabled = True
            admin.totp_secret = "JBSWY3DPEHPK3PXP"
            token = await create_session_token(session, admin)
            customer = await create_account(session)
            customer.last_login_ip = "198.51.100.7"
            session.add(
                ConnectionRecord(
                    account_id=customer.id,
                    node_name="ams-1",
                    node_country="NL",
                    node_city="Amsterdam",
                    started_at=utcnow() - timedelta(hours=1),
                    duration_seconds=600,
                    rx_bytes=1000,
                    tx_bytes=2000,
                )
            )
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            sign_in_as(client, token)
            page = await client.get(f"/admin/accounts/{customer.id}")
        assert page.status_code == 200, page.text
        assert "Amsterdam, NL" in (by_id(page, "account-connections") or "")
        assert "198.51.100.7" not in page.text
        assert 'id="account-login-ip"' not in page.text
    finally:
        await runtime.close()


async def test_a_support_finding_evaluates_the_request_again(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    request_id = await _queued_refund(client, runtime, 3)
    before = len(await _trail(runtime))
    overview = await client.get("/admin")
    assert by_id(overview, "overview-refunds") == "1 waiting."
    found = await post_form(
        client,
        f"/admin/refunds/{request_id}/finding",
        {"unsupported_device": "yes"},
        page="/admin/refunds",
    )
    assert found.status_code == 303
    after = await client.get("/admin/refunds")
    assert "is now refused" in after.text
    rows = (await _trail(runtime))[before:]
    assert [(r.action, r.target_id) for r in rows] == [("refund.finding", str(request_id))]
    assert '"unsupported_device": true' in rows[0].detail


async def test_set_a_nodes_egress_addresses_from_the_fleet_page(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, name="ams-1", endpoint_host="127.0.0.1")
    url = f"/admin/fleet/{node.id}/update"
    lone = await post_form(client, url, {"egress_ipv4_extra": "203.0.113.8"}, page="/admin/fleet")
    assert lone.status_code == 422
    assert "first egress address" in (by_id(lone, f"node-{node.id}-egress-ipv4-extra-error") or "")

    done = await post_form(
        client,
        url,
        {"egress_ipv4": "203.0.113.7", "egress_ipv4_extra": "203.0.113.8, 203.0.113.9"},
        page="/admin/fleet",
    )
    assert done.status_code == 303, done.text
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert row.egress_ipv4_addresses == ("203.0.113.7", "203.0.113.8", "203.0.113.9")
    page = await client.get("/admin/fleet")
    assert 'value="203.0.113.8 203.0.113.9"' in page.text
    # Emptied, the further addresses are gone.
    cleared = await post_form(client, url, {"egress_ipv4_extra": ""}, page="/admin/fleet")
    assert cleared.status_code == 303, cleared.text
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert row.egress_ipv4_addresses == ("203.0.113.7",)


async def test_change_a_nodes_endpoint_location_and_capacity(
    client: httpx.AsyncClient,
    admin: Account,
    runtime: Runtime,
    web_customer: MakeWebCustomer,
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, name="ams-1", endpoint_host="127.0.0.1")
    page = await client.get("/admin/fleet")
    assert f'id="node-update-{node.id}"' in page.text

    bad = await post_form(
        client,
        f"/admin/fleet/{node.id}/update",
        {"endpoint_host": "not a host", "capacity": "0"},
        page="/admin/fleet",
    )
    assert bad.status_code == 422
    assert by_id(bad, f"node-{node.id}-endpoint-host-error")
    assert by_id(bad, f"node-{node.id}-capacity-error")
    assert 'value="not a host"' in bad.text  # the form is kept

    done = await post_form(
        client,
        f"/admin/fleet/{node.id}/update",
        {
            "endpoint_host": "ams-1.vpn.example.net",
            "endpoint_port": "51821",
            "country": "de",
            "city": "Berlin",
            "capacity": "40",
        },
        page="/admin/fleet",
    )
    assert done.status_code == 303, done.text
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await session.get(Node, node.id)
        assert row is not None
        assert (row.endpoint_host, row.endpoint_port) == ("ams-1.vpn.example.net", 51821)
        assert (row.country, row.city, row.capacity) == ("DE", "Berlin", 40)
        assert row.config_changed_at is not None
        trail = (
            await session.scalars(select(AdminAction).where(AdminAction.action == "node.update"))
        ).one()
        assert json.loads(trail.detail)["before"]["endpoint_host"] == "127.0.0.1"
    listed = await client.get("/admin/fleet")
    assert "ams-1.vpn.example.net:51821" in (by_id(listed, f"node-{node.id}") or "")


async def test_every_admin_page_says_when_configs_point_at_loopback(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    pages = ["/admin", "/admin/accounts", "/admin/fleet", "/admin/refunds", "/admin/policy"]
    for path in pages:
        page = await client.get(path)
        assert page.status_code == 200
        assert 'id="loopback-notice"' not in page.text  # the tests' public address is set
    data = runtime.settings.model_dump(exclude={"public_url", "public_host"})
    runtime.settings = Settings(**data)
    for path in pages:
        notice = by_id(await client.get(path), "loopback-notice") or ""
        assert "point at 127.0.0.1" in notice, path
        assert "BURROW_PUBLIC_HOST" in notice


async def test_the_panel_refuses_self_actions_and_ending_another_admin(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    own = f"/admin/accounts/{admin.id}"
    refused = await post_form(client, f"{own}/suspend", {"reason": "oops"}, page=own)
    assert refused.status_code == 403
    assert "your own account" in refused.text
    async with unit_of_work(runtime.sessionmaker) as session:
        other = await create_account(session, admin=True)
    url = f"/admin/accounts/{other.id}"
    clause = terms_clauses(runtime.policy)[0]
    ended = await post_form(
        client, f"{url}/terminate", {"reason": "rogue", "clause": clause}, page=url
    )
    assert ended.status_code == 403
    assert "command line" in ended.text
    assert (await _account(runtime, admin.id)).status is AccountStatus.active
    assert (await _account(runtime, other.id)).status is AccountStatus.active
    assert await _trail(runtime) == []


async def test_fleet_flags_a_node_that_reports_more_than_its_uplink_carries(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    fleet = await _reporting_fleet(client, runtime)
    page = await client.get("/admin/fleet")
    assert by_id(page, f"node-{fleet.busy.id}-implausible") is None
    token = new_token("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        evil = await create_node(session, name="evil-1")
        evil.uplink_mbit = 100
        evil.node_token_hash = hash_token(token)
    key = fleet.identities[4]  # a served device's key (identities: 4 emails, then keys)
    peers = [{"public_key": key, "connected": True, "rx_bytes": 60 * 10**12}]
    response = await client.post(
        f"{API_PREFIX}/report",
        json={"boot_id": "boot-1", "seq": 1, "revision": 0, "peers": peers},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text

    page = await client.get("/admin/fleet")
    flag = by_id(page, f"node-{evil.id}-implausible") or ""
    assert flag.startswith("over uplink: 60.0 TB dropped"), flag
    assert by_id(page, f"node-{fleet.busy.id}-implausible") is None
    _assert_counts_only(page, fleet)


# --- resend verification, remove a device -----------------------------------------------------


async def test_admin_resends_the_verification_email_and_the_trail_says_why(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime, smtp: SmtpServer
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        unverified = await create_account(session, verified=False)
        verified = await create_account(session)
    url = f"/admin/accounts/{unverified.id}"
    assert by_id(await client.get(f"/admin/accounts/{verified.id}"), "verify-form") is None

    sent = await post_form(
        client, f"{url}/verification-email", {"reason": "Asked by phone"}, page=url
    )

    assert sent.status_code == 303, sent.text
    shown = await client.get(url)
    assert f"A new verification link is on its way to {unverified.email}." in shown.text
    mail = smtp.inbox.wait_for(unverified.email)[0]
    assert "/verify-email?token=" in Inbox.body(mail)
    rows = await _trail(runtime)
    assert [(r.action, r.admin_id, r.target_id, r.reason) for r in rows] == [
        ("account.resend_verification", admin.id, str(unverified.id), "Asked by phone"),
    ]
    assert by_id(shown, f"admin-action-{rows[0].id}") is not None


async def test_resending_to_a_verified_address_is_refused_in_plain_words(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        unverified = await create_account(session, verified=False)
    url = f"/admin/accounts/{unverified.id}"
    page = await client.get(url)
    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(
            update(Account).where(Account.id == unverified.id).values(email_verified_at=utcnow())
        )

    refused = await client.post(
        f"{url}/verification-email", data={"reason": "", "csrf_token": csrf_token(page)}
    )

    assert refused.status_code == 409, refused.text
    assert f"account {unverified.id} is verified already" in by_id(refused, "verify-error") or ""
    assert await _trail(runtime) == []


async def test_admin_removes_a_device_with_a_reason(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        owner = await create_account(session)
        await create_subscription(session, owner)
        kept = await create_device(session, owner, name="Phone")
        lost = await create_device(session, owner, name="Stolen laptop")
    url = f"/admin/accounts/{owner.id}"
    action = f"{url}/devices/{lost.id}/remove"

    empty = await post_form(client, action, {"reason": ""}, page=url)
    assert empty.status_code == 422
    assert by_id(empty, f"remove-device-{lost.id}-reason-error")
    assert await _trail(runtime) == []

    removed = await post_form(client, action, {"reason": "Reported stolen"}, page=url)

    assert removed.status_code == 303, removed.text
    shown = await client.get(url)
    assert "The device Stolen laptop is removed" in shown.text
    assert by_id(shown, f"account-device-{lost.id}") is None
    assert by_id(shown, f"account-device-{kept.id}") is not None
    async with unit_of_work(runtime.sessionmaker) as session:
        left = (await session.scalars(select(Device.id).where(Device.account_id == owner.id))).all()
    assert list(left) == [kept.id]
    rows = await _trail(runtime)
    assert [(r.action, r.admin_id, r.target_id, r.reason) for r in rows] == [
        ("device.remove", admin.id, str(owner.id), "Reported stolen"),
    ]
    assert json.loads(rows[0].detail) == {"device_id": lost.id}

    again = await post_form(client, action, {"reason": "Twice"}, page=url)
    assert again.status_code == 404
    assert by_id(again, "remove-device-error") == f"Account {owner.id} has no device {lost.id}."
    assert len(await _trail(runtime)) == 1


# --- payment methods checkout cannot take ---------------------------------------------------


async def test_the_panel_names_the_offered_methods_no_provider_can_take(
    client: httpx.AsyncClient, admin: Account, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test policy offers card, PayPal and cryptocurrency; no provider is set up here.
    assert [str(m) for m in runtime.policy.payment_methods.offered] == ["card", "paypal", "crypto"]
    for path in ("/admin", "/admin/policy"):
        page = await client.get(path)
        assert page.status_code == 200, path
        missing = by_id(page, "methods-missing") or ""
        assert "Card — Stripe is not set up on this server" in missing, path
        assert "PayPal — PayPal is not set up on this server" in missing, path
        assert "Cryptocurrency — CoinGate is not set up on this server" in missing, path

    monkeypatch.setattr(
        runtime, "settings", runtime.settings.model_copy(update={"stripe_api_key": SecretStr("sk")})
    )
    missing = by_id(await client.get("/admin"), "methods-missing") or ""
    assert "Card" not in missing
    assert "PayPal" in missing

    no_provider = runtime.policy.payment_methods.model_copy(update={"offered": ["card", "manual"]})
    policy = runtime.policy.model_copy(update={"payment_methods": no_provider})
    monkeypatch.setattr(runtime, "policy", policy)
    missing = by_id(await client.get("/admin"), "methods-missing") or ""
    assert missing.endswith(
        "Bank transfer or other arrangement — this version has no provider for it"
    )
    assert "Card" not in missing
