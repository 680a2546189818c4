"""The support desk's email: a real ``burrow serve`` app (uvicorn on loopback) with its SMTP
listener on, a real SMTP client writing to it, and the test's SMTP server receiving what the
desk sends. Replies land on their request; forged reply tokens and relaying are refused at
RCPT; unknown senders open a request; a cancellation naming a username is recognised."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import SupportMessage, SupportRequest, SupportTopic
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.app import running_runtime
from tests.support.factories import create_account, create_session_token, create_subscription
from tests.support.server import RunningServer, free_port, serving
from tests.support.smtp import Inbox, SmtpServer

SUPPORT = "support@example.com"  # the metered example policy's contact address


@dataclass
class Desk:
    server: RunningServer
    runtime: Runtime
    smtp_port: int
    inbox: Inbox


@pytest.fixture
def desk_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"policy_path": METERED_POLICY, "inbound_smtp": f"127.0.0.1:{free_port()}"}
    )


@pytest.fixture
def desk_server(desk_settings: Settings) -> Iterator[RunningServer]:
    with serving(desk_settings) as server:
        yield server


@pytest.fixture
async def desk(
    desk_settings: Settings, desk_server: RunningServer, smtp: SmtpServer
) -> AsyncIterator[Desk]:
    async with running_runtime(desk_settings) as runtime:
        assert desk_settings.inbound_smtp is not None
        port = int(desk_settings.inbound_smtp.rpartition(":")[2])
        yield Desk(desk_server, runtime, port, smtp.inbox)


def _mail(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    return message


async def _send(desk: Desk, message: EmailMessage) -> None:
    await aiosmtplib.send(message, hostname="127.0.0.1", port=desk.smtp_port, timeout=10)


async def _caller(runtime: Runtime, *, admin: bool = False) -> tuple[int, str, dict[str, str]]:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session, admin=admin)
        await create_subscription(session, account, plan_code="personal-monthly")
        token = await create_session_token(session, account)
        return account.id, account.email, {"Authorization": f"Bearer {token}"}


async def _messages(runtime: Runtime, request_id: int) -> list[SupportMessage]:
    async with unit_of_work(runtime.sessionmaker) as session:
        query = select(SupportMessage).where(SupportMessage.request_id == request_id)
        return list((await session.scalars(query.order_by(SupportMessage.id))).all())


async def test_a_reply_by_email_lands_on_the_request(desk: Desk) -> None:
    _, admin_email, admin = await _caller(desk.runtime, admin=True)
    _, customer_email, customer = await _caller(desk.runtime)
    async with httpx.AsyncClient(base_url=desk.server.url, timeout=30) as client:
        opened = await client.post(
            "/api/v1/support/requests",
            json={"topic": "connection", "subject": "Slow", "message": "Slow since Monday."},
            headers=customer,
        )
        request_id = opened.json()["id"]
        answered = await client.post(
            f"/api/v1/admin/support/{request_id}/messages",
            json={"message": "Which server do you use?"},
            headers=admin,
        )
        assert answered.status_code == 201, answered.text
    notice = (await desk.inbox.arrived(customer_email))[0]
    # Metered policy: message_in_email = true, so the text travels with the link.
    assert "Which server do you use?" in Inbox.body(notice)
    reply_to = str(notice["Reply-To"])
    assert notice["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(rf"support\+{request_id}-[0-9a-f]{{32}}@example\.com", reply_to)

    reply = _mail(
        customer_email,
        reply_to,
        f"Re: {notice['Subject']}",
        "The one in Amsterdam, from 192.0.2.55.\n\nOn Monday, Support wrote:\n> Which server?\n",
    )
    await _send(desk, reply)
    messages = await _messages(desk.runtime, request_id)
    assert [(m.author, m.via) for m in messages] == [
        ("customer", "api"),
        ("support", "api"),
        ("customer", "email"),
    ]
    # Quoted history cut off, the address removed.
    assert messages[-1].body == "The one in Amsterdam, from [ip removed]."
    # Support is told (the owner: whoever answered first).
    to_admin = await desk.inbox.arrived(admin_email, count=2)
    assert "Amsterdam" in Inbox.body(to_admin[-1])
    # Support answers by email through its own notification's reply address.
    staff_reply_to = str(to_admin[-1]["Reply-To"])
    assert re.fullmatch(rf"support\+{request_id}-s[0-9a-f]{{32}}@example\.com", staff_reply_to)
    await _send(desk, _mail(admin_email, staff_reply_to, "Re: Slow", "Try Rotterdam, please."))
    messages = await _messages(desk.runtime, request_id)
    assert messages[-1].author == "support"
    assert messages[-1].body == "Try Rotterdam, please."
    # The customer's own reply address cannot write as support, whatever its From line says;
    # and support's address takes nothing from anyone but an administrator.
    await _send(desk, _mail(admin_email, reply_to, "Re: Slow", "Refund approved! (forged)"))
    assert (await _messages(desk.runtime, request_id))[-1].author == "customer"
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await _send(desk, _mail(customer_email, staff_reply_to, "Re", "I am support now."))
    assert "support's own addresses only" in refused.value.message
    assert "I am support now." not in [m.body for m in await _messages(desk.runtime, request_id)]


async def test_a_forged_reply_token_and_relaying_are_refused(desk: Desk) -> None:
    _, _, customer = await _caller(desk.runtime)
    async with httpx.AsyncClient(base_url=desk.server.url, timeout=30) as client:
        opened = await client.post(
            "/api/v1/support/requests",
            json={"topic": "billing", "subject": "Invoice", "message": "Need one."},
            headers=customer,
        )
    request_id = opened.json()["id"]
    forged = f"support+{request_id}-{'0' * 32}@example.com"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(desk, _mail("mallory@example.net", forged, "Re: Invoice", "Injected."))
    error = refused.value.recipients[0]
    assert error.code == 550
    assert "not valid" in error.message
    # Another request's number: refused as well.
    other = _mail("mallory@example.net", forged.replace(f"+{request_id}-", "+999-"), "x", "y")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await _send(desk, other)
    for elsewhere in ("friend@example.org", "postmaster@example.com"):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as relay:
            await _send(desk, _mail("spammer@example.net", elsewhere, "Hi", "Buy now"))
        assert "nothing is relayed" in relay.value.recipients[0].message
    assert [m.body for m in await _messages(desk.runtime, request_id)] == ["Need one."]
    assert desk.inbox.to("friend@example.org") == []


async def test_an_unknown_sender_opens_a_request_and_attachments_are_refused(
    desk: Desk,
) -> None:
    await _send(
        desk,
        _mail("stranger@example.org", SUPPORT, "Question", "Do you have servers in Peru?"),
    )
    async with unit_of_work(desk.runtime.sessionmaker) as session:
        request = await session.scalar(
            select(SupportRequest).where(SupportRequest.email == "stranger@example.org")
        )
    assert request is not None
    assert request.account_id is None
    assert request.topic == SupportTopic.other
    # The stranger gets the link (and a reply address) to follow it.
    confirmation = (await desk.inbox.arrived("stranger@example.org"))[0]
    assert f"/support/requests/{request.id}?key=" in Inbox.body(confirmation)

    with_file = _mail("stranger@example.org", SUPPORT, "Screenshot", "See attached.")
    with_file.add_attachment(b"\x89PNG....", maintype="image", subtype="png", filename="a.png")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await _send(desk, with_file)
    assert "Attachments are not accepted" in refused.value.message


async def test_a_cancellation_by_email_is_recognised_for_one_click(desk: Desk) -> None:
    customer_id, customer_email, _ = await _caller(desk.runtime)
    _, _, admin = await _caller(desk.runtime, admin=True)
    await _send(
        desk,
        _mail(
            "someone@elsewhere.example",
            SUPPORT,
            "Cancel my subscription",
            f"Hello, please cancel my VPN.\nUsername: {customer_email}\nThanks",
        ),
    )
    async with unit_of_work(desk.runtime.sessionmaker) as session:
        request = await session.scalar(
            select(SupportRequest).where(SupportRequest.email == "someone@elsewhere.example")
        )
    assert request is not None
    assert request.topic == SupportTopic.cancellation
    assert request.cancel_account_id == customer_id
    async with httpx.AsyncClient(base_url=desk.server.url, timeout=30) as client:
        page = await client.get(f"/api/v1/admin/support/{request.id}", headers=admin)
        assert page.json()["cancel_account_email"] == customer_email
        done = await client.post(
            f"/api/v1/admin/support/{request.id}/cancel-subscription", headers=admin
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "resolved"
        again = await client.post(
            f"/api/v1/admin/support/{request.id}/cancel-subscription", headers=admin
        )
        assert again.status_code == 409
        assert "already carried out" in again.json()["detail"]
    told = (await desk.inbox.arrived("someone@elsewhere.example", count=2))[-1]
    assert "cancelled" in Inbox.body(told)


async def test_automatic_mail_is_never_filed_nor_answered(desk: Desk) -> None:
    """A bounce, an auto-reply or the desk's own address writing to itself: accepted and
    dropped, so no loop of notifications can start."""
    auto_reply = _mail("holiday@example.org", SUPPORT, "Out of office", "Back on Monday.")
    auto_reply["Auto-Submitted"] = "auto-replied"
    await _send(desk, auto_reply)
    await _send(desk, _mail(SUPPORT, SUPPORT, "Loop", "From ourselves."))
    bounce = _mail("mailer-daemon@example.org", SUPPORT, "Undelivered", "No such user.")
    await aiosmtplib.send(bounce, sender="", hostname="127.0.0.1", port=desk.smtp_port, timeout=10)
    async with unit_of_work(desk.runtime.sessionmaker) as session:
        assert (await session.scalars(select(SupportRequest))).all() == []
    assert desk.inbox.to("holiday@example.org") == []
    assert desk.inbox.to("mailer-daemon@example.org") == []
