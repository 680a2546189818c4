"""The affiliate program's service, one module per job.

- ``program``: applications and decisions, referral attribution, commissions that follow
  orders and refunds, the program's rules (self-referral, refund rate, inactivity), the
  pages' readings, the data export and erasure;
- ``payouts``: PayPal payout batches;
- ``errors``: every error of the domain; ``common``: what the modules share.

The rules themselves are pure (``affiliates.rules``); this service applies them. Billing calls
``order_paid`` when a referred order is paid and ``order_refunded`` when the provider reports
a refund; the refunds domain's ``on_refund_executed`` calls ``order_refunded`` for refunds it
executed. So the affiliates domain imports neither billing nor refunds (no circle). Callers
use ``affiliate`` (``from burrow.control.affiliates.service import affiliate as
affiliate_service``).
"""

from __future__ import annotations

from burrow.control.affiliates.service.common import REFERRAL_COOKIE, REFERRAL_PATH, section
from burrow.control.affiliates.service.errors import (
    AffiliateNotFound,
    AlreadyApplied,
    CommissionNotFound,
    DecisionNotAllowed,
    NotAnAffiliate,
    NothingToPayOut,
    PayoutBatchNotFound,
    PayoutsByHand,
    PayoutsNotSetUp,
    ProgramClosed,
    ReviewNotAllowed,
    WebsiteRequired,
)
from burrow.control.affiliates.service.payouts import PayoutService
from burrow.control.affiliates.service.program import (
    AffiliateData,
    AffiliateRow,
    Dashboard,
    ProgramService,
)


class AffiliateService(ProgramService, PayoutService):
    """The program and its payouts, one object."""


affiliate = AffiliateService()

__all__ = [
    "REFERRAL_COOKIE",
    "REFERRAL_PATH",
    "AffiliateData",
    "AffiliateNotFound",
    "AffiliateRow",
    "AffiliateService",
    "AlreadyApplied",
    "CommissionNotFound",
    "Dashboard",
    "DecisionNotAllowed",
    "NotAnAffiliate",
    "NothingToPayOut",
    "PayoutBatchNotFound",
    "PayoutsByHand",
    "PayoutsNotSetUp",
    "ProgramClosed",
    "ReviewNotAllowed",
    "WebsiteRequired",
    "affiliate",
    "section",
]
