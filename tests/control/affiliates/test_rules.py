"""Table tests of the affiliate program's pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from burrow.control.affiliates.rules import (
    CommissionEvent,
    IllegalTransition,
    Inactivity,
    ReferredOrder,
    RefundRate,
    Reversal,
    commission_minor,
    inactivity,
    mailbox,
    next_status,
    on_termination,
    refund_rate,
    refund_rate_too_high,
    reversal,
    to_payout_currency,
)
from burrow.control.models import CommissionStatus, OrderKind
from burrow.control.policy.schemas import AffiliatesSection

S, E = CommissionStatus, CommissionEvent
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def section(**changes: Any) -> AffiliatesSection:
    values: dict[str, Any] = {
        "payout_minimum_minor": 10000,
        "currency": "USD",
        "payout_method": "paypal",
        "commission_percent": 30,
        "renewal_percent": 10,
        "renewal_months": 12,
        "inactivity_termination_months": 6,
        "inactivity_notice_days": 14,
        "refund_rate_threshold_percent": 25,
        "refund_rate_min_orders": 4,
        "exchange_rates": {"EUR": "1.10"},
    }
    values.update(changes)
    return AffiliatesSection(**values)


@pytest.mark.parametrize(
    ("changes", "kind", "amount", "months_after_first", "expected"),
    [
        ({}, OrderKind.first, 4999, None, 1499),  # 30 %, rounded down
        ({}, OrderKind.renewal, 4999, 3, 499),  # renewals 10 %
        ({}, OrderKind.renewal, 4999, 12, 0),  # past the renewal months
        ({"renewal_months": None}, OrderKind.renewal, 4999, 60, 499),  # renewals for ever
        ({"renewal_percent": None, "renewal_months": None}, OrderKind.renewal, 4999, 1, 0),
        ({"commission_percent": None}, OrderKind.first, 4999, None, 0),
        ({}, OrderKind.first, 0, None, 0),  # a free order earns nothing
    ],
)
def test_what_an_order_earns(
    changes: dict[str, Any],
    kind: OrderKind,
    amount: int,
    months_after_first: int | None,
    expected: int,
) -> None:
    first = None if months_after_first is None else NOW - timedelta(days=31 * months_after_first)
    if months_after_first is not None and months_after_first >= 12:
        first = NOW.replace(year=NOW.year - months_after_first // 12)
    got = commission_minor(section(**changes), kind, amount, paid_at=NOW, first_paid_at=first)
    assert got == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [(1000, "USD", 1000), (1000, "EUR", 1100), (999, "EUR", 1098), (1000, "GBP", None)],
)
def test_conversion_to_the_payout_currency(
    amount: int, currency: str, expected: int | None
) -> None:
    assert to_payout_currency(section(), amount, currency) == expected


@pytest.mark.parametrize(
    ("status", "event", "expected"),
    [
        (S.pending, E.released, S.payable),
        (S.pending, E.refunded, S.cancelled),
        (S.pending, E.ended, S.cancelled),
        (S.held, E.cleared, S.pending),
        (S.held, E.rejected, S.cancelled),
        (S.held, E.refunded, S.cancelled),
        (S.payable, E.paid_out, S.paid),
        (S.payable, E.refunded, S.cancelled),
        (S.paid, E.returned, S.payable),
        (S.paid, E.refunded, None),  # a paid one is clawed back, never un-paid
        (S.pending, E.paid_out, None),  # never paid inside the holding period
        (S.held, E.paid_out, None),  # never paid while under review
        (S.held, E.released, None),
        (S.cancelled, E.released, None),
        (S.cancelled, E.cleared, None),
    ],
)
def test_commission_states(
    status: CommissionStatus, event: CommissionEvent, expected: CommissionStatus | None
) -> None:
    if expected is None:
        with pytest.raises(IllegalTransition):
            next_status(status, event)
    else:
        assert next_status(status, event) == expected


@pytest.mark.parametrize(
    ("status", "policy", "expected"),
    [
        (S.pending, "pay", S.cancelled),
        (S.held, "pay", S.cancelled),
        (S.payable, "pay", S.payable),
        (S.payable, "hold", S.held),
        (S.paid, "hold", S.paid),
    ],
)
def test_what_termination_does_to_a_commission(
    status: CommissionStatus, policy: str, expected: CommissionStatus
) -> None:
    assert on_termination(status, policy) == expected


@pytest.mark.parametrize(
    ("status", "earned", "reversed_", "order", "refunded", "expected"),
    [
        (S.pending, 1500, 0, 5000, 5000, Reversal(1500, 0, True)),  # full refund, not paid
        (S.payable, 1500, 0, 5000, 2500, Reversal(750, 0, False)),  # half refunded
        (S.payable, 1500, 750, 5000, 5000, Reversal(750, 0, True)),  # the rest later
        (S.paid, 1500, 0, 5000, 5000, Reversal(0, 1500, False)),  # after payout: clawback
        (S.paid, 1500, 0, 5000, 1, Reversal(0, 1, False)),  # rounded up: never kept too much
        (S.paid, 1500, 1500, 5000, 5000, Reversal(0, 0, False)),  # told twice: nothing more
        (S.cancelled, 1500, 0, 5000, 5000, Reversal(0, 0, True)),
        (S.held, 1500, 0, 5000, 9999, Reversal(1500, 0, True)),  # more than paid: capped
    ],
)
def test_what_a_refund_takes_back(
    status: CommissionStatus,
    earned: int,
    reversed_: int,
    order: int,
    refunded: int,
    expected: Reversal,
) -> None:
    got = reversal(
        status=status,
        earned_minor=earned,
        already_reversed_minor=reversed_,
        order_minor=order,
        refunded_total_minor=refunded,
    )
    assert got == expected


def _orders(*days_refunded: tuple[int, bool]) -> list[ReferredOrder]:
    return [ReferredOrder(NOW - timedelta(days=d), r) for d, r in days_refunded]


@pytest.mark.parametrize(
    ("orders", "window", "expected_rate", "too_high"),
    [
        # 2 of 4 in the window refunded: 50 % > 25 %
        (_orders((1, True), (2, True), (3, False), (4, False)), 90, RefundRate(4, 2), True),
        # exactly at the threshold is not above it
        (_orders((1, True), (2, False), (3, False), (4, False)), 90, RefundRate(4, 1), False),
        # too few orders in the window to judge
        (_orders((1, True), (2, True), (3, False)), 90, RefundRate(3, 2), False),
        # old refunds fall out of the rolling window
        (
            _orders((100, True), (120, True), (1, False), (2, False), (3, False), (4, False)),
            90,
            RefundRate(4, 0),
            False,
        ),
        (_orders(), 90, RefundRate(0, 0), False),
    ],
)
def test_refund_rate_over_the_rolling_window(
    orders: list[ReferredOrder], window: int, expected_rate: RefundRate, too_high: bool
) -> None:
    rate = refund_rate(orders, NOW, window)
    assert rate == expected_rate
    assert refund_rate_too_high(section(), rate) is too_high


def test_refund_rate_percent_and_no_threshold() -> None:
    assert RefundRate(3, 1).percent == Decimal("33.3")
    assert RefundRate(0, 0).percent == Decimal(0)
    assert not refund_rate_too_high(section(refund_rate_threshold_percent=None), RefundRate(9, 9))


@pytest.mark.parametrize(
    ("last_active_days_ago", "notice_days_ago", "months", "expected"),
    [
        (30, None, 6, Inactivity.active),
        (170, None, 6, Inactivity.notify),  # 14 days before six months
        (170, 1, 6, Inactivity.wait),
        (200, None, 6, Inactivity.notify),  # never ended without its notice
        (200, 5, 6, Inactivity.wait),  # noticed late: the notice period runs first
        (200, 20, 6, Inactivity.end),
        (200, 300, 6, Inactivity.notify),  # an old notice from before the last activity
        (2000, None, None, Inactivity.active),  # the policy ends no one for inactivity
    ],
)
def test_inactivity(
    last_active_days_ago: int,
    notice_days_ago: int | None,
    months: int | None,
    expected: Inactivity,
) -> None:
    got = inactivity(
        section(inactivity_termination_months=months),
        last_active_at=NOW - timedelta(days=last_active_days_ago),
        notice_at=None if notice_days_ago is None else NOW - timedelta(days=notice_days_ago),
        now=NOW,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("Me@Example.com", "me@example.com"),
        ("me+promo@example.com", "me@example.com"),
        (" me@example.com ", "me@example.com"),
        ("+x@example.com", "+x@example.com"),
    ],
)
def test_one_mailbox_whatever_its_spelling(email: str, expected: str) -> None:
    assert mailbox(email) == expected
