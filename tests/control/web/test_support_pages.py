"""The support desk in the panels, over httpx form posts: a customer opens a request and
writes again, an administrator answers, takes and resolves it; a signed-out visitor opens one
with an email address and follows the emailed link; the admin queue shows the deadline."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import httpx
from sqlalchemy import select

from burrow.control.audit.service import CliOperator
from burrow.control.billing.service import billing as billing_service
from burrow.control.db import unit_of_work
from burrow.control.models import (
    Account,
    AdminAction,
    PaymentMethod,
    Subscription,
    SupportRequest,
    SupportTopic,
    SupportVia,
)
from burrow.control.runtime import Runtime
from burrow.control.support.service import support as support_service
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_account, create_session_token
from tests.support.smtp import Inbox, SmtpServer
from tests.support.web import field_error, post_form, sign_in_as


def _text(page: httpx.Response) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


async def _admin(runtime: Runtime) -> tuple[Account, str]:
    async with unit_of_work(runtime.sessionmaker) as session:
        admin = await create_account(session, admin=True)
        return admin, await create_session_token(session, admin)


async def test_a_conversation_round_trip_through_the_panels(
    client: httpx.AsyncClient,
    runtime: Runtime,
    web_customer: MakeWebCustomer,
    smtp: SmtpServer,
) -> None:
    customer = await web_customer()
    admin, admin_token = await _admin(runtime)
    # An empty form is shown again with the field's error.
    empty = await post_form(client, "/support", {"topic": "connection", "subject": "x"})
    assert empty.status_code == 422
    assert field_error(empty, "message")
    opened = await post_form(
        client,
        "/support",
        {"topic": "connection", "subject": "No handshake", "message": "Nothing connects."},
    )
    assert opened.status_code == 303
    where = opened.headers["location"]
    request_id = int(where.rsplit("/", 1)[1])
    page = await client.get(where)
    assert "Nothing connects." in page.text
    assert "Connection problem" in page.text

    sign_in_as(client, admin_token)
    overview = await client.get("/admin")
    assert "1 waiting for an answer" in _text(overview)
    queue = await client.get("/admin/support")
    assert queue.status_code == 200
    row = re.search(rf'id="support-row-{request_id}".*?</tr>', queue.text, re.S)
    assert row is not None
    assert "left" in row.group(0)
    assert customer.account.email in row.group(0)
    taken = await post_form(
        client, f"/admin/support/{request_id}/take", page=f"/admin/support/{request_id}"
    )
    assert taken.status_code == 303
    answered = await post_form(
        client,
        f"/admin/support/{request_id}/answer",
        {"message": "Which app do you use?", "status": "waiting_on_customer"},
        page=f"/admin/support/{request_id}",
    )
    assert answered.status_code == 303
    shown = await client.get(f"/admin/support/{request_id}")
    assert "Which app do you use?" in shown.text
    assert admin.email in _text(shown)  # the owner
    notice = (await smtp.inbox.arrived(customer.account.email))[0]
    assert "Which app" not in Inbox.body(notice)  # strict policy: a link only

    sign_in_as(client, customer.token)
    seen = await client.get(f"/support/requests/{request_id}")
    assert "Which app do you use?" in seen.text
    assert "waiting on the customer" in _text(seen)
    replied = await post_form(
        client,
        f"/support/requests/{request_id}/messages",
        {"message": "The official one."},
        page=f"/support/requests/{request_id}",
    )
    assert replied.status_code == 303
    seen = await client.get(f"/support/requests/{request_id}")
    assert seen.text.index("Nothing connects.") < seen.text.index("Which app do you use?")
    assert seen.text.index("Which app do you use?") < seen.text.index("The official one.")

    sign_in_as(client, admin_token)
    resolved = await post_form(
        client,
        f"/admin/support/{request_id}/status",
        {"status": "resolved", "expected": "open"},
        page=f"/admin/support/{request_id}",
    )
    assert resolved.status_code == 303
    # A second click with the state it saw (open) is refused and says what it is now.
    again = await post_form(
        client,
        f"/admin/support/{request_id}/status",
        {"status": "waiting_on_customer", "expected": "open"},
        page=f"/admin/support/{request_id}",
        follow=True,
    )
    assert "already resolved" in _text(again)
    async with unit_of_work(runtime.sessionmaker) as session:
        request = await session.get(SupportRequest, request_id)
        assert request is not None
        assert request.status == "resolved"
        actions = (await session.scalars(select(AdminAction.action).order_by(AdminAction.id))).all()
    assert list(actions) == ["support.take", "support.resolved"]


async def test_signed_out_visitor_opens_a_request_and_follows_the_link(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    form = await client.get("/support")
    assert 'name="email"' in form.text
    sent = await post_form(
        client,
        "/support",
        {
            "email": "visitor@example.org",
            "topic": "billing",
            "subject": "Before buying",
            "message": "Do you take PayPal?",
        },
    )
    assert sent.status_code == 200
    assert "visitor@example.org" in sent.text
    mail = (await smtp.inbox.arrived("visitor@example.org"))[0]
    link = re.search(r"http://testserver(\S+)", Inbox.body(mail))
    assert link is not None
    page = await client.get(link.group(1))
    assert "Do you take PayPal?" in page.text
    written = await post_form(
        client,
        link.group(1).split("?")[0] + "/messages",
        {"message": "And crypto?", "key": link.group(1).split("key=")[1]},
        page=link.group(1),
    )
    assert written.status_code == 303
    again = await client.get(written.headers["location"])
    assert "And crypto?" in again.text
    # Without the key a signed-out visitor is asked to log in; a wrong key is refused.
    bare = await client.get(link.group(1).split("?")[0])
    assert bare.status_code == 303
    assert bare.headers["location"].startswith("/login")
    wrong = await client.get(link.group(1).split("?")[0] + "?key=" + "0" * 32)
    assert wrong.status_code == 403


async def test_a_refund_is_offered_support_first_and_linked_to_it(
    metered_client: httpx.AsyncClient, metered: Runtime
) -> None:
    """Metered policy (``refunds.support_first``): the refund page offers the conversation
    first; a refund asked for after it links to it, and support sees the link."""
    async with unit_of_work(metered.sessionmaker) as session:
        account = await create_account(session)
        token = await create_session_token(session, account)
        admin = await create_account(session, admin=True)
        admin_token = await create_session_token(session, admin)
        recorded = await billing_service.record_manual_payment(
            session,
            metered,
            CliOperator("test"),
            account.id,
            "personal-monthly",
            699,
            "USD",
            PaymentMethod.card,
            f"ref-{account.id}",
        )
        order_id = recorded.order.id
    sign_in_as(metered_client, token)
    link = f"/billing/orders/{order_id}/refund"
    page = await metered_client.get(link)
    assert 'id="refund-support-form"' in page.text
    assert "Can we fix it first?" in page.text
    asked = await post_form(
        metered_client, f"{link}/support", {"message": "Netflix does not load."}, page=link
    )
    assert asked.status_code == 303
    back = asked.headers["location"]
    support_id = int(back.split("support=")[1])
    offered = await metered_client.get(back)
    assert f'href="/support/requests/{support_id}"' in offered.text
    # The refund form carries the conversation, as a browser sends it.
    assert f'<input type="hidden" name="support" value="{support_id}">' in offered.text
    refund = await post_form(
        metered_client, link, {"reason": "Still broken.", "support": str(support_id)}, page=back
    )
    assert refund.status_code == 303
    refund_id = int(refund.headers["location"].rsplit("/", 1)[1])
    async with unit_of_work(metered.sessionmaker) as session:
        conversation = await session.get(SupportRequest, support_id)
        assert conversation is not None
        assert conversation.topic == "refund"
        assert conversation.refund_request_id == refund_id
        assert conversation.due_at - conversation.opened_at == timedelta(hours=24)
    sign_in_as(metered_client, admin_token)
    shown = await metered_client.get(f"/admin/support/{support_id}")
    assert f'id="support-refund">{refund_id}</a>' in shown.text


async def test_a_request_is_handed_over_in_the_panel(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    _, admin_token = await _admin(runtime)
    colleague, _ = await _admin(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await session.get(Account, customer.account.id)
        assert account is not None
        view = await support_service.open(
            session,
            runtime,
            account=account,
            email=None,
            topic=SupportTopic.other,
            subject="Hello",
            body="Hi.",
            via=SupportVia.web,
        )
    page = f"/admin/support/{view.request.id}"
    sign_in_as(client, admin_token)
    handed = await post_form(
        client, f"{page}/owner", {"owner_id": str(colleague.id)}, page=page, follow=True
    )
    assert f"{colleague.email}'s now" in _text(handed)
    refused = await post_form(
        client, f"{page}/owner", {"owner_id": str(customer.account.id)}, page=page, follow=True
    )
    assert "not an administrator" in _text(refused)
    async with unit_of_work(runtime.sessionmaker) as session:
        stored = await session.get(SupportRequest, view.request.id)
        assert stored is not None
        assert stored.owner_id == colleague.id


async def test_an_emailed_cancellation_is_carried_out_in_one_click(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, smtp: SmtpServer
) -> None:
    customer = await web_customer(sign_in=False)
    _, admin_token = await _admin(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        view = await support_service.receive_email(
            session,
            runtime,
            reply=None,
            sender=customer.account.email,
            subject="Cancellation",
            body="Please cancel my subscription.",
        )
    page = f"/admin/support/{view.request.id}"
    sign_in_as(client, admin_token)
    shown = await client.get(page)
    assert 'id="support-cancel-subscription"' in shown.text
    assert customer.account.email in _text(shown)
    done = await post_form(client, f"{page}/cancel-subscription", page=page, follow=True)
    assert "is cancelled" in _text(done)
    assert 'id="support-cancelled"' in done.text
    assert 'id="support-cancel-subscription"' not in done.text
    # Strict policy: the customer is told there is an answer, with the link to read it.
    told = (await smtp.inbox.arrived(customer.account.email))[-1]
    assert f"/support/requests/{view.request.id}?key=" in Inbox.body(told)
    async with unit_of_work(runtime.sessionmaker) as session:
        subscription = await session.scalar(
            select(Subscription).where(Subscription.account_id == customer.account.id)
        )
        assert subscription is not None
        assert subscription.cancel_at_period_end
