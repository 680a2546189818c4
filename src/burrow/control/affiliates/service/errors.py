"""Every error of the affiliate program::

BurrowError
+-- NotFound: AffiliateNotFound, CommissionNotFound, PayoutBatchNotFound
+-- Forbidden: ProgramClosed, NotAnAffiliate
+-- InvalidInput: WebsiteRequired
+-- Conflict: AlreadyApplied, DecisionNotAllowed, ReviewNotAllowed, NothingToPayOut,
              PayoutsByHand, PayoutsNotSetUp
"""

from __future__ import annotations

import logging

from burrow.control.errors import Conflict, Forbidden, InvalidInput, NotFound

log = logging.getLogger(__name__)


class ProgramClosed(Forbidden):
    title = "No affiliate program"
    type_slug = "no-affiliate-program"

    def __init__(self) -> None:
        super().__init__("This provider runs no affiliate program.")


class NotAnAffiliate(Forbidden):
    title = "Not an affiliate"
    type_slug = "not-an-affiliate"

    def __init__(self) -> None:
        super().__init__(
            "You have not applied to the affiliate program; apply first to get a link."
        )


class AffiliateNotFound(NotFound):
    title = "Unknown affiliate"
    type_slug = "unknown-affiliate"

    def __init__(self, affiliate_id: int) -> None:
        super().__init__(f"There is no affiliate with the id {affiliate_id}.")


class CommissionNotFound(NotFound):
    title = "Unknown commission"
    type_slug = "unknown-commission"

    def __init__(self, commission_id: int) -> None:
        super().__init__(f"There is no commission with the id {commission_id}.")


class WebsiteRequired(InvalidInput):
    title = "Promotional site required"
    type_slug = "affiliate-website-required"

    def __init__(self) -> None:
        super().__init__(
            "The affiliate program needs the address of your active promotional site.",
            field="website",
        )


class AlreadyApplied(Conflict):
    title = "Already applied"
    type_slug = "affiliate-already-applied"

    def __init__(self, status: str) -> None:
        super().__init__(f"You have already applied to the affiliate program; it is {status}.")


class DecisionNotAllowed(Conflict):
    title = "Decision not possible"
    type_slug = "affiliate-decision-not-allowed"

    def __init__(self, affiliate_id: int, status: str, decision: str) -> None:
        super().__init__(
            f"Affiliate {affiliate_id} is {status}; it cannot be given '{decision}'. "
            "Nothing changed.",
            affiliate_status=status,
        )


class ReviewNotAllowed(Conflict):
    title = "Not held for review"
    type_slug = "commission-not-held"

    def __init__(self, commission_id: int, status: str) -> None:
        super().__init__(
            f"Commission {commission_id} is {status}, not held for review; nothing changed."
        )


class NothingToPayOut(Conflict):
    title = "Nothing to pay out"
    type_slug = "nothing-to-pay-out"

    def __init__(self, minimum: str) -> None:
        super().__init__(
            f"No affiliate's payable balance reaches the minimum payout of {minimum}; "
            "nothing was sent."
        )


class PayoutBatchNotFound(NotFound):
    title = "Unknown payout batch"
    type_slug = "unknown-payout-batch"

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"There is no payout batch with the id {batch_id}.")


class PayoutsByHand(Conflict):
    title = "Payouts made by hand"
    type_slug = "payouts-by-hand"

    def __init__(self, method: str) -> None:
        super().__init__(
            f"The policy pays affiliates by {method.replace('_', ' ')}, which burrow does not "
            "send; pay the payable balances by hand. Nothing was sent."
        )


class PayoutsNotSetUp(Conflict):
    title = "Payouts not set up"
    type_slug = "payouts-not-set-up"

    def __init__(self) -> None:
        super().__init__(
            "PayPal is not set up on this server, so no payout can be sent; nothing changed."
        )
