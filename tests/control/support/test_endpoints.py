"""The support desk over the API: a conversation both ways with its emails, the queue by
deadline, the policy's privacy (no body in emails, no addresses stored, no attachments), and
administrators' decisions made twenty at once against a real server."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from burrow.control.audit.service import CliOperator
from burrow.control.billing.service import billing as billing_service
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.metrics import exposition
from burrow.control.metrics import read as read_metrics
from burrow.control.models import (
    AdminAction,
    PaymentMethod,
    Subscription,
    SupportMessage,
    SupportRequest,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.support.service import support as support_service
from tests.conftest import METERED_POLICY
from tests.support.app import running_runtime
from tests.support.factories import create_account, create_session_token, create_subscription
from tests.support.server import serving
from tests.support.smtp import Inbox, SmtpServer

PROBLEM = "application/problem+json"


async def _caller(
    runtime: Runtime, *, admin: bool = False, plan: str | None = None
) -> tuple[int, str, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        if plan:
            await create_subscription(session, account, plan_code=plan)
        token = await create_session_token(session, account)
        return account.id, account.email, {"Authorization": f"Bearer {token}"}


def _link(body: str) -> str:
    found = re.search(r"https?://\S+", body)
    assert found is not None, body
    return found.group(0)


async def test_support_endpoints_need_sign_in(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/api/v1/support/requests"),
        ("GET", "/api/v1/support/requests"),
        ("GET", "/api/v1/admin/support"),
        ("POST", "/api/v1/admin/support/1/take"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM


async def test_a_conversation_round_trip_with_its_emails(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    """Strict policy: each side is emailed a link to the new message, never its text."""
    _, admin_email, admin = await _caller(runtime, admin=True)
    _, customer_email, customer = await _caller(runtime, plan="personal-monthly")
    opened = await client.post(
        "/api/v1/support/requests",
        json={
            "topic": "connection",
            "subject": "No handshake",
            "message": "My laptop at 198.51.100.23 gets no handshake since this morning.",
        },
        headers=customer,
    )
    assert opened.status_code == 201, opened.text
    request = opened.json()
    assert request["status"] == "open"
    # The address the customer typed is not stored.
    assert request["messages"][0]["body"] == (
        "My laptop at [ip removed] gets no handshake since this morning."
    )
    to_admin = (await smtp.inbox.arrived(admin_email))[0]
    assert "No handshake" in str(to_admin["Subject"])
    assert "no handshake since" not in Inbox.body(to_admin)  # message_in_email = false
    assert f"/admin/support/{request['id']}" in Inbox.body(to_admin)
    assert str(to_admin["Reply-To"]).startswith(f"support+{request['id']}-")

    queue = (await client.get("/api/v1/admin/support", headers=admin)).json()
    assert [r["id"] for r in queue] == [request["id"]]
    assert queue[0]["requester_email"] == customer_email
    assert queue[0]["overdue"] is False
    answered = await client.post(
        f"/api/v1/admin/support/{request['id']}/messages",
        json={"message": "Please reinstall the profile and tell us."},
        headers=admin,
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["status"] == "waiting_on_customer"
    assert answered.json()["owner_email"] == admin_email  # who answers first owns it
    to_customer = (await smtp.inbox.arrived(customer_email))[0]
    assert "reinstall" not in Inbox.body(to_customer)
    assert f"/support/requests/{request['id']}?key=" in _link(Inbox.body(to_customer))

    replied = await client.post(
        f"/api/v1/support/requests/{request['id']}/messages",
        json={"message": "That fixed it, thanks."},
        headers=customer,
    )
    assert replied.status_code == 201, replied.text
    seen = (await client.get(f"/api/v1/support/requests/{request['id']}", headers=customer)).json()
    assert [m["author"] for m in seen["messages"]] == ["customer", "support", "customer"]
    assert seen["status"] == "open"  # support's turn again


async def test_another_customer_cannot_read_a_request(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, _, owner = await _caller(runtime)
    _, _, other = await _caller(runtime)
    opened = await client.post(
        "/api/v1/support/requests",
        json={"topic": "billing", "subject": "Invoice", "message": "Need an invoice."},
        headers=owner,
    )
    request_id = opened.json()["id"]
    for method, path, body in [
        ("GET", f"/api/v1/support/requests/{request_id}", None),
        ("POST", f"/api/v1/support/requests/{request_id}/messages", {"message": "hi"}),
    ]:
        response = await client.request(method, path, json=body, headers=other)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == PROBLEM
        assert f"number {request_id}" in response.json()["detail"]


async def test_attachments_and_bad_topics_are_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, _, customer = await _caller(runtime)
    with_file = await client.post(
        "/api/v1/support/requests",
        json={
            "topic": "other",
            "subject": "Screenshot",
            "message": "See the file.",
            "attachment": "aGVsbG8=",
        },
        headers=customer,
    )
    assert with_file.status_code == 422
    assert with_file.headers["content-type"] == PROBLEM
    bad_topic = await client.post(
        "/api/v1/support/requests",
        json={"topic": "spam", "subject": "x", "message": "y"},
        headers=customer,
    )
    assert bad_topic.status_code == 422
    assert "topic" in bad_topic.text


async def test_signed_out_request_by_email(
    client: httpx.AsyncClient, runtime: Runtime, smtp: SmtpServer
) -> None:
    """Signed out: the link in the email (a signed key) is the way back; a wrong key is
    refused."""
    opened = await client.post(
        "/api/v1/support/requests/by-email",
        json={
            "email": "visitor@example.org",
            "topic": "billing",
            "subject": "Before I buy",
            "message": "Do you take PayPal?",
        },
    )
    assert opened.status_code == 202, opened.text
    mail = (await smtp.inbox.arrived("visitor@example.org"))[0]
    link = _link(Inbox.body(mail))
    page = await client.get(link.removeprefix("http://testserver"))
    assert page.status_code == 200
    assert "Do you take PayPal?" in page.text
    forged = await client.get(re.sub(r"key=\w+", "key=" + "0" * 32, link))
    assert forged.status_code == 403
    assert "not valid" in forged.text
    # The form cannot flood an inbox: a few per address, then a clear refusal.
    statuses = []
    for _ in range(4):
        again = await client.post(
            "/api/v1/support/requests/by-email",
            json={
                "email": "victim@example.org",
                "topic": "other",
                "subject": "x",
                "message": "y",
            },
        )
        statuses.append(again.status_code)
    assert statuses == [202, 202, 202, 429]


async def test_the_queue_is_by_deadline_with_overdue_first(
    metered_client: httpx.AsyncClient, metered: Runtime
) -> None:
    """Metered policy: a refund request is due in 24 hours, a privacy one in 72; an overdue
    request tops the queue, and /metrics counts it."""
    _, _, admin = await _caller(metered, admin=True)
    _, _, customer = await _caller(metered)
    ids = {}
    for topic in ("privacy", "refund", "other"):
        response = await metered_client.post(
            "/api/v1/support/requests",
            json={"topic": topic, "subject": topic, "message": "help"},
            headers=customer,
        )
        assert response.status_code == 201
        ids[topic] = response.json()["id"]
        hours = (
            response.json()["due_at"],
            response.json()["opened_at"],
        )
        assert hours[0] > hours[1]
    queue = (await metered_client.get("/api/v1/admin/support", headers=admin)).json()
    assert [r["topic"] for r in queue] == ["refund", "other", "privacy"]
    assert 23 * 3600 < queue[0]["seconds_left"] <= 24 * 3600
    async with unit_of_work(metered.sessionmaker) as session:
        await session.execute(
            update(SupportRequest)
            .where(SupportRequest.id == ids["privacy"])
            .values(due_at=utcnow() - timedelta(hours=2))
        )
    queue = (await metered_client.get("/api/v1/admin/support", headers=admin)).json()
    assert [r["topic"] for r in queue] == ["privacy", "refund", "other"]
    assert queue[0]["overdue"] is True
    async with unit_of_work(metered.sessionmaker, writes=False) as session:
        scrape = exposition(await read_metrics(session, metered)).decode()
    assert 'burrow_support_requests{status="open"} 3.0' in scrape
    assert 'burrow_support_requests{status="resolved"} 0.0' in scrape
    assert "burrow_support_requests_overdue 1.0" in scrape


# --- twenty administrators at once, against a real server -----------------------------------


async def test_twenty_administrators_deciding_at_once(settings: Settings) -> None:
    """Taking a request, resolving it and carrying out an emailed cancellation: of twenty
    administrators clicking at the same moment, exactly one does it, the others are told who
    did (409), and the audit trail has one row of each."""
    settings = settings.model_copy(update={"policy_path": METERED_POLICY})
    async with running_runtime(settings) as runtime:
        admins = [await _caller(runtime, admin=True) for _ in range(20)]
        customer_id, customer_email, _ = await _caller(runtime, plan="personal-monthly")
        async with unit_of_work(runtime.sessionmaker) as session:
            view = await support_service.receive_email(
                session,
                runtime,
                reply=None,
                sender=customer_email,
                subject="Please cancel",
                body=f"Cancel my subscription. My VPN username: {customer_email}",
            )
            request_id = view.request.id
            assert view.request.cancel_account_id == customer_id
        with serving(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

                async def all_at_once(path: str, body: dict[str, str] | None = None) -> list[int]:
                    responses = await asyncio.gather(
                        *(client.post(path, json=body, headers=h) for _, _, h in admins)
                    )
                    for r in responses:
                        assert r.status_code in (200, 409), r.text
                    return sorted(r.status_code for r in responses)

                base = f"/api/v1/admin/support/{request_id}"
                assert await all_at_once(f"{base}/take") == [200] + [409] * 19
                assert await all_at_once(f"{base}/cancel-subscription") == [200] + [409] * 19
                assert (
                    await all_at_once(f"{base}/status", {"status": "open", "expected": "resolved"})
                    == [200] + [409] * 19
                )
                refused = await client.post(f"{base}/take", headers=admins[0][2])
                one = await client.get(base, headers=admins[0][2])
        taker = one.json()["owner_id"]
        assert refused.status_code in (200, 409)
        if refused.status_code == 409:
            assert "already taken by" in refused.json()["detail"]
        assert taker in {a[0] for a in admins}
        async with unit_of_work(runtime.sessionmaker) as session:
            actions = (await session.scalars(select(AdminAction.action))).all()
            assert sorted(actions) == [
                "support.cancel_subscription",
                "support.open",
                "support.take",
            ]
            subscription = await session.scalar(
                select(Subscription).where(Subscription.account_id == customer_id)
            )
            assert subscription is not None
            assert subscription.cancel_at_period_end
            messages = (
                await session.scalars(
                    select(SupportMessage).where(SupportMessage.request_id == request_id)
                )
            ).all()
            # The customer's email and the one answer saying it is cancelled.
            assert [m.author for m in messages] == ["customer", "support"]


async def test_a_request_is_handed_to_another_administrator(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    _, _, admin = await _caller(runtime, admin=True)
    colleague_id, colleague_email, _ = await _caller(runtime, admin=True)
    customer_id, _, customer = await _caller(runtime)
    opened = await client.post(
        "/api/v1/support/requests",
        json={"topic": "privacy", "subject": "My data", "message": "What do you keep?"},
        headers=customer,
    )
    path = f"/api/v1/admin/support/{opened.json()['id']}/owner"
    handed = await client.post(path, json={"owner_id": colleague_id}, headers=admin)
    assert handed.status_code == 200, handed.text
    assert handed.json()["owner_email"] == colleague_email
    refused = await client.post(path, json={"owner_id": customer_id}, headers=admin)
    assert refused.status_code == 422
    assert refused.json()["field"] == "owner_id"
    assert "not an administrator" in refused.json()["detail"]


async def test_twenty_signed_out_requests_at_once_from_one_address(
    settings: Settings, smtp: SmtpServer
) -> None:
    """The per-address limit holds when twenty arrive at the same moment at a real server:
    three are opened (and three emails sent), seventeen refused with Retry-After."""
    async with running_runtime(settings) as runtime:
        with serving(settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/support/requests/by-email",
                            json={
                                "email": "burst@example.org",
                                "topic": "other",
                                "subject": f"try {n}",
                                "message": "hello",
                            },
                        )
                        for n in range(20)
                    )
                )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [202] * 3 + [429] * 17
        assert all("Retry-After" in r.headers for r in responses if r.status_code == 429)
        async with unit_of_work(runtime.sessionmaker) as session:
            opened = (
                await session.scalars(
                    select(SupportRequest).where(SupportRequest.email == "burst@example.org")
                )
            ).all()
        assert len(opened) == 3
        assert len(await smtp.inbox.arrived("burst@example.org", count=3)) == 3


async def test_a_refund_asked_through_the_api_links_its_support_conversation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    customer_id, _, customer = await _caller(runtime, plan="personal-monthly")
    _, _, other = await _caller(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        recorded = await billing_service.record_manual_payment(
            session,
            runtime,
            CliOperator("test"),
            customer_id,
            "personal-monthly",
            699,
            "USD",
            PaymentMethod.manual,
            f"ref-{customer_id}",
        )
        order_id = recorded.order.id
    talk = {"topic": "refund", "subject": "Slow", "message": "Nothing loads."}
    mine = (await client.post("/api/v1/support/requests", json=talk, headers=customer)).json()
    theirs = (await client.post("/api/v1/support/requests", json=talk, headers=other)).json()
    path = f"/api/v1/billing/orders/{order_id}/refund"
    refused = await client.post(
        path, json={"reason": "x", "support_request_id": theirs["id"]}, headers=customer
    )
    assert refused.status_code == 404
    assert (await client.get("/api/v1/refunds", headers=customer)).json() == []
    asked = await client.post(
        path, json={"reason": "Still slow.", "support_request_id": mine["id"]}, headers=customer
    )
    assert asked.status_code == 201, asked.text
    seen = await client.get(f"/api/v1/support/requests/{mine['id']}", headers=customer)
    assert seen.json()["refund_request_id"] == asked.json()["id"]
