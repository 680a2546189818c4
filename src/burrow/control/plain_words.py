"""What a person reads when a form or a request body is refused: the provider's words.

pydantic's own sentences ("Field required", "String should have at least 1 character",
"Value should have at least 10 items after validation") never reach a person. Every field a
customer can fill has its own message here; a schema may give a sharper one for its own
fields in a ``field_messages`` class attribute (the signup's password says how long it must
be, the sign-in's just asks for it). Messages our own validators raise are already written
for people and are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core._pydantic_core import list_all_errors

# Each field a customer form or API body has, in the provider's words.
FIELD_MESSAGES: dict[str, str] = {
    "email": "Enter your email address, such as name@example.com.",
    "new_email": "Enter the new email address, such as name@example.com.",
    "password": "Enter your password.",
    "current_password": "Enter the password you use today.",
    "new_password": "Choose a new password of at least 10 characters.",
    "age_attestation": "Answer the age question to continue.",
    "accept_terms_version": "Tick the box to accept the terms of service.",
    "totp_code": "Enter the 6-digit code your authenticator app shows now.",
    "recovery_code": "Enter one of your recovery codes, such as abcde-23456.",
    "code": "Enter the 6-digit code your authenticator app shows now.",
    "token": "This link is incomplete; open the link from the email again.",
    "plan_code": "Choose one of the plans.",
    "method": "Choose how you want to pay.",
    "country": "Enter your country as its two-letter code, such as DE or US.",
    "city": "Enter your city (up to 100 characters).",
    "postal_code": "Enter your postal code (up to 20 characters).",
    "card_last4": "Enter the last 4 digits of the card, or leave it empty.",
    "name_or_company": "Enter a name or company of up to 200 characters, or leave it empty.",
    "name": "Give the device a name of 1 to 64 characters.",
    "public_key": "Paste the device's WireGuard public key (44 characters ending in =), "
    "or leave it empty and we make one for you.",
    "node_id": "Choose one of the servers in the list.",
    "dns_filters": "Choose filters from the list.",
    "kind": "Choose what you want us to do.",
    "details": "Tell us in a few words what you need (up to 4000 characters).",
    "confirm": "Tick the box to confirm.",
    "reason": "Keep the reason under 2000 characters.",
    "version": "Accept the terms shown on this page.",
}

GENERIC = "This value is not accepted here; check it and try again."
MISSING = "Fill in this field."

# Sentences that come from a library, never from us: every pydantic error template (the part
# before the first placeholder) and the email validator's.
LIBRARY_PHRASES: tuple[str, ...] = tuple(
    sorted(
        {
            template.split("{")[0].strip()
            for error in list_all_errors()
            for template in (error["message_template_python"],)
            if len(template.split("{")[0].strip()) >= 8
        }
        | {"value is not a valid email address", "Value error,", "Assertion failed,"}
    )
)


def library_phrase(text: str) -> str | None:
    """The library sentence ``text`` contains, if any."""
    for phrase in LIBRARY_PHRASES:
        if phrase in text:
            return phrase
    return None


def field_message(model: type[Any] | None, field: str, error: Mapping[str, Any]) -> str:
    """What to tell a person about ``field`` of ``model`` from one pydantic error."""
    message = str(error.get("msg", ""))
    if error.get("type") == "value_error":
        own = message.removeprefix("Value error, ")
        if library_phrase(own) is None and own:
            return own
    specific: Mapping[str, str] = getattr(model, "field_messages", {}) if model else {}
    if field in specific:
        return specific[field]
    if field in FIELD_MESSAGES:
        return FIELD_MESSAGES[field]
    return MISSING if error.get("type") == "missing" else GENERIC
