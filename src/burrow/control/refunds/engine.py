"""The refund decision engine: the policy's [refunds] rules applied to one request's facts.

``evaluate`` is pure: no database, no clock, no I/O. The service gathers the facts (order age,
payment method, usage counters, earlier refunds of the same person) and stores what comes
back, rule by rule with its evidence, so that every decision can be explained later.

Imports the policy schema only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from burrow.control.policy.schemas import RefundsSection

_METHOD_NAMES = {
    "card": "a card",
    "paypal": "PayPal",
    "crypto": "cryptocurrency",
    "paymentwall": "PaymentWall",
    "app_store": "the App Store",
    "google_play": "Google Play",
    "manual": "a manual payment",
}


class Verdict(StrEnum):
    approved = "approved"
    refused = "refused"
    queued = "queued"


@dataclass(frozen=True)
class RefundFacts:
    """What the service found out about one request; the engine only reads it."""

    ordered_at: datetime
    requested_at: datetime
    order_amount_minor: int
    currency: str
    order_period_months: int
    # The order's paid period, from ``ordered_at`` (for a pro-rata proposal).
    order_period_end: datetime
    is_first_order: bool
    is_renewal: bool
    payment_method: str
    reason: str = ""
    terminated_for_violation: bool = False
    unsupported_device_finding: bool = False
    # None: the policy keeps no usage counters.
    usage_bytes: int | None = None
    usage_sessions: int | None = None
    refund_for_same_email: bool = False
    refund_for_same_fingerprint: bool = False


# Each rule's name as a person reads it, on the customer's and the operator's pages alike.
RULE_WORDS = {
    "window_days": "Asked within the refund window",
    "excluded_payment_methods": "Paid by a method that can be refunded",
    "first_order_only": "A first order",
    "not_for_renewals": "Not a renewal",
    "max_data_bytes": "Data used within the limit",
    "max_sessions": "Connections within the limit",
    "terminated_for_violation_excludes": "Account not terminated for breaking the terms",
    "unsupported_device_excludes": "No unsupported device, system or site",
    "one_per_person": "One refund per person",
    "reason_required": "A reason was given",
    "money_back_guarantee": "Money-back guarantee",
    "condition": "The provider's own condition",
}


def rule_words(rule: str) -> str:
    """``window_days`` -> "Asked within the refund window"; an unknown name in plain words."""
    return RULE_WORDS.get(rule) or rule.replace("_", " ").capitalize()


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    passed: bool
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    # Passed the checks software can make, but a person must judge it.
    needs_judgement: bool = False


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    outcomes: tuple[RuleOutcome, ...]
    # Approved: the full amount; queued: the amount proposed to the administrator.
    amount_minor: int | None
    summary: str

    @property
    def failed(self) -> tuple[RuleOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if not outcome.passed)


def day_of_request(ordered_at: datetime, requested_at: datetime) -> int:
    """The day after the order on which the request came: exactly 7 days later is day 7,
    a second more is day 8."""
    elapsed = (requested_at - ordered_at) / timedelta(days=1)
    return max(0, math.ceil(elapsed))


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _gb(count: int) -> str:
    return f"{count / 1_000_000_000:.2f} GB"


def pro_rata(facts: RefundFacts) -> int:
    """The unused share of the order's period, in minor units, rounded down."""
    period = (facts.order_period_end - facts.ordered_at).total_seconds()
    if period <= 0:
        return 0
    left = max(0.0, (facts.order_period_end - facts.requested_at).total_seconds())
    # Integer arithmetic on whole seconds keeps the amount exact.
    return facts.order_amount_minor * int(left) // int(period)


def usage_charge(facts: RefundFacts, price_minor_per_gb: int) -> int:
    """What the data used costs at ``price_minor_per_gb``, in minor units, rounded up (a
    started cent is charged, as the terms charge for usage)."""
    used = facts.usage_bytes or 0
    return -(-used * price_minor_per_gb // 1_000_000_000)


def _window(policy: RefundsSection, facts: RefundFacts) -> RuleOutcome:
    day = day_of_request(facts.ordered_at, facts.requested_at)
    window = policy.window_days
    return RuleOutcome(
        "window_days",
        day <= window,
        f"Requested {_plural(day, 'day')} after the order; refunds are possible within "
        f"{_plural(window, 'day')}.",
        {
            "ordered_at": facts.ordered_at.isoformat(),
            "requested_at": facts.requested_at.isoformat(),
            "day": day,
            "window_days": window,
        },
    )


def _method(policy: RefundsSection, facts: RefundFacts) -> RuleOutcome:
    method = facts.payment_method
    excluded = method in policy.excluded_payment_methods
    name = _METHOD_NAMES.get(method, method)
    message = (
        f"The order was paid with {name}, which cannot be refunded."
        if excluded
        else f"The order was paid with {name}, which can be refunded."
    )
    return RuleOutcome(
        "excluded_payment_methods",
        not excluded,
        message,
        {"payment_method": method, "excluded": list(policy.excluded_payment_methods)},
    )


def _first_order(facts: RefundFacts) -> RuleOutcome:
    message = (
        "This is the first order of the account."
        if facts.is_first_order
        else "Only the first order of an account can be refunded, and this is a later one."
    )
    return RuleOutcome(
        "first_order_only", facts.is_first_order, message, {"is_first_order": facts.is_first_order}
    )


def _renewal(facts: RefundFacts) -> RuleOutcome:
    message = (
        "Renewals cannot be refunded, and this order renewed a subscription."
        if facts.is_renewal
        else "This order is not a renewal."
    )
    return RuleOutcome(
        "not_for_renewals", not facts.is_renewal, message, {"is_renewal": facts.is_renewal}
    )


def _counted(
    rule: str, used: int | None, limit: int, unit: str, shown: str, what: str
) -> RuleOutcome:
    if used is None:
        return RuleOutcome(
            rule,
            False,
            f"The {what} could not be checked because no usage counts are kept for this order; "
            "a person decides.",
            {"limit": limit, unit: None},
            needs_judgement=True,
        )
    return RuleOutcome(
        rule,
        used < limit,
        f"The order used {shown}; refunds are possible below {what}.",
        {unit: used, "limit": limit},
    )


def _violation(facts: RefundFacts) -> RuleOutcome:
    message = (
        "The account was terminated for breaking the terms, which excludes a refund."
        if facts.terminated_for_violation
        else "The account was not terminated for breaking the terms."
    )
    return RuleOutcome(
        "terminated_for_violation_excludes",
        not facts.terminated_for_violation,
        message,
        {"terminated": facts.terminated_for_violation},
    )


def _device(facts: RefundFacts) -> RuleOutcome:
    message = (
        "Support found that an unsupported device, system or site was used, which excludes "
        "a refund."
        if facts.unsupported_device_finding
        else "No finding of an unsupported device, system or site."
    )
    return RuleOutcome(
        "unsupported_device_excludes",
        not facts.unsupported_device_finding,
        message,
        {"unsupported_device_finding": facts.unsupported_device_finding},
    )


def _one_per_person(facts: RefundFacts) -> RuleOutcome:
    seen = facts.refund_for_same_email or facts.refund_for_same_fingerprint
    if facts.refund_for_same_email:
        message = "A refund was already granted to another account with the same email address."
    elif facts.refund_for_same_fingerprint:
        message = "A refund was already granted to another account paid with the same card."
    else:
        message = "No refund was granted to another account of yours."
    return RuleOutcome(
        "one_per_person",
        not seen,
        message,
        {
            "same_email": facts.refund_for_same_email,
            "same_payment_fingerprint": facts.refund_for_same_fingerprint,
        },
    )


def _reason(facts: RefundFacts) -> RuleOutcome:
    given = bool(facts.reason.strip())
    message = "A reason was given." if given else "A refund request needs a reason; none was given."
    return RuleOutcome("reason_required", given, message, {"reason_given": given})


def evaluate(policy: RefundsSection | None, facts: RefundFacts) -> Decision:
    """Apply every rule of ``policy`` to ``facts``.

    Any failed rule refuses, naming it, unless the only failure is the data limit and the
    policy offers a partial refund past it for this order's length: then a person decides,
    with a pro-rata amount proposed. A rule that needs judgement, or a policy without
    auto-approval, queues the request; otherwise it is approved in full.
    """
    if policy is None:
        outcome = RuleOutcome(
            "money_back_guarantee", False, "This provider offers no money-back guarantee."
        )
        return Decision(Verdict.refused, (outcome,), None, outcome.message)

    outcomes = [_window(policy, facts), _method(policy, facts)]
    if policy.first_order_only:
        outcomes.append(_first_order(facts))
    if policy.not_for_renewals:
        outcomes.append(_renewal(facts))
    data_limit: RuleOutcome | None = None
    if policy.max_data_bytes is not None:
        used = facts.usage_bytes
        data_limit = _counted(
            "max_data_bytes",
            used,
            policy.max_data_bytes,
            "bytes",
            _gb(used or 0),
            _gb(policy.max_data_bytes),
        )
        outcomes.append(data_limit)
    if policy.max_sessions is not None:
        sessions = facts.usage_sessions
        outcomes.append(
            _counted(
                "max_sessions",
                sessions,
                policy.max_sessions,
                "sessions",
                _plural(sessions or 0, "session"),
                _plural(policy.max_sessions, "session"),
            )
        )
    if policy.one_per_person:
        outcomes.append(_one_per_person(facts))
    if policy.unsupported_device_excludes:
        outcomes.append(_device(facts))
    if policy.terminated_for_violation_excludes:
        outcomes.append(_violation(facts))
    if policy.reason_required:
        outcomes.append(_reason(facts))
    if policy.condition is not None:
        outcomes.append(
            RuleOutcome(
                "condition",
                True,
                f"A person checks that {policy.condition}.",
                {"condition": policy.condition},
                needs_judgement=True,
            )
        )

    partial = policy.partial_past_data_limit
    hard = [o for o in outcomes if not o.passed and not o.needs_judgement]
    amount = facts.order_amount_minor
    if (
        partial is not None
        and data_limit is not None
        and data_limit in hard
        and facts.order_period_months > partial.order_longer_than_months
    ):
        # Past the data limit on a long order: a partial refund at the operator's discretion.
        hard.remove(data_limit)
        index = outcomes.index(data_limit)
        months = _plural(partial.order_longer_than_months, "month")
        evidence: dict[str, Any] = dict(data_limit.evidence)
        if partial.usage_charged and partial.data_price_minor_per_gb is not None:
            # "You will be charged for your usage": the amount paid minus the data used.
            charge = usage_charge(facts, partial.data_price_minor_per_gb)
            proposed = max(0, facts.order_amount_minor - charge)
            evidence |= {
                "data_price_minor_per_gb": partial.data_price_minor_per_gb,
                "usage_charge_minor": charge,
            }
            how = f"the amount paid minus {_gb(facts.usage_bytes or 0)} of data used"
        else:
            proposed = pro_rata(facts)
            how = "the unused time"
        outcomes[index] = RuleOutcome(
            data_limit.rule,
            False,
            f"{data_limit.message} Because the order is longer than {months}, a partial "
            f"refund of {how} is possible at our discretion.",
            {**evidence, "partial_proposed_minor": proposed},
            needs_judgement=True,
        )
        amount = proposed
    result = tuple(outcomes)
    if hard:
        names = ", ".join(o.rule for o in hard)
        reasons = " ".join(o.message for o in hard)
        return Decision(Verdict.refused, result, None, f"Refused ({names}): {reasons}")
    judged = [o for o in outcomes if o.needs_judgement]
    if judged or not policy.auto_approve:
        return Decision(
            Verdict.queued,
            result,
            amount,
            "Your request meets the rules software can check; a person decides on it.",
        )
    return Decision(Verdict.approved, result, amount, "Approved: every refund rule is met.")
