"""The support desk's inbound SMTP listener (aiosmtpd), started by ``burrow serve`` when
``BURROW_INBOUND_SMTP`` is set.

It accepts mail for two kinds of address at the support address's domain and nothing else:

- the support address itself: a new request (the sender's account when one has the address);
- a reply address ``support+<id>-<token>@...`` from a notification: a message on request
  ``id``, accepted only when the token is the server's own signature of that id.

Every other recipient is refused at RCPT (so nothing is ever relayed), a forged reply token
too, with a reason the sender's mail server shows them. Only the sender's address, the
subject and the plain text are read: headers (whose ``Received`` lines carry addresses) and
the connecting client's address are never stored or logged. Attachments are refused.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

from aiosmtpd.smtp import SMTP

from burrow.control.db import unit_of_work
from burrow.control.errors import BurrowError
from burrow.control.runtime import Runtime
from burrow.control.support.addresses import parse_recipient, support_address
from burrow.control.support.service import support as support_service

log = logging.getLogger(__name__)

# A support email is text; a quarter of a megabyte is far more than any message needs.
DATA_SIZE_LIMIT = 256 * 1024
MESSAGE_MAX = 10_000
_QUOTE_HEADER = re.compile(r"^\s*On .{0,200}wrote:\s*$", re.M)
_TAGS = re.compile(r"<[^>]+>")


def plain_text(message: EmailMessage) -> str:
    """The message's own words: the plain-text part (else the HTML one without tags), with
    the quoted earlier conversation cut off."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = str(part.get_content())
    if part.get_content_subtype() == "html":
        text = _TAGS.sub("", text)
    cut = _QUOTE_HEADER.search(text)
    if cut is not None:
        text = text[: cut.start()]
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip()[:MESSAGE_MAX]


def _has_attachments(message: EmailMessage) -> bool:
    return any(True for _ in message.iter_attachments())


class SupportInbox:
    """aiosmtpd handler: ``handle_RCPT`` decides who may receive, ``handle_DATA`` files it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        del server, session, rcpt_options
        target = parse_recipient(self.runtime, address)
        if target is False:
            local = parseaddr(address)[1].partition("@")[0]
            if (
                "+" in local
                and local.split("+", 1)[0] == support_address(self.runtime).split("@")[0]
            ):
                return (
                    "550 5.7.1 This reply address is not valid (its token does not match); "
                    f"write to {support_address(self.runtime)} instead"
                )
            return "550 5.7.1 Only mail for the support desk is accepted here; nothing is relayed"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _automatic(self, envelope: Any, message: EmailMessage, sender: str) -> bool:
        if not envelope.mail_from or envelope.mail_from == "<>":
            return True  # a delivery status notification (RFC 5321 null reverse-path)
        auto = str(message.get("Auto-Submitted", "no")).strip().lower()
        if auto != "no":
            return True  # RFC 3834
        ours = {
            support_address(self.runtime).lower(),
            parseaddr(self.runtime.settings.smtp_from)[1].lower(),
        }
        local = sender.lower()
        base_local, _, base_domain = support_address(self.runtime).lower().partition("@")
        return local in ours or (
            local.endswith(f"@{base_domain}") and local.startswith(f"{base_local}+")
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        del server, session
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if _has_attachments(message):
            return (
                "550 5.7.1 Attachments are not accepted: write what you see in the message "
                "itself and send it again"
            )
        sender = parseaddr(str(message.get("From", "")))[1] or str(envelope.mail_from or "")
        if "@" not in sender:
            return "550 5.1.7 The message has no sender address to answer"
        if self._automatic(envelope, message, sender):
            # Bounces, auto-replies and our own mail: never filed, never answered, so two
            # robots (or the desk and itself) cannot write to each other forever.
            return "250 OK: an automatic message, not filed"
        subject = str(message.get("Subject", "") or "").strip()
        text = plain_text(message)
        if not text:
            return "550 5.6.0 The message has no text; write your request in its body"
        for recipient in dict.fromkeys(envelope.rcpt_tos):
            target = parse_recipient(self.runtime, recipient)
            if target is False:  # checked at RCPT already
                continue
            try:
                async with unit_of_work(self.runtime.sessionmaker) as session:
                    await support_service.receive_email(
                        session,
                        self.runtime,
                        reply=target,
                        sender=sender,
                        subject=subject or "(no subject)",
                        body=text,
                    )
            except BurrowError as exc:
                return f"550 5.7.1 {exc.message}"
        return "250 OK: the message is with support"


async def start_inbound(runtime: Runtime) -> asyncio.AbstractServer:
    """Listen on ``BURROW_INBOUND_SMTP`` in the running event loop (the app's own)."""
    where = runtime.settings.inbound_smtp
    assert where is not None
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    # aiosmtpd logs each client's address at INFO: a client address must not reach the logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = SupportInbox(runtime)
    domain = support_address(runtime).partition("@")[2] or "localhost"
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=DATA_SIZE_LIMIT,
            hostname=domain,
            ident="burrow support desk",
            loop=loop,
        ),
        host=host,
        port=int(port),
    )
    log.info("support desk listening for email on port %s", port)
    return server


async def stop_inbound(server: asyncio.AbstractServer) -> None:
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), timeout=5)
    except TimeoutError:
        log.warning("support desk: the email listener did not close within 5 s")
