"""The admin panel under ``/admin``: accounts, fleet, refunds, policy and audit, the admin
audit trail and the privacy requests that need a person.

Administrators only, and only with two-factor sign-in on: an administrator without it is sent
to the account page to set it up, and only a session that proved the code when it was opened
enters (not one waiting for its code, nor one older than the account's two-factor sign-in).
Every change goes through the services and leaves its row in the admin audit trail in the same
unit of work, exactly as the admin API does. What a page shows of a customer is what the policy
lets be kept: the last-login address only where ``privacy.store_last_login_ip`` is on,
connection records only in metered mode (counts otherwise).

``common`` holds the gate; ``oversight`` the overview, policy and audit, the audit trail and
privacy requests; ``accounts``, ``fleet``, ``refunds``, ``support``, ``abuse`` and
``affiliates`` their pages.
"""

from __future__ import annotations

from burrow.control.web.admin_pages import (
    abuse,
    accounts,
    affiliates,
    fleet,
    oversight,
    refunds,
    support,
)
from burrow.control.web.routing import page_router

# Each section with pages, mounted under /admin in this order; a section missing here fails
# start-up (``burrow.control.web.unlisted_page_modules``).
SECTIONS = (oversight, accounts, fleet, refunds, support, abuse, affiliates)

router = page_router()
for _module in SECTIONS:
    router.include_router(_module.router, prefix="/admin")
