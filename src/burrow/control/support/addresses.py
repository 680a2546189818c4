"""The support desk's addresses: the reply address of a request (a signed token in its
local part), the customer's link to a conversation (a signed key) and the admin panel's.

Tokens are HMAC-SHA256 of the request's id under the server's secret key, one purpose each
(``reply``, ``view``), so neither can be made from the other or for another request.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Literal

from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest

# Characters of the signed token in reply addresses and links (hex of an HMAC-SHA256).
TOKEN_LENGTH = 32


def _token(runtime: Runtime, purpose: str, request_id: int) -> str:
    secret = runtime.settings.secret_key.get_secret_value()
    return keyed_digest(secret, f"support-{purpose}:{request_id}")[:TOKEN_LENGTH]


def token_matches(runtime: Runtime, purpose: str, request_id: int, token: str) -> bool:
    return hmac.compare_digest(_token(runtime, purpose, request_id), token.lower())


def support_address(runtime: Runtime) -> str:
    policy = runtime.policy
    return str(policy.support.address or policy.provider.contact_email)


@dataclass(frozen=True)
class ReplyTo:
    """A valid reply address: the request, and whether it was support's notification
    (``staff``) or the customer's that was answered."""

    request_id: int
    staff: bool


def reply_address(runtime: Runtime, request_id: int, *, staff: bool = False) -> str:
    """``support+<id>-<token>@<domain>`` (support's side: ``-s<token>``): a reply to it lands
    on request ``id``. The two sides have tokens of their own, so a customer holding theirs
    cannot write as support by forging the From line."""
    local, _, domain = support_address(runtime).partition("@")
    purpose = "reply-staff" if staff else "reply"
    marker = "s" if staff else ""
    return f"{local}+{request_id}-{marker}{_token(runtime, purpose, request_id)}@{domain}"


_REPLY_LOCAL = re.compile(
    r"^(?P<base>[^+]+)\+(?P<id>\d{1,18})-(?P<staff>s?)(?P<token>[0-9a-fA-F]+)$"
)


def parse_recipient(runtime: Runtime, address: str) -> ReplyTo | Literal[False] | None:
    """What an inbound recipient is: a reply to a request (a valid reply address), None (the
    support address itself, a new request), or False (anything else: refused, nothing is
    relayed).

    A reply address whose token does not match is False as well: forged or mistyped.
    """
    _, addr = parseaddr(address)
    local, _, domain = addr.partition("@")
    base_local, _, base_domain = support_address(runtime).partition("@")
    if domain.lower() != base_domain.lower():
        return False
    if local.lower() == base_local.lower():
        return None
    found = _REPLY_LOCAL.match(local)
    if found is None or found["base"].lower() != base_local.lower():
        return False
    request_id = int(found["id"])
    staff = bool(found["staff"])
    if not token_matches(runtime, "reply-staff" if staff else "reply", request_id, found["token"]):
        return False
    return ReplyTo(request_id, staff)


def view_token(runtime: Runtime, request_id: int) -> str:
    return _token(runtime, "view", request_id)


def customer_link(runtime: Runtime, request_id: int) -> str:
    """The request's page for its customer, signed in or not (the key is the proof)."""
    key = view_token(runtime, request_id)
    return runtime.settings.public_link(f"/support/requests/{request_id}?key={key}")


def admin_link(runtime: Runtime, request_id: int) -> str:
    return runtime.settings.public_link(f"/admin/support/{request_id}")
