"""The refund decision engine, table-tested at every boundary of both example policies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from burrow.control.policy.schemas import RefundsSection
from burrow.control.policy.service import load_policy
from burrow.control.refunds.engine import RefundFacts, Verdict, day_of_request, evaluate, pro_rata
from burrow.control.subscriptions.service import add_months
from tests.conftest import ROOT

POLICIES = ROOT / "examples" / "policies"
ORDERED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _refunds(name: str) -> RefundsSection:
    refunds = load_policy(POLICIES / name).refunds
    assert refunds is not None
    return refunds


STRICT = _refunds("strict-no-logs.toml")
METERED = _refunds("metered.toml")


def _facts(*, days: float = 1, months: int = 1, **changes: object) -> RefundFacts:
    facts = RefundFacts(
        ordered_at=ORDERED,
        requested_at=ORDERED + timedelta(days=days),
        order_amount_minor=1199,
        currency="USD",
        order_period_months=months,
        order_period_end=add_months(ORDERED, months),
        is_first_order=True,
        is_renewal=False,
        payment_method="card",
        reason="It does not work for me.",
        usage_bytes=0,
        usage_sessions=0,
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def _failed(policy: RefundsSection, facts: RefundFacts) -> list[str]:
    return [o.rule for o in evaluate(policy, facts).failed if not o.needs_judgement]


def test_the_metered_file_says_what_the_tests_assume() -> None:
    assert METERED.window_days == 7
    assert METERED.max_data_bytes == 1_000_000_000
    assert METERED.max_sessions == 30
    assert METERED.auto_approve is True
    assert STRICT.window_days == 30
    assert STRICT.condition is not None
    assert STRICT.auto_approve is False


@pytest.mark.parametrize(
    ("days", "verdict", "failed"),
    [
        (1, Verdict.approved, []),
        (7, Verdict.approved, []),
        (7 + 1 / 86400, Verdict.refused, ["window_days"]),
        (8, Verdict.refused, ["window_days"]),
    ],
)
def test_metered_window(days: float, verdict: Verdict, failed: list[str]) -> None:
    decision = evaluate(METERED, _facts(days=days))
    assert decision.verdict == verdict
    assert _failed(METERED, _facts(days=days)) == failed


def test_window_message_is_plain() -> None:
    decision = evaluate(METERED, _facts(days=8))
    window = next(o for o in decision.outcomes if o.rule == "window_days")
    assert window.message == (
        "Requested 8 days after the order; refunds are possible within 7 days."
    )
    assert window.evidence["day"] == 8
    assert "window_days" in decision.summary


@pytest.mark.parametrize(
    ("days", "verdict"),
    [(30, Verdict.queued), (31, Verdict.refused), (30 + 1 / 86400, Verdict.refused)],
)
def test_strict_window(days: float, verdict: Verdict) -> None:
    assert evaluate(STRICT, _facts(days=days, usage_bytes=None)).verdict == verdict


def test_strict_queues_for_its_condition_with_the_full_amount() -> None:
    decision = evaluate(STRICT, _facts(usage_bytes=None, usage_sessions=None))
    assert decision.verdict == Verdict.queued
    assert decision.amount_minor == 1199
    condition = next(o for o in decision.outcomes if o.rule == "condition")
    assert condition.needs_judgement
    assert "does not function as advertised" in condition.message
    # Strict keeps no counts: no usage rule is even evaluated.
    assert {o.rule for o in decision.outcomes}.isdisjoint({"max_data_bytes", "max_sessions"})


@pytest.mark.parametrize(
    ("used", "verdict"),
    [(999_999_999, Verdict.approved), (1_000_000_000, Verdict.refused)],
)
def test_metered_data_limit_one_month_order(used: int, verdict: Verdict) -> None:
    decision = evaluate(METERED, _facts(usage_bytes=used))
    assert decision.verdict == verdict
    if verdict == Verdict.refused:
        assert _failed(METERED, _facts(usage_bytes=used)) == ["max_data_bytes"]


@pytest.mark.parametrize(("sessions", "verdict"), [(29, Verdict.approved), (30, Verdict.refused)])
def test_metered_session_limit(sessions: int, verdict: Verdict) -> None:
    assert evaluate(METERED, _facts(usage_sessions=sessions)).verdict == verdict


@pytest.mark.parametrize("method", ["app_store", "google_play", "paymentwall", "crypto"])
def test_metered_excluded_methods(method: str) -> None:
    facts = _facts(payment_method=method)
    assert evaluate(METERED, facts).verdict == Verdict.refused
    assert _failed(METERED, facts) == ["excluded_payment_methods"]


@pytest.mark.parametrize("method", ["card", "manual"])
def test_metered_allowed_methods(method: str) -> None:
    assert evaluate(METERED, _facts(payment_method=method)).verdict == Verdict.approved


def test_strict_excludes_crypto_only() -> None:
    crypto = _facts(payment_method="crypto", usage_bytes=None)
    assert evaluate(STRICT, crypto).verdict == Verdict.refused
    assert _failed(STRICT, crypto) == ["excluded_payment_methods"]
    message = evaluate(STRICT, crypto).failed[0].message
    assert message == "The order was paid with cryptocurrency, which cannot be refunded."
    for method in ("card", "paypal"):
        assert evaluate(STRICT, _facts(payment_method=method)).verdict == Verdict.queued


def test_metered_renewal_refused() -> None:
    facts = _facts(is_first_order=False, is_renewal=True)
    assert evaluate(METERED, facts).verdict == Verdict.refused
    assert _failed(METERED, facts) == ["first_order_only", "not_for_renewals"]
    # The strict seed has no such rule: a renewal waits for a person.
    assert evaluate(STRICT, facts).verdict == Verdict.queued


@pytest.mark.parametrize(
    "changes",
    [{"refund_for_same_email": True}, {"refund_for_same_fingerprint": True}],
)
def test_metered_second_account_of_the_same_person(changes: dict[str, bool]) -> None:
    facts = _facts(**changes)
    assert evaluate(METERED, facts).verdict == Verdict.refused
    assert _failed(METERED, facts) == ["one_per_person"]


def test_terminated_account_refused_by_both() -> None:
    facts = _facts(terminated_for_violation=True)
    for policy in (STRICT, METERED):
        assert evaluate(policy, facts).verdict == Verdict.refused
        assert _failed(policy, facts) == ["terminated_for_violation_excludes"]


def test_unsupported_device_finding_refuses_under_strict_only() -> None:
    facts = _facts(unsupported_device_finding=True)
    assert evaluate(STRICT, facts).verdict == Verdict.refused
    assert _failed(STRICT, facts) == ["unsupported_device_excludes"]
    assert evaluate(METERED, facts).verdict == Verdict.approved


def test_metered_reason_required() -> None:
    facts = _facts(reason="  ")
    assert _failed(METERED, facts) == ["reason_required"]
    assert evaluate(STRICT, facts).verdict == Verdict.queued


def test_partial_refund_past_data_limit_on_a_yearly_order() -> None:
    facts = _facts(days=3, months=12, usage_bytes=5_000_000_000, order_amount_minor=7199)
    decision = evaluate(METERED, facts)
    assert decision.verdict == Verdict.queued
    data = next(o for o in decision.outcomes if o.rule == "max_data_bytes")
    assert not data.passed
    assert data.needs_judgement
    # "You will be charged for your usage": 5 GB at the policy's 1.00 per GB.
    assert data.evidence["data_price_minor_per_gb"] == 100
    assert data.evidence["usage_charge_minor"] == 500
    assert decision.amount_minor == 7199 - 500 == data.evidence["partial_proposed_minor"]
    assert decision.amount_minor != pro_rata(facts)


def test_the_usage_charge_rounds_a_started_cent_up_and_never_goes_below_zero() -> None:
    some = _facts(days=3, months=12, usage_bytes=1_234_567_891, order_amount_minor=7199)
    data = next(o for o in evaluate(METERED, some).outcomes if o.rule == "max_data_bytes")
    assert data.evidence["usage_charge_minor"] == 124
    assert data.evidence["partial_proposed_minor"] == 7199 - 124
    huge = _facts(days=3, months=12, usage_bytes=900_000_000_000, order_amount_minor=7199)
    assert evaluate(METERED, huge).amount_minor == 0


def test_partial_needs_an_order_longer_than_a_month() -> None:
    facts = _facts(months=1, usage_bytes=1_000_000_000)
    assert evaluate(METERED, facts).verdict == Verdict.refused


def test_partial_is_still_refused_when_another_rule_fails() -> None:
    facts = _facts(days=8, months=12, usage_bytes=5_000_000_000)
    assert evaluate(METERED, facts).verdict == Verdict.refused
    assert _failed(METERED, facts) == ["window_days"]


def test_no_refunds_section_refuses() -> None:
    decision = evaluate(None, _facts())
    assert decision.verdict == Verdict.refused
    assert "no money-back guarantee" in decision.summary


def test_day_of_request() -> None:
    assert day_of_request(ORDERED, ORDERED) == 0
    assert day_of_request(ORDERED, ORDERED + timedelta(seconds=1)) == 1
    assert day_of_request(ORDERED, ORDERED + timedelta(days=7)) == 7
    assert day_of_request(ORDERED, ORDERED + timedelta(days=7, seconds=1)) == 8
