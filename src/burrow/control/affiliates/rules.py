"""The affiliate program's rules as pure functions: what a commission is worth, how its state
moves, how much of it a refund takes back, the refund rate over its window, inactivity.

No I/O, no database, no clock (``now`` is an argument): table-tested in
tests/control/affiliates/test_rules.py. Imports the models' enums and the policy schema only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from burrow.control.models.commission import CommissionStatus
from burrow.control.models.order import OrderKind
from burrow.control.policy.schemas import AffiliatesSection


def mailbox(email: str) -> str:
    """The form of an address that names its mailbox: case and a ``+tag`` make no new one
    (a self-referral through "me+1@example.com" is still "me@example.com")."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    return f"{local}@{domain}"


# --- what a referred order earns ---------------------------------------------------------------


def add_months(start: datetime, months: int) -> datetime:
    """``start`` plus whole calendar months (the 31st becomes the month's last day)."""
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    days = [31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return start.replace(year=year, month=month, day=min(start.day, days))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def commission_minor(
    section: AffiliatesSection,
    kind: OrderKind,
    amount_minor: int,
    *,
    paid_at: datetime,
    first_paid_at: datetime | None,
) -> int:
    """The commission on an order of ``amount_minor`` (rounded down; 0: nothing earned).

    A first order earns ``commission_percent``; a renewal earns ``renewal_percent`` while it
    is paid within ``renewal_months`` of the customer's first paid order.
    """
    if amount_minor <= 0:
        return 0
    if kind == OrderKind.first:
        percent = section.commission_percent
    else:
        percent = section.renewal_percent
        limit = section.renewal_months
        if limit is not None and (
            first_paid_at is None or paid_at >= add_months(first_paid_at, limit)
        ):
            return 0
    if percent is None:
        return 0
    return amount_minor * percent // 100


def to_payout_currency(section: AffiliatesSection, amount_minor: int, currency: str) -> int | None:
    """``amount_minor`` of ``currency`` in the payout currency at the policy's rate, rounded
    toward zero; None when the policy names no rate for it."""
    if currency == section.currency:
        return amount_minor
    rate = section.exchange_rates.get(currency)
    if rate is None:
        return None
    converted = (Decimal(amount_minor) * Decimal(rate)).quantize(Decimal(1), rounding=ROUND_DOWN)
    return int(converted)


# --- commission states -------------------------------------------------------------------------


class CommissionEvent(StrEnum):
    released = "released"  # the holding period passed
    refunded = "refunded"  # the order was refunded in full
    paid_out = "paid_out"  # put in a payout item
    returned = "returned"  # the payout item was returned, failed or was denied
    cleared = "cleared"  # an administrator cleared a held commission
    rejected = "rejected"  # an administrator rejected a held commission
    ended = "ended"  # the affiliate was terminated (pending and held ones end with it)


S, E = CommissionStatus, CommissionEvent

# status -> event -> next status. What is missing is refused.
TRANSITIONS: dict[CommissionStatus, dict[CommissionEvent, CommissionStatus]] = {
    S.held: {E.cleared: S.pending, E.rejected: S.cancelled, E.refunded: S.cancelled},
    S.pending: {E.released: S.payable, E.refunded: S.cancelled, E.ended: S.cancelled},
    S.payable: {E.paid_out: S.paid, E.refunded: S.cancelled},
    S.paid: {E.returned: S.payable},
    S.cancelled: {},
}


class IllegalTransition(ValueError):
    def __init__(self, status: CommissionStatus, event: CommissionEvent) -> None:
        super().__init__(f"a {status} commission cannot be {event}")


def next_status(status: CommissionStatus, event: CommissionEvent) -> CommissionStatus:
    found = TRANSITIONS[status].get(event)
    if found is None:
        raise IllegalTransition(status, event)
    return found


def on_termination(status: CommissionStatus, payable_on_termination: str) -> CommissionStatus:
    """What an ended affiliate's commission becomes: pending and held ones are cancelled,
    payable ones are paid out as usual or held, as the policy says."""
    if status in (S.pending, S.held):
        return S.cancelled
    if status == S.payable and payable_on_termination == "hold":
        return S.held
    return status


@dataclass(frozen=True)
class Reversal:
    """What a refund does to one earned commission."""

    # Taken off the commission itself (it was not paid out yet).
    reduce_minor: int
    # A negative commission for the affiliate's next payout (it was paid out already).
    clawback_minor: int
    cancelled: bool


def reversal(
    *,
    status: CommissionStatus,
    earned_minor: int,
    already_reversed_minor: int,
    order_minor: int,
    refunded_total_minor: int,
) -> Reversal:
    """A refund brought the order's refunded total to ``refunded_total_minor``: the share of
    the commission that goes with it (proportional, rounded up so a full refund takes all),
    less what earlier refunds already took."""
    if order_minor <= 0 or status == S.cancelled:
        return Reversal(0, 0, status == S.cancelled)
    refunded = min(max(refunded_total_minor, 0), order_minor)
    share = -(-earned_minor * refunded // order_minor)  # ceiling division
    due = max(share - already_reversed_minor, 0)
    if due == 0:
        return Reversal(0, 0, False)
    full = refunded >= order_minor
    if status == S.paid:
        return Reversal(0, due, False)
    return Reversal(due, 0, full)


# --- the refund rate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferredOrder:
    paid_at: datetime
    refunded: bool


@dataclass(frozen=True)
class RefundRate:
    orders: int
    refunded: int

    @property
    def percent(self) -> Decimal:
        if not self.orders:
            return Decimal(0)
        return (Decimal(self.refunded) * 100 / Decimal(self.orders)).quantize(Decimal("0.1"))


def refund_rate(orders: Sequence[ReferredOrder], now: datetime, window_days: int) -> RefundRate:
    """Referred orders paid in the last ``window_days`` and how many of them were refunded."""
    start = now - timedelta(days=window_days)
    inside = [o for o in orders if start <= o.paid_at <= now]
    return RefundRate(len(inside), sum(1 for o in inside if o.refunded))


def refund_rate_too_high(section: AffiliatesSection, rate: RefundRate) -> bool:
    """Above the threshold, once the window holds the minimum number of orders."""
    threshold = section.refund_rate_threshold_percent
    if threshold is None or rate.orders < section.refund_rate_min_orders:
        return False
    return rate.refunded * 100 > threshold * rate.orders


# --- inactivity --------------------------------------------------------------------------------


class Inactivity(StrEnum):
    active = "active"
    notify = "notify"  # email the notice now
    wait = "wait"  # noticed; the end has not come yet
    end = "end"


def inactivity(
    section: AffiliatesSection,
    *,
    last_active_at: datetime,
    notice_at: datetime | None,
    now: datetime,
) -> Inactivity:
    """Where an affiliate stands: ``inactivity_termination_months`` without a referred paid
    order or a sign-in ends it, the notice goes ``inactivity_notice_days`` before; an end is
    never sooner than that many days after the notice was sent."""
    months = section.inactivity_termination_months
    if months is None:
        return Inactivity.active
    ends = add_months(last_active_at, months)
    notice = timedelta(days=section.inactivity_notice_days)
    if notice_at is not None and notice_at < last_active_at:
        notice_at = None  # active again since that notice
    if now < ends - notice:
        return Inactivity.active
    if notice_at is None:
        return Inactivity.notify
    if now >= ends and now >= notice_at + notice:
        return Inactivity.end
    return Inactivity.wait
