"""Outgoing email through SMTP (aiosmtplib). Messages are sent after commit."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import aiosmtplib

from burrow.control.config import Settings

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, to: str, subject: str, body: str, *, reply_to: str | None = None) -> None:
        settings = self._settings
        if not settings.email_enabled:
            log.info("email disabled; a message titled %r was not sent", subject)
            return
        if settings.mail_to_output:
            # Development without BURROW_SMTP_HOST: the sign-up page says the link is here.
            log.warning(
                "development, no mail server set (BURROW_SMTP_HOST): the message to %s is\n"
                "Subject: %s\n\n%s",
                to,
                subject,
                body,
            )
            return
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        if reply_to:
            message["Reply-To"] = reply_to
            # RFC 3834: a notification, so vacation responders do not answer it (the support
            # desk's listener drops such answers too).
            message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                start_tls=settings.smtp_starttls,
                timeout=15,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Never fail the request after commit; the customer can ask for a new link.
            log.warning("could not send email %r: %s", subject, exc)
            if settings.environment == "development":
                # On a developer's machine there is often no mail server: show the message
                # (a verification link, never anything about VPN use) so the flow can go on.
                log.info("development: the message to %s was:\n%s", to, body)
