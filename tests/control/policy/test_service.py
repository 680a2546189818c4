"""Policy validation: a table of valid and broken files, each broken one with its exact messages.

Every broken file starts from a small valid one and changes a few lines, so each case shows
exactly which rule it breaks.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from burrow.control.policy.schemas import Policy, PolicyProblem
from burrow.control.policy.service import (
    PolicyInvalid,
    check_file,
    check_text,
    format_problems,
    load_policy,
    summary,
)
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples" / "policies"

BASE = """
[provider]
name = "Test VPN"
contact_email = "ops@example.com"

[privacy]
mode = "strict"

[plans.basic]
name = "Basic"
price_minor = 500
currency = "EUR"
period_months = 1
device_limit = 3
simultaneous_connections = 2
connections_per_server = { wireguard = 1 }

[trial]
days = 3
plan = "basic"

[terms]
version = "v1"
effective_date = 2026-01-01
"""

METERED = BASE.replace('mode = "strict"', 'mode = "metered"\nconnection_record_retention_days = 30')


def edit(text: str, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    return text


VALID: dict[str, str] = {
    "minimal strict": BASE,
    "minimal metered": METERED,
    "no trial, unlimited plan": edit(
        BASE,
        ("device_limit = 3\nsimultaneous_connections = 2\n", ""),
        ('[trial]\ndays = 3\nplan = "basic"\n', ""),
    ),
    "metered with usage-limited refunds": METERED.replace(
        "connection_record_retention_days = 30",
        "connection_record_retention_days = 30\nfirst_order_usage_counters = true",
    )
    + """
[refunds]
window_days = 7
first_order_only = true
max_data_bytes = 1_000_000_000
max_sessions = 30
excluded_payment_methods = ["crypto", "app_store"]
[refunds.partial_past_data_limit]
order_longer_than_months = 1
data_price_minor_per_gb = 150
""",
    "strict with a last-login IP kept": edit(
        BASE,
        (
            'mode = "strict"',
            'mode = "strict"\nstore_last_login_ip = true\nlast_login_ip_retention_days = 30',
        ),
    ),
    "every section": BASE
    + """
[network]
blocked_egress_tcp_ports = [25, 465]
blocked_egress_udp_ports = [137]
[refunds]
window_days = 30
condition = "the service does not work as advertised"
excluded_payment_methods = ["crypto"]
unsupported_device_excludes = true
terminated_for_violation_excludes = true
service_level_hours = 48
[payment_methods]
offered = ["card", "paypal", "crypto"]
recurring = ["card"]
[fair_use]
shaping = true
shaped_rate_mbit = 10
[affiliates]
payout_minimum_minor = 10000
currency = "USD"
payout_method = "paypal"
inactivity_termination_months = 6
refund_rate_threshold_percent = 20
[age]
attestation_required = true
minimum_age = 18
[[terms.sections]]
title = "General"
body = "Be nice."
""",
}

_AFFILIATES = """
[refunds]
window_days = 30
[affiliates]
payout_minimum_minor = 10000
currency = "USD"
payout_method = "paypal"
commission_percent = 30
"""

BROKEN: dict[str, tuple[str, list[str]]] = {
    "affiliate commissions paid inside the refund window": (
        BASE + _AFFILIATES + "holding_days = 14\n",
        [
            "affiliates.holding_days (14) is shorter than refunds.window_days (30): a "
            "commission would be paid out on an order that can still be refunded"
        ],
    ),
    "an affiliate exchange rate that is no number, renewal months without a rate": (
        BASE + _AFFILIATES + 'renewal_months = 12\nexchange_rates = { EUR = "lots" }\n',
        [
            'affiliates.exchange_rates.EUR must be a positive decimal such as "1.08"',
            "affiliates.renewal_months is set, but affiliates.renewal_percent is not: renewals "
            "earn nothing",
        ],
    ),
    "deterministic NAT under strict mode": (
        BASE + '[network]\nnat = "deterministic"\n',
        [
            'network.nat = "deterministic" ties every port to one device, which '
            "(with the history of tunnel addresses it needs) traces traffic to an account, but "
            'privacy.mode = "strict" promises that nothing can'
        ],
    ),
    "deterministic NAT without a history retention": (
        METERED + '[network]\nnat = "deterministic"\n',
        [
            "privacy.address_history_retention_days "
            'is missing, but network.nat = "deterministic" keeps the history of which device '
            "held which tunnel address and must say for how many days"
        ],
    ),
    "a history retention with random NAT": (
        edit(
            METERED,
            ("retention_days = 30", "retention_days = 30\naddress_history_retention_days = 9"),
        ),
        [
            "privacy.address_history_retention_days "
            'is set, but network.nat = "random" keeps no history of tunnel addresses'
        ],
    ),
    "port blocks past the last port": (
        edit(
            METERED,
            ("retention_days = 30", "retention_days = 30\naddress_history_retention_days = 9"),
        )
        + '[network]\nnat = "deterministic"\nnat_ports_per_device = 2000\n'
        "nat_devices_per_egress_ip = 33\n",
        [
            "network.nat_devices_per_egress_ip (33) blocks of "
            "network.nat_ports_per_device (2000) ports need 66000 ports, but an egress address "
            "has 64512 from port 1024 on"
        ],
    ),
    "strict mode with a connection-record retention": (
        edit(BASE, ('mode = "strict"', 'mode = "strict"\nconnection_record_retention_days = 30')),
        [
            'privacy.connection_record_retention_days is set, but privacy.mode = "strict" '
            "keeps no connection records"
        ],
    ),
    "metered mode without a retention": (
        edit(BASE, ('mode = "strict"', 'mode = "metered"')),
        [
            "privacy.connection_record_retention_days is missing, but privacy.mode = "
            '"metered" keeps connection records and must say for how many days'
        ],
    ),
    "a refund data limit under strict mode": (
        BASE + "[refunds]\nwindow_days = 7\nmax_data_bytes = 1000000000\n",
        [
            'refunds.max_data_bytes needs per-customer byte counts, but privacy.mode = "strict" '
            "forbids storing them"
        ],
    ),
    "a refund session limit under strict mode": (
        BASE + "[refunds]\nwindow_days = 7\nmax_sessions = 30\n",
        [
            "refunds.max_sessions needs per-customer session counts, but privacy.mode = "
            '"strict" forbids storing them'
        ],
    ),
    "a refund data limit in metered mode without usage counters": (
        METERED + "[refunds]\nwindow_days = 7\nfirst_order_only = true\nmax_data_bytes = 5\n",
        [
            "refunds.max_data_bytes needs per-customer byte counts, but "
            "privacy.first_order_usage_counters = false does not keep them"
        ],
    ),
    "usage counters in strict mode": (
        edit(BASE, ('mode = "strict"', 'mode = "strict"\nfirst_order_usage_counters = true')),
        [
            "privacy.first_order_usage_counters = true keeps per-customer byte and session "
            'counts, but privacy.mode = "strict" forbids storing them'
        ],
    ),
    "device limit below simultaneous connections": (
        edit(BASE, ("device_limit = 3", "device_limit = 1")),
        ["plans.basic.device_limit (1) is below plans.basic.simultaneous_connections (2)"],
    ),
    "a trial plan that is not a plan": (
        edit(BASE, ('plan = "basic"', 'plan = "premium"')),
        ["trial.plan names 'premium', which is not in [plans] (the plans are: basic)"],
    ),
    "an excluded refund method that is not a class": (
        BASE + '[refunds]\nwindow_days = 30\nexcluded_payment_methods = ["crypto", "bitcoin"]\n',
        [
            "refunds.excluded_payment_methods.1: 'bitcoin' is not a payment method class; the "
            "classes are: card, paypal, crypto, paymentwall, app_store, google_play, manual"
        ],
    ),
    "a last-login IP without a retention": (
        edit(BASE, ('mode = "strict"', 'mode = "strict"\nstore_last_login_ip = true')),
        [
            "privacy.last_login_ip_retention_days is missing, but privacy.store_last_login_ip "
            "= true must say for how many days the address is kept"
        ],
    ),
    "client IPs in logs under strict mode": (
        edit(BASE, ('mode = "strict"', 'mode = "strict"\nclient_ips_in_logs = true')),
        [
            'privacy.client_ips_in_logs = true, but privacy.mode = "strict" forbids client IP '
            "addresses in logs"
        ],
    ),
    "a partial refund without a data limit": (
        BASE + "[refunds]\nwindow_days = 7\n[refunds.partial_past_data_limit]\n",
        [
            "refunds.partial_past_data_limit is set, but refunds.max_data_bytes is not: there "
            "is no data limit to be past",
            "refunds.partial_past_data_limit.data_price_minor_per_gb is missing, but "
            "refunds.partial_past_data_limit.usage_charged is on: name the price of the data "
            "used, which the partial refund subtracts",
        ],
    ),
    "auto-approval of a condition a person must judge": (
        BASE + '[refunds]\nwindow_days = 7\ncondition = "it did not work"\nauto_approve = true\n',
        [
            "refunds.auto_approve = true approves requests without a person, but "
            "refunds.condition needs a person to judge it"
        ],
    ),
    "a recurring method that is not offered": (
        BASE + '[payment_methods]\noffered = ["card"]\nrecurring = ["card", "paypal"]\n',
        ["payment_methods.recurring lists 'paypal', but payment_methods.offered does not offer it"],
    ),
    "shaping without a rate": (
        BASE + "[fair_use]\nshaping = true\n",
        [
            "fair_use.shaped_rate_mbit is missing, but fair_use.shaping = true needs a rate to "
            "shape to"
        ],
    ),
    "a monthly data cap under strict mode": (
        BASE + "[fair_use]\nmonthly_data_cap_bytes = 100000000000\n",
        [
            "fair_use.monthly_data_cap_bytes needs per-customer byte counts over a month, but "
            'privacy.mode = "strict" forbids storing them'
        ],
    ),
    "a monthly data cap, which nothing enforces yet": (
        edit(BASE, ('mode = "strict"', 'mode = "metered"\nconnection_record_retention_days = 30'))
        + "[fair_use]\nmonthly_data_cap_bytes = 100000000000\n",
        [
            "fair_use.monthly_data_cap_bytes: burrow does not enforce a monthly data cap yet, so "
            "the terms cannot promise one; remove it and use fair_use.shaping"
        ],
    ),
    "typos and out-of-range values, all reported at once": (
        edit(
            BASE,
            ('currency = "EUR"', 'currency = "eur"'),
            ("period_months = 1", "period_months = 0"),
            ('mode = "strict"', 'mode = "paranoid"\nretention = 3'),
            (
                "connections_per_server = { wireguard = 1 }",
                "connections_per_server = { carrier_pigeon = 1 }",
            ),
        )
        + "[network]\nblocked_egress_tcp_ports = [25, 70000]\n[colour]\nred = true\n",
        [
            "privacy.mode: must be one of: 'strict' or 'metered' (found \"paranoid\")",
            "privacy.retention: is not a known setting (known: mode, "
            "connection_record_retention_days, first_order_usage_counters, store_last_login_ip, "
            "last_login_ip_retention_days, client_ips_in_logs, "
            "request_response_days, invoice_retention_years, provider_event_retention_days, "
            "address_history_retention_days)",
            'plans.basic.currency: must be a three-letter ISO 4217 code such as "USD" '
            '(found "eur")',
            "plans.basic.period_months: must be at least 1 (found 0)",
            "plans.basic.connections_per_server.carrier_pigeon: 'carrier_pigeon' is not a VPN "
            "protocol; the protocols are: wireguard, openvpn, ikev2, l2tp, pptp, sstp, softether",
            "network.blocked_egress_tcp_ports.1: must be at most 65535 (found 70000)",
            "colour: is not a known section (known: provider, privacy, plans, trial, network, "
            "refunds, payment_methods, fair_use, dns, affiliates, age, terms, support)",
        ],
    ),
    "a broken plan does not hide another plan's contradiction": (
        edit(BASE, ("device_limit = 3", "device_limit = 1"))
        + '[plans.other]\nname = "Other"\nprice_minor = -5\ncurrency = "EUR"\nperiod_months = 1\n',
        [
            "plans.other.price_minor: must be at least 0 (found -5)",
            "plans.basic.device_limit (1) is below plans.basic.simultaneous_connections (2)",
        ],
    ),
    "missing sections and a bad date": (
        '[plans.a]\nname = "A"\nprice_minor = 1\ncurrency = "USD"\nperiod_months = 1\n'
        '[terms]\nversion = "1"\neffective_date = "next week"\n',
        [
            "provider: the [provider] section is required but missing",
            "privacy: the [privacy] section is required but missing",
            "terms.effective_date: must be a date such as 2026-11-01, without a time of day "
            '(found "next week")',
        ],
    ),
    "not TOML at all": (
        "[provider\nname = 1",
        [
            "(file): not valid TOML: Expected ']' at the end of a table declaration "
            "(at line 1, column 10)"
        ],
    ),
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_valid_policies_pass(text: str) -> None:
    policy, problems = check_text(text)
    assert problems == []
    assert isinstance(policy, Policy)


@pytest.mark.parametrize(("text", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_policies_name_every_problem(text: str, expected: list[str]) -> None:
    policy, problems = check_text(text)
    assert policy is None
    assert [str(problem) for problem in problems] == expected


def test_the_model_itself_refuses_a_contradiction() -> None:
    """Code that builds a Policy without check_text still cannot get an inconsistent one."""
    raw = tomllib.loads(edit(BASE, ("device_limit = 3", "device_limit = 1")))
    with pytest.raises(ValueError, match=r"device_limit \(1\) is below"):
        Policy.model_validate(raw)


@pytest.mark.parametrize("name", ["strict-no-logs.toml", "metered.toml"])
def test_the_example_policies_are_valid(name: str) -> None:
    policy, problems = check_file(EXAMPLES / name)
    assert problems == []
    assert policy is not None


def test_the_examples_say_what_the_seeds_say() -> None:
    strict = load_policy(EXAMPLES / "strict-no-logs.toml")
    assert strict.privacy.mode == "strict"
    assert strict.privacy.connection_record_retention_days is None
    assert strict.refunds is not None
    assert strict.refunds.window_days == 30
    assert strict.refunds.excluded_payment_methods == ["crypto"]
    assert strict.refunds.max_data_bytes is None
    assert strict.plans["business-monthly"].device_limit == 1
    assert strict.plans["personal-monthly"].connections_per_server["wireguard"] == 1
    assert strict.affiliates is not None
    assert (strict.affiliates.payout_minimum_minor, strict.affiliates.currency) == (10000, "USD")
    assert strict.affiliates.inactivity_termination_months == 6

    metered = load_policy(EXAMPLES / "metered.toml")
    assert metered.privacy.mode == "metered"
    assert metered.privacy.connection_record_retention_days == 30
    assert {plan.simultaneous_connections for plan in metered.plans.values()} == {2}
    assert metered.age.attestation_required
    assert metered.age.minimum_age == 18
    refunds = metered.refunds
    assert refunds is not None
    assert refunds.window_days == 7
    assert refunds.first_order_only
    assert refunds.not_for_renewals
    assert refunds.one_per_person
    assert (refunds.max_data_bytes, refunds.max_sessions) == (1_000_000_000, 30)
    assert set(refunds.excluded_payment_methods) == {
        "app_store",
        "google_play",
        "paymentwall",
        "crypto",
    }
    assert refunds.service_level_hours == 24
    assert refunds.partial_past_data_limit is not None


def test_the_fields_other_domains_read_stay_where_they_are() -> None:
    """plans, subscriptions, accounts and the node API read these; renaming one breaks them."""
    policy = load_policy(EXAMPLES / "strict-no-logs.toml")
    plan = policy.plans["business-monthly"]
    for name in (
        "price_minor",
        "currency",
        "period_months",
        "device_limit",
        "simultaneous_connections",
        "connections_per_server",
        "kind",
        "name",
    ):
        assert hasattr(plan, name)
    assert policy.trial is not None
    assert (policy.trial.enabled, policy.trial.days, policy.trial.plan) == (
        True,
        1,
        "personal-monthly",
    )
    assert policy.network.blocked_egress_tcp_ports == [25]
    assert policy.network.blocked_egress_udp_ports == []
    assert policy.network.isolate_clients is True
    assert policy.age.attestation_required is False
    assert policy.age.allow_guardian_consent
    assert policy.age.allow_emancipated_minor
    assert policy.age.minimum_age == 18
    assert (policy.terms.version, str(policy.terms.effective_date)) == ("2026-11", "2026-11-01")
    assert policy.provider.contact_email == "support@example.com"


def test_load_policy_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(BROKEN["typos and out-of-range values, all reported at once"][0])
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    assert len(caught.value.problems) == 7
    assert "privacy.mode" in caught.value.message


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    policy, problems = check_file(tmp_path / "missing.toml")
    assert policy is None
    assert [str(p) for p in problems] == ["(file): cannot read: No such file or directory"]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert [str(p) for p in check_file(binary)[1]] == ["(file): cannot read: not UTF-8 text"]


def test_format_problems_is_one_line_per_problem() -> None:
    problems = [
        PolicyProblem("plans.a.currency", "must be a three-letter ISO 4217 code"),
        PolicyProblem("trial.plan", "trial.plan names 'x', which is not in [plans]"),
    ]
    assert format_problems("p.toml", problems) == [
        "p.toml: plans.a.currency: must be a three-letter ISO 4217 code",
        "p.toml: trial.plan names 'x', which is not in [plans]",
    ]


def test_summary_says_what_the_policy_decides() -> None:
    policy = load_policy(EXAMPLES / "metered.toml")
    assert summary(policy) == (
        "Example Metered VPN, metered privacy (connection records kept 30 days), "
        "deterministic NAT (64 blocks of 1000 ports per address, address history kept 30 days), "
        "2 plans, no trial, refunds within 7 days, age 18+ attested, terms 2026-11 effective "
        "2026-11-01"
    )
