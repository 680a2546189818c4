"""What the affiliate service's modules share: the referral link's names, the policy's
section, and the keyed digests that recognise an affiliate's own mailbox."""

from __future__ import annotations

import logging

from burrow.control.affiliates import rules
from burrow.control.affiliates.service.errors import ProgramClosed
from burrow.control.policy.schemas import AffiliatesSection
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest

log = logging.getLogger(__name__)

REFERRAL_COOKIE = "burrow_ref"
REFERRAL_PATH = "/r/"


def section(runtime: Runtime) -> AffiliatesSection:
    found = runtime.policy.affiliates
    if found is None or not found.enabled:
        raise ProgramClosed()
    return found


def _section_or_none(runtime: Runtime) -> AffiliatesSection | None:
    found = runtime.policy.affiliates
    return found if found is not None and found.enabled else None


def _digest(runtime: Runtime, purpose: str, value: str) -> str:
    secret = runtime.settings.secret_key.get_secret_value()
    return keyed_digest(secret, f"affiliate-{purpose}:{value}")


def _email_digest(runtime: Runtime, email: str) -> str:
    return _digest(runtime, "email", rules.mailbox(email))
