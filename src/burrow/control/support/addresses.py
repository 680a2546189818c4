"""The support desk's addresses: the reply address of a request (a signed token in its
local part), the customer's link to a conversation (a signed key) and the admin panel's.

Tokens are HMAC-SHA256 of the request's id under the server's secret key, one purpose each
(``reply``, ``view``), so neither can be made from the other or for another request.
"""

from __future__ import annotations

import hmac
import re
from email.utils import parseaddr

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


def reply_address(runtime: Runtime, request_id: int) -> str:
    """``support+<id>-<token>@<domain>``: a reply to it lands on request ``id``."""
    local, _, domain = support_address(runtime).partition("@")
    return f"{local}+{request_id}-{_token(runtime, 'reply', request_id)}@{domain}"


_REPLY_LOCAL = re.compile(r"^(?P<base>[^+]+)\+(?P<id>\d{1,18})-(?P<token>[0-9a-fA-F]+)$")


def parse_recipient(runtime: Runtime, address: str) -> int | bool | None:
    """What an inbound recipient is: a request id (a valid reply address), None (the support
    address itself, a new request), or False (anything else: refused, nothing is relayed).

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
    if not token_matches(runtime, "reply", request_id, found["token"]):
        return False
    return request_id


def view_token(runtime: Runtime, request_id: int) -> str:
    return _token(runtime, "view", request_id)


def customer_link(runtime: Runtime, request_id: int) -> str:
    """The request's page for its customer, signed in or not (the key is the proof)."""
    key = view_token(runtime, request_id)
    return runtime.settings.public_link(f"/support/requests/{request_id}?key={key}")


def admin_link(runtime: Runtime, request_id: int) -> str:
    return runtime.settings.public_link(f"/admin/support/{request_id}")
