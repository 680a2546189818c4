"""Rendering the terms from a policy: plain words for each rule, escaped HTML, a stable hash."""

from __future__ import annotations

import hashlib

import pytest

from burrow.control.policy.retention import retention_statement
from burrow.control.policy.schemas import DnsFilterSection, DnsSection, Policy, TermsProse
from burrow.control.policy.service import load_policy
from burrow.control.terms.render import (
    Bullets,
    Paragraph,
    data_size,
    money,
    prose_blocks,
    render,
    to_html,
)
from tests.conftest import ROOT

POLICIES = ROOT / "examples" / "policies"


@pytest.fixture
def strict() -> Policy:
    return load_policy(POLICIES / "strict-no-logs.toml")


@pytest.fixture
def metered() -> Policy:
    return load_policy(POLICIES / "metered.toml")


def test_strict_terms_say_nothing_is_recorded(strict: Policy) -> None:
    text = render(strict).markdown
    assert "We do not store the IP address you connect from, when you connect" in text
    assert "connection record" not in text
    assert "most recent sign-in to the website for 30 days" in text
    assert "IP addresses are removed from our application logs." in text


def test_metered_terms_say_what_is_recorded_and_for_how_long(metered: Policy) -> None:
    text = render(metered).markdown
    assert "For each VPN connection we keep a connection record" in text
    assert "We keep connection records for 30 days and then delete them." in text
    assert "part of the data export" in text
    assert "For your first order we also keep its total data" in text


def test_the_terms_say_what_is_kept_after_erasure_and_for_how_long(
    strict: Policy, metered: Policy
) -> None:
    for policy in (strict, metered):
        document = render(policy).document
        titles = [section.title for section in document.sections]
        assert "What we keep after your account is erased" in titles
        section = document.sections[titles.index("What we keep after your account is erased")]
        kept = next(block for block in section.blocks if isinstance(block, Bullets))
        # The privacy center's own sentences, so the two never disagree.
        assert list(kept.items) == retention_statement(policy)
        years = policy.privacy.invoice_retention_years
        assert f"Kept for {years} years from the date of each order" in render(policy).markdown
    assert "your connection records" not in render(strict).markdown
    assert "your connection records" in render(metered).markdown


def test_plan_limits_and_prices_are_a_table(strict: Policy, metered: Policy) -> None:
    text = render(strict).markdown
    assert (
        "| Business, 1 month | business | 9.99 USD | 1 month | 1 | 1 | WireGuard and IKEv2: 1 |"
    ) in text
    assert (
        "| Personal, 12 months | personal | 49.99 USD | 12 months | unlimited | unlimited |" in text
    )
    assert "| Standard, 1 month | personal | 11.99 USD | 1 month | unlimited | 2 | no limit |" in (
        render(metered).markdown
    )


def test_refund_rules_in_plain_words(strict: Policy, metered: Policy) -> None:
    strict_text = render(strict).markdown
    assert (
        "You can ask for your money back within 30 days of your order if the service does "
        "not function as advertised." in strict_text
    )
    assert "- for a payment made through cryptocurrency" in strict_text
    metered_text = render(metered).markdown
    for line in (
        "- the order is the first order of your account",
        "- the order is not a renewal",
        "- the order has used less than 1 GB (1,000,000,000 bytes) of data",
        "- the order has had fewer than 30 VPN sessions",
        "- you have not had a refund under this guarantee for another account",
        "Apple App Store, Google Play, PaymentWall or cryptocurrency",
        "we may offer a partial refund, charging for the data you used",
        "answered by a person within 24 hours",
    ):
        assert line in metered_text


def test_ports_age_and_fair_use(strict: Policy, metered: Policy) -> None:
    strict_text = render(strict).markdown
    assert "Connections from our network to TCP port 25 on the internet are blocked" in strict_text
    assert "We set no age requirement." in strict_text
    assert "limited to 20 Mbit/s" in strict_text
    assert (
        "Payouts start from a balance of 100.00 USD, paid by PayPal to a valid PayPal account."
        in strict_text
    )
    metered_text = render(metered).markdown
    assert (
        "You must be 18 or older, or be an emancipated minor or have the consent of a parent "
        "or guardian." in metered_text
    )
    assert "Affiliate program" not in metered_text


def test_the_affiliate_programs_rules_are_the_ones_enforced(strict: Policy) -> None:
    """The first seed's program as its policy sets it (control/affiliates enforces each)."""
    text = render(strict).markdown
    section = text[text.index("## Affiliate program") :]
    for line in (
        "- Apply with accurate contact details and the address of your active promotional "
        "site; we may approve or deny an application, and suspend an affiliate, with the "
        "reason.",
        "- You earn 30 % of the first order of each customer you refer.",
        "- You earn 10 % of their renewals for 12 months after their first order.",
        "- Your referral link counts for 30 days in the visitor's browser",
        "- A commission becomes payable 30 days after the order is paid; an order refunded "
        "before then earns nothing.",
        "takes that commission back from your next payout.",
        "shares your email address, card or PayPal account is held for review.",
        "- We end an affiliate account after 6 months without a referred paid order or a "
        "sign-in, after emailing you 14 days before.",
        "- We suspend an affiliate account when more than 25 % of its referred orders of the "
        "last 90 days are refunded (once there are at least 10).",
        "pending commissions are cancelled and payable ones are paid out as usual.",
    ):
        assert line in section, line


def test_the_operators_prose_comes_first(strict: Policy) -> None:
    text = render(strict).markdown
    assert text.index("## General") < text.index("## What we store, and what we do not")
    assert "- spam or unsolicited bulk messaging" in text


def test_the_hash_is_of_the_markdown_and_stable(strict: Policy) -> None:
    first, second = render(strict), render(strict)
    assert first.markdown == second.markdown
    assert first.sha256 == hashlib.sha256(first.markdown.encode()).hexdigest()
    changed = strict.model_copy(
        update={
            "network": strict.network.model_copy(update={"blocked_egress_tcp_ports": [25, 465]})
        }
    )
    assert render(changed).sha256 != first.sha256
    assert "TCP ports 25, 465" in render(changed).markdown


def test_html_escapes_the_operators_text(strict: Policy) -> None:
    hostile = strict.model_copy(
        update={
            "terms": strict.terms.model_copy(
                update={
                    "sections": [
                        TermsProse(title="<script>alert(1)</script>", body="a & b <b>bold</b>")
                    ]
                }
            )
        }
    )
    rendered = render(hostile)
    page = to_html(rendered.document, rendered.sha256)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b &lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;script>" in rendered.markdown  # Markdown readers would run raw HTML
    assert rendered.sha256 in page


def test_prose_blocks() -> None:
    body = "First line\ncontinues.\n\nList:\n- one\n- two\nAfter.\n"
    assert prose_blocks(body) == (
        Paragraph("First line continues."),
        Paragraph("List:"),
        Bullets(("one", "two")),
        Paragraph("After."),
    )


def test_money_and_sizes() -> None:
    assert money(699, "USD") == "6.99 USD"
    assert money(123456, "EUR") == "1,234.56 EUR"
    assert money(500, "JPY") == "500 JPY"
    assert data_size(1_000_000_000) == "1 GB (1,000,000,000 bytes)"
    assert data_size(1_500_000) == "1.5 MB (1,500,000 bytes)"
    assert data_size(512) == "512 bytes"


def test_the_dns_section_promises_no_query_records_and_names_the_filters(strict: Policy) -> None:
    plain = render(strict.model_copy(update={"dns": DnsSection()})).markdown
    assert "## DNS" in plain
    assert "Your DNS queries are never recorded" in plain
    assert "bonus service" not in plain.split("## DNS", 1)[1].split("\n## ", 1)[0]
    filtered = strict.model_copy(
        update={
            "dns": DnsSection(
                filters={
                    "ads": DnsFilterSection(title="Ads", description="ad networks", file="a"),
                    "malware": DnsFilterSection(title="Malware", file="m"),
                }
            )
        }
    )
    section = render(filtered).markdown.split("## DNS", 1)[1].split("\n## ", 1)[0]
    assert "Your DNS queries are never recorded" in section
    assert "As a bonus service you can choose, for each device, filters" in section
    assert "- Ads: ad networks" in section
    assert "- Malware" in section
    assert "You can pick Ads, Malware or Ads + Malware." in section
    assert "may change or discontinue it at any time" in section
    # The first seed's example offers its "proxy filtering" this way.
    example = render(strict).markdown.split("## DNS", 1)[1].split("\n## ", 1)[0]
    assert "- Ads: advertising networks" in example
    assert "As a bonus service" in example


def test_the_terms_name_only_the_protocols_the_fleet_serves(
    strict: Policy, metered: Policy
) -> None:
    for policy in (strict, metered):
        text = render(policy).markdown
        assert "You can connect with WireGuard, OpenVPN or IKEv2." in text
        assert "PPTP and L2TP are not offered: they are no longer secure." in text
        assert "SSTP" not in text
        assert "SoftEther" not in text


def test_the_terms_say_whether_a_complaint_can_be_traced(strict: Policy, metered: Policy) -> None:
    strict_text = " ".join(render(strict).markdown.split())
    assert "an abuse complaint cannot be traced to any customer" in strict_text
    assert "fixed range of ports" not in strict_text
    metered_text = " ".join(render(metered).markdown.split())
    assert "its own fixed range of ports" in metered_text
    assert "for 30 days after the device gives it up" in metered_text
    assert "which tunnel address it held and when" in metered_text
