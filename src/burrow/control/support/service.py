"""The support desk: requests with a topic, a state, an owner and a deadline, and the
conversation between the customer and support.

- A customer opens a request signed in, or signed out with an email address; support answers
  in the admin panel; each new message is emailed to the other side with a link (the text too
  only where ``support.message_in_email`` allows). Notifications carry a reply address with a
  signed token, so a reply by email lands on the right request (``inbound``).
- Deadlines come from ``support.deadline_hours`` per topic; the queue is ordered by them.
- Administrators' decisions (taking a request, changing its state, carrying out a
  cancellation asked for by email) are compare-and-set writes recorded in the admin audit
  trail: of twenty at once, one wins and the others are told who did it.
- Privacy: a request holds only what the two sides wrote; IP address literals in a message are
  removed before it is stored (``burrow audit`` would rightly report them), and nothing else
  of a connection is ever attached. Text only: no attachments.

Errors::

    BurrowError
    ├── NotFound:      SupportRequestNotFound
    ├── Forbidden:     SupportLinkInvalid, NotFromSupport
    ├── Conflict:      SupportRequestTaken, SupportStateChanged, CancellationAlreadyDone,
    │                  NoCancellationAsked
    └── InvalidInput:  AttachmentsRefused

May import: the models, db, runtime, policy, the admin audit trail, and the services of
accounts-independent domains it acts through (subscriptions for a cancellation).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import Actor, admin_audit, require_administrator
from burrow.control.db import after_commit
from burrow.control.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyRequests
from burrow.control.models import (
    Account,
    SupportAuthor,
    SupportMessage,
    SupportRequest,
    SupportStatus,
    SupportTopic,
    SupportVia,
    utcnow,
)
from burrow.control.policy.addresses import redact
from burrow.control.ratelimit import RateLimits
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.support.addresses import (
    ReplyTo,
    admin_link,
    customer_link,
    reply_address,
    token_matches,
)
from burrow.control.support.repository import SupportRepository

log = logging.getLogger(__name__)

# Notification bodies, beside the domain (first line the subject); plain text, not HTML.
_emails = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "emails"),
    autoescape=False,  # noqa: S701 - plain-text mail
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

QUEUE_LIMIT = 500
# Requests opened signed out per address: each sends that address an email, so the form
# must not become a way to flood someone's inbox.
SIGNED_OUT_LIMITS = RateLimits.parse("3/hour;10/day")
TOPIC_NAMES = {
    SupportTopic.connection: "Connection problem",
    SupportTopic.billing: "Billing",
    SupportTopic.refund: "Refund",
    SupportTopic.privacy: "Privacy",
    SupportTopic.cancellation: "Cancellation",
    SupportTopic.other: "Other",
}
STATUS_NAMES = {
    SupportStatus.open: "open",
    SupportStatus.waiting_on_customer: "waiting on the customer",
    SupportStatus.resolved: "resolved",
}


class SupportRequestNotFound(NotFound):
    title = "Unknown support request"
    type_slug = "unknown-support-request"

    def __init__(self, request_id: int) -> None:
        super().__init__(f"There is no support request with the number {request_id}.")


class SupportLinkInvalid(Forbidden):
    title = "Link not valid"
    type_slug = "support-link-invalid"

    def __init__(self) -> None:
        super().__init__(
            "This link to a support request is not valid. Use the link in the latest email "
            "about your request, or sign in to see your requests."
        )


class SupportRequestTaken(Conflict):
    title = "Request already taken"
    type_slug = "support-request-taken"

    def __init__(self, request_id: int, owner_email: str | None) -> None:
        who = owner_email or "another administrator"
        super().__init__(
            f"Support request {request_id} was already taken by {who}.",
            support_request_id=request_id,
        )


class SupportStateChanged(Conflict):
    title = "Request changed meanwhile"
    type_slug = "support-state-changed"

    def __init__(self, request: SupportRequest) -> None:
        super().__init__(
            f"Support request {request.id} is already {STATUS_NAMES[request.status]}; "
            "nothing was changed.",
            support_request_id=request.id,
            support_status=request.status,
        )


class NoCancellationAsked(Conflict):
    title = "No cancellation to carry out"
    type_slug = "no-cancellation-asked"

    def __init__(self, request_id: int) -> None:
        super().__init__(
            f"Support request {request_id} does not name an account to cancel; answer the "
            "customer to ask for their username."
        )


class CancellationAlreadyDone(Conflict):
    title = "Cancellation already done"
    type_slug = "cancellation-already-done"

    def __init__(self, request: SupportRequest) -> None:
        when = f" at {request.cancelled_at:%Y-%m-%d %H:%M} UTC" if request.cancelled_at else ""
        super().__init__(
            f"The cancellation asked for in support request {request.id} was already carried "
            f"out{when}.",
            support_request_id=request.id,
        )


class NotAnAdministratorToOwn(InvalidInput):
    title = "Not an administrator"
    type_slug = "support-owner-not-admin"

    def __init__(self, account_id: int) -> None:
        super().__init__(
            f"Account {account_id} is not an administrator; only administrators own requests.",
            field="owner_id",
        )


class NotFromSupport(Forbidden):
    title = "Not from support"
    type_slug = "support-reply-not-from-support"

    def __init__(self) -> None:
        super().__init__(
            "This reply address takes answers from support's own addresses only; write to the "
            "support address instead."
        )


class AttachmentsRefused(InvalidInput):
    title = "Attachments not accepted"
    type_slug = "attachments-refused"

    def __init__(self) -> None:
        super().__init__(
            "Support accepts text only: attachments are not accepted. Write what you see in "
            "the message itself (without addresses or logs of your connection)."
        )


@dataclass(frozen=True)
class SupportView:
    """A request with its conversation and the addresses of the people around it."""

    request: SupportRequest
    messages: tuple[SupportMessage, ...]
    requester_email: str
    owner_email: str | None
    cancel_account_email: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.request.status == SupportStatus.open and self.request.due_at < now

    def seconds_left(self, now: datetime) -> int:
        return int((self.request.due_at - now).total_seconds())


@dataclass(frozen=True)
class SupportSummary:
    by_status: dict[SupportStatus, int]
    overdue: int


def clean_text(text: str) -> str:
    """A message as stored: trimmed, and without IP address literals."""
    return redact(text.strip())


# --- reading a cancellation asked for by email ----------------------------------------------

_CANCEL = re.compile(r"\b(cancel|cancellation|unsubscribe|terminate my)\b", re.I)
_REFUND = re.compile(r"\b(refund|money back)\b", re.I)
_USERNAME = re.compile(r"\b(?:vpn\s+)?user\s*name\s*(?:is|:|=)?\s*(\S+@\S+\.\w+|\S+)", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def topic_of_email(subject: str, body: str) -> SupportTopic:
    text = f"{subject}\n{body}"
    if _CANCEL.search(text):
        return SupportTopic.cancellation
    if _REFUND.search(text):
        return SupportTopic.refund
    return SupportTopic.other


def usernames_in(text: str) -> list[str]:
    """The username a customer names ("username: jo@example.com"), then any address."""
    found = [m.group(1).strip(".,;<>") for m in _USERNAME.finditer(text)]
    found += [m.group(0).strip(".,;<>") for m in _EMAIL.finditer(text)]
    return [name for name in dict.fromkeys(found) if name]


class SupportService:
    # --- the customer ------------------------------------------------------------------------

    async def open(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        account: Account | None,
        email: str | None,
        topic: SupportTopic,
        subject: str,
        body: str,
        via: SupportVia,
    ) -> SupportView:
        """Open a request, signed in (``account``) or by email address; support is told."""
        if account is None:
            digest = keyed_digest(
                runtime.settings.secret_key.get_secret_value(),
                f"support-open:{(email or '').strip().lower()}",
            )
            refused = await runtime.rate_limits.hit(SIGNED_OUT_LIMITS, "support-open", digest)
            if refused is not None:
                raise TooManyRequests(
                    "Several requests came from this address already; support answers them "
                    f"by email. Try again in {refused.seconds // 60 + 1} minutes.",
                    retry_after=refused.retry_after,
                )
        now = utcnow()
        hours = runtime.policy.support.deadline_for(topic)
        request = await SupportRepository(session).add(
            SupportRequest(
                account_id=account.id if account is not None else None,
                email=None if account is not None else (email or "").strip(),
                topic=topic,
                subject=clean_text(subject)[:200] or TOPIC_NAMES[topic],
                status=SupportStatus.open,
                opened_at=now,
                due_at=now + timedelta(hours=hours),
                updated_at=now,
            )
        )
        message = await self._add_message(
            session, request, SupportAuthor.customer, body, via, admin=None, now=now
        )
        view = await self.view(session, request)
        self._notify_support(session, runtime, view, message, opened=True)
        if account is None:
            # Signed out: the link is the customer's only way back to the conversation.
            self._notify_customer(session, runtime, view, None)
        log.info("support request %s opened (%s)", request.id, topic.value)
        return view

    async def own(self, session: AsyncSession, account: Account) -> list[SupportView]:
        requests = await SupportRepository(session).requests_of(account.id)
        return await self._views(session, list(requests))

    async def own_one(
        self, session: AsyncSession, account: Account, request_id: int
    ) -> SupportView:
        request = await SupportRepository(session).own(account.id, request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        return await self.view(session, request)

    async def by_key(
        self, session: AsyncSession, runtime: Runtime, request_id: int, key: str
    ) -> SupportView:
        """A request opened through the link in its emails (signed out)."""
        if not token_matches(runtime, "view", request_id, key):
            raise SupportLinkInvalid()
        request = await SupportRepository(session).get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        return await self.view(session, request)

    async def customer_reply(
        self,
        session: AsyncSession,
        runtime: Runtime,
        request: SupportRequest,
        body: str,
        via: SupportVia,
    ) -> SupportView:
        """The customer writes again: the request is support's turn, with a fresh deadline
        when it had been waiting on the customer or resolved."""
        now = utcnow()
        values: dict[str, object] = {"updated_at": now}
        if request.status != SupportStatus.open:
            hours = runtime.policy.support.deadline_for(request.topic)
            values.update(
                status=SupportStatus.open, due_at=now + timedelta(hours=hours), resolved_at=None
            )
        await SupportRepository(session).set_if(request, SupportRequest.id == request.id, **values)
        message = await self._add_message(
            session, request, SupportAuthor.customer, body, via, admin=None, now=now
        )
        view = await self.view(session, request)
        self._notify_support(session, runtime, view, message, opened=False)
        return view

    # --- administrators ----------------------------------------------------------------------

    async def queue(self, session: AsyncSession) -> list[SupportView]:
        """Unresolved requests, support's turn first by deadline (overdue at the top)."""
        return await self._views(session, list(await SupportRepository(session).queue(QUEUE_LIMIT)))

    async def resolved(self, session: AsyncSession, limit: int = 50) -> list[SupportView]:
        return await self._views(session, list(await SupportRepository(session).resolved(limit)))

    async def get(self, session: AsyncSession, request_id: int) -> SupportView:
        request = await SupportRepository(session).get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        return await self.view(session, request)

    async def administrators(self, session: AsyncSession) -> list[tuple[int, str]]:
        """Who may own a request: (account id, email) of every administrator."""
        return await SupportRepository(session).admins()

    async def summary(self, session: AsyncSession) -> SupportSummary:
        by_status, overdue = await SupportRepository(session).counts(utcnow())
        return SupportSummary(by_status=by_status, overdue=overdue)

    async def answer(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        request_id: int,
        body: str,
        *,
        status: SupportStatus = SupportStatus.waiting_on_customer,
        via: SupportVia = SupportVia.web,
    ) -> SupportView:
        """Support's message to the customer, who is emailed; the request then waits on the
        customer (or is resolved, or stays open, as ``status`` says)."""
        require_administrator(actor)
        repository = SupportRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        now = utcnow()
        if request.owner_id is None and isinstance(actor, Account):
            # Whoever answers first owns it: of two answering at once, one becomes the owner.
            await repository.set_if(request, SupportRequest.owner_id.is_(None), owner_id=actor.id)
        values: dict[str, object] = {"updated_at": now, "status": status}
        values["resolved_at"] = now if status == SupportStatus.resolved else None
        await repository.set_if(request, SupportRequest.id == request.id, **values)
        admin_id = actor.id if isinstance(actor, Account) else None
        message = await self._add_message(
            session, request, SupportAuthor.support, body, via, admin=admin_id, now=now
        )
        view = await self.view(session, request)
        self._notify_customer(session, runtime, view, message)
        return view

    async def take(self, session: AsyncSession, actor: Account, request_id: int) -> SupportView:
        """Become the request's owner; only while nobody owns it."""
        require_administrator(actor)
        repository = SupportRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        if request.owner_id == actor.id:
            return await self.view(session, request)
        taken = await repository.set_if(
            request, SupportRequest.owner_id.is_(None), owner_id=actor.id
        )
        if not taken:
            emails = await repository.emails_of([request.owner_id] if request.owner_id else [])
            raise SupportRequestTaken(request.id, emails.get(request.owner_id or 0))
        await admin_audit.record(
            session, actor, "support.take", "support_request", request.id, None
        )
        return await self.view(session, request)

    async def assign_to(
        self, session: AsyncSession, actor: Actor, request_id: int, owner_id: int
    ) -> SupportView:
        """``assign`` to the administrator with account id ``owner_id``."""
        owner = await SupportRepository(session).account(owner_id)
        if owner is None or not owner.is_admin:
            raise NotAnAdministratorToOwn(owner_id)
        return await self.assign(session, actor, request_id, owner)

    async def assign(
        self, session: AsyncSession, actor: Actor, request_id: int, owner: Account
    ) -> SupportView:
        """Give the request to ``owner`` (an administrator), whoever held it."""
        require_administrator(actor)
        if not owner.is_admin:
            raise NotAnAdministratorToOwn(owner.id)
        repository = SupportRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        await repository.set_if(request, SupportRequest.id == request.id, owner_id=owner.id)
        await admin_audit.record(
            session,
            actor,
            "support.assign",
            "support_request",
            request.id,
            None,
            {"owner_id": owner.id},
        )
        return await self.view(session, request)

    async def set_status(
        self,
        session: AsyncSession,
        actor: Actor,
        request_id: int,
        status: SupportStatus,
        *,
        expected: SupportStatus | None = None,
    ) -> SupportView:
        """Move the request to ``status``: from ``expected`` only (the state the
        administrator saw), or from any other state. A request already there, or moved by
        someone else meanwhile, is refused with what it is now."""
        require_administrator(actor)
        repository = SupportRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        now = utcnow()
        condition = (
            SupportRequest.status == expected
            if expected is not None and expected != status
            else SupportRequest.status != status
        )
        values: dict[str, object] = {"status": status, "updated_at": now}
        values["resolved_at"] = now if status == SupportStatus.resolved else None
        if not await repository.set_if(request, condition, **values):
            raise SupportStateChanged(request)
        await admin_audit.record(
            session,
            actor,
            f"support.{status.value}",
            "support_request",
            request.id,
            None,
            {"status": status.value},
        )
        return await self.view(session, request)

    async def carry_out_cancellation(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, request_id: int
    ) -> SupportView:
        """One click: cancel (at the period's end) the subscription of the account a
        cancellation email named, answer the customer and resolve the request. Once only."""
        require_administrator(actor)
        repository = SupportRepository(session)
        request = await repository.get(request_id)
        if request is None:
            raise SupportRequestNotFound(request_id)
        if request.cancel_account_id is None:
            raise NoCancellationAsked(request.id)
        now = utcnow()
        if not await repository.set_if(
            request, SupportRequest.cancelled_at.is_(None), cancelled_at=now
        ):
            raise CancellationAlreadyDone(request)
        details = await subscription_service.cancel(session, runtime, request.cancel_account_id)
        await admin_audit.record(
            session,
            actor,
            "support.cancel_subscription",
            "support_request",
            request.id,
            None,
            {"account_id": request.cancel_account_id},
        )
        return await self.answer(
            session,
            runtime,
            actor,
            request.id,
            f"Your subscription is cancelled. {details.message}",
            status=SupportStatus.resolved,
        )

    # --- inbound email -----------------------------------------------------------------------

    async def receive_email(
        self,
        session: AsyncSession,
        runtime: Runtime,
        *,
        reply: ReplyTo | None,
        sender: str,
        subject: str,
        body: str,
    ) -> SupportView:
        """An email to the support desk: a reply (``reply``, a valid reply address) lands on
        its request: the customer's, or support's (the staff address, from an administrator's
        address only); a new email opens a request (the sender's account when one has the
        address). A cancellation naming a username is recognised, for an administrator to
        carry out in one click."""
        repository = SupportRepository(session)
        sender_account = await repository.account_by_email(sender)
        if reply is not None:
            request = await repository.get(reply.request_id)
            if request is None:
                raise SupportRequestNotFound(reply.request_id)
            if not reply.staff:
                return await self.customer_reply(session, runtime, request, body, SupportVia.email)
            if sender_account is None or not sender_account.is_admin:
                raise NotFromSupport()
            return await self.answer(
                session,
                runtime,
                sender_account,
                request.id,
                body,
                status=SupportStatus.waiting_on_customer,
                via=SupportVia.email,
            )
        topic = topic_of_email(subject, body)
        view = await self.open(
            session,
            runtime,
            account=sender_account,
            email=None if sender_account is not None else sender,
            topic=topic,
            subject=subject,
            body=body,
            via=SupportVia.email,
        )
        if topic == SupportTopic.cancellation:
            named = None
            for name in usernames_in(f"{subject}\n{body}"):
                named = await repository.account_by_email(name)
                if named is not None:
                    break
            named = named or sender_account
            if named is not None:
                request = view.request
                await repository.set_if(
                    request, SupportRequest.id == request.id, cancel_account_id=named.id
                )
                view = await self.view(session, request)
        return view

    # --- links to other domains --------------------------------------------------------------

    async def link_refund(
        self,
        session: AsyncSession,
        account: Account,
        support_request_id: int,
        refund_request_id: int,
    ) -> SupportView:
        """The refund request made after this conversation (``refunds.support_first``)."""
        request = await SupportRepository(session).own(account.id, support_request_id)
        if request is None:
            raise SupportRequestNotFound(support_request_id)
        request.refund_request_id = refund_request_id
        await session.flush()
        return await self.view(session, request)

    # --- privacy ----------------------------------------------------------------------------

    async def export(self, session: AsyncSession, account: Account) -> list[SupportView]:
        """Every request of the account, and those opened signed out from its address."""
        repository = SupportRepository(session)
        requests = list(await repository.requests_of(account.id))
        requests += list(await repository.signed_out_of(account.email))
        return await self._views(session, requests)

    async def erase(self, session: AsyncSession, account: Account) -> int:
        return await SupportRepository(session).erase_for(account.id, account.email)

    # --- inside -----------------------------------------------------------------------------

    async def view(self, session: AsyncSession, request: SupportRequest) -> SupportView:
        return (await self._views(session, [request]))[0]

    async def _views(
        self, session: AsyncSession, requests: list[SupportRequest]
    ) -> list[SupportView]:
        repository = SupportRepository(session)
        messages = await repository.messages_of([r.id for r in requests])
        ids = [
            i
            for r in requests
            for i in (r.account_id, r.owner_id, r.cancel_account_id)
            if i is not None
        ]
        emails = await repository.emails_of(ids)
        views = []
        for request in requests:
            requester = (
                emails.get(request.account_id, "")
                if request.account_id is not None
                else (request.email or "")
            )
            views.append(
                SupportView(
                    request=request,
                    messages=tuple(m for m in messages if m.request_id == request.id),
                    requester_email=requester,
                    owner_email=emails.get(request.owner_id) if request.owner_id else None,
                    cancel_account_email=(
                        emails.get(request.cancel_account_id) if request.cancel_account_id else None
                    ),
                )
            )
        return views

    @staticmethod
    async def _add_message(
        session: AsyncSession,
        request: SupportRequest,
        author: SupportAuthor,
        body: str,
        via: SupportVia,
        *,
        admin: int | None,
        now: datetime,
    ) -> SupportMessage:
        return await SupportRepository(session).add_message(
            SupportMessage(
                request_id=request.id,
                author=author,
                admin_id=admin,
                body=clean_text(body),
                via=via,
                created_at=now,
            )
        )

    @staticmethod
    def _email(
        runtime: Runtime,
        template: str,
        view: SupportView,
        message: SupportMessage | None,
        link: str,
        *,
        opened: bool,
    ) -> tuple[str, str]:
        """Subject and body of a notification: the message's text only where the policy lets
        it travel by email (``support.message_in_email``), always the link."""
        request = view.request
        shown = message.body if message and runtime.policy.support.message_in_email else None
        text = _emails.get_template(template).render(
            provider=runtime.policy.provider.name,
            request_id=request.id,
            subject=request.subject,
            topic=TOPIC_NAMES[request.topic],
            opened=opened,
            body=shown,
            link=link,
            replies=bool(runtime.settings.inbound_smtp),
        )
        subject, _, body = text.partition("\n")
        return subject.strip(), body.lstrip("\n")

    def _notify_customer(
        self,
        session: AsyncSession,
        runtime: Runtime,
        view: SupportView,
        message: SupportMessage | None,
    ) -> None:
        to = view.requester_email
        if not to:
            return
        link = customer_link(runtime, view.request.id)
        subject, body = self._email(
            runtime, "to_customer.txt", view, message, link, opened=message is None
        )
        reply_to = reply_address(runtime, view.request.id)
        after_commit(session, lambda: runtime.mailer.send(to, subject, body, reply_to=reply_to))

    def _notify_support(
        self,
        session: AsyncSession,
        runtime: Runtime,
        view: SupportView,
        message: SupportMessage,
        *,
        opened: bool,
    ) -> None:
        request = view.request
        link = admin_link(runtime, request.id)
        subject, body = self._email(runtime, "to_support.txt", view, message, link, opened=opened)
        reply_to = reply_address(runtime, request.id, staff=True)
        owner = view.owner_email

        async def send() -> None:
            recipients: list[str] = [owner] if owner else []
            if not recipients:
                async with runtime.sessionmaker() as reading:
                    recipients = list(await SupportRepository(reading).admin_emails())
            for to in recipients:
                await runtime.mailer.send(to, subject, body, reply_to=reply_to)

        after_commit(session, send)


support = SupportService()
