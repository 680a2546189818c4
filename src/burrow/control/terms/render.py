"""The terms of service, written from the policy: Markdown for ``/terms.md``, HTML for ``/terms``.

``build`` turns a policy into a small document (sections of paragraphs, lists and tables):
the operator's own prose sections, then generated sections that say in plain words what the
policy makes the software do (what is stored, each plan's limits, prices, refunds, blocked
ports, fair use, age). Both renderings come from that one document, so they cannot disagree;
the HTML escapes every piece of text. The Markdown is deterministic (no clock, no database),
so its SHA-256 identifies a version of the terms.

Pure: imports the policy schemas only.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from datetime import date

from burrow.control.policy.retention import retention_statement
from burrow.control.policy.schemas import (
    PROTOCOL_NAMES,
    SERVED_PROTOCOLS,
    PlanSection,
    Policy,
    PrivacySection,
    RefundsSection,
)

PAYMENT_METHOD_NAMES = {
    "card": "card",
    "paypal": "PayPal",
    "crypto": "cryptocurrency",
    "paymentwall": "PaymentWall",
    "app_store": "the Apple App Store",
    "google_play": "Google Play",
    "manual": "bank transfer or invoice",
}
PAYOUT_METHOD_NAMES = {
    "paypal": "PayPal",
    "bank_transfer": "bank transfer",
    "crypto": "cryptocurrency",
    "account_credit": "credit on your account",
}
# ISO 4217 currencies whose minor unit is not a hundredth.
_CURRENCY_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Paragraph | Bullets | Table


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]


@dataclass(frozen=True)
class RenderedTerms:
    document: Document
    markdown: str
    sha256: str


# --- plain words for numbers -------------------------------------------------------------------


def money(amount_minor: int, currency: str) -> str:
    exponent = _CURRENCY_EXPONENTS.get(currency, 2)
    return f"{amount_minor / 10**exponent:,.{exponent}f} {currency}"


def data_size(count: int) -> str:
    """Decimal units, as network plans count them: 1 GB is 1,000,000,000 bytes."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            value = f"{count / size:.2f}".rstrip("0").rstrip(".")
            return f"{value} {unit} ({count:,} bytes)"
    return f"{count:,} bytes"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _join(words: list[str], last: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def _date(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


# --- the operator's prose ----------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*\u2022])\s+")


def prose_blocks(body: str) -> tuple[Block, ...]:
    """Plain text to blocks: blank lines separate paragraphs; "- " lines make a list."""
    blocks: list[Block] = []
    lines: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if lines:
            blocks.append(Paragraph(" ".join(lines)))
            lines.clear()
        if items:
            blocks.append(Bullets(tuple(items)))
            items.clear()

    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif _BULLET.match(raw):
            if lines:
                blocks.append(Paragraph(" ".join(lines)))
                lines.clear()
            items.append(_BULLET.sub("", raw).strip())
        else:
            if items:
                flush()
            lines.append(line)
    flush()
    return tuple(blocks)


# --- the generated sections --------------------------------------------------------------------

_ACCOUNT_DATA = (
    "What we do keep is what an account needs: your email address, a hash of your password, "
    "your subscriptions and payments, and for each device its name, its public key and its "
    "address inside our network (the same on every server; it says nothing about where you "
    "are)."
)


def _storage(policy: Policy) -> Section:
    privacy: PrivacySection = policy.privacy
    blocks: list[Block] = []
    if privacy.mode == "strict":
        blocks.append(
            Paragraph(
                "We do not store the IP address you connect from, when you connect or for how "
                "long, or how much data you send and receive. Our servers hold the state of "
                "your connections in memory only, to apply the limits of your plan, and forget "
                "it when you disconnect."
            )
        )
        if policy.network.nat == "random":
            blocks.append(
                Paragraph(
                    "Every connection leaves our servers from the server's shared address with "
                    "a random port, so nothing links an address, a port and a time to you: "
                    "an abuse complaint cannot be traced to any customer."
                )
            )
    else:
        days = privacy.connection_record_retention_days
        blocks.append(
            Paragraph(
                "For each VPN connection we keep a connection record: the date and time it "
                "started, how long it lasted, the location of the server, and the number of "
                "bytes sent and received. We keep connection records for "
                f"{_plural(days or 0, 'day')} and then delete them. Your connection records "
                "are part of the data export of your account."
            )
        )
        blocks.append(Paragraph("We do not store the IP address you connect from."))
        if privacy.first_order_usage_counters:
            blocks.append(
                Paragraph(
                    "For your first order we also keep its total data and its number of VPN "
                    "sessions, so that the refund rules below can be checked."
                )
            )
        if policy.network.nat == "deterministic":
            history = privacy.address_history_retention_days or 0
            blocks.append(
                Paragraph(
                    "Each of your devices leaves our servers from its own fixed range of ports "
                    "on the server's shared address, and we keep which device held which tunnel "
                    f"address, and from when to when, for {_plural(history, 'day')} after the "
                    "device gives it up. With it an abuse complaint (an address, a port and a "
                    "time) can be traced to the account responsible, without any record of "
                    "your connections."
                )
            )
    if policy.fair_use.shaping:
        blocks.append(
            Paragraph(
                "Fair-use measurements (how much bandwidth a connection uses right now) live in "
                "memory only and are never written to disk."
            )
        )
    if privacy.store_last_login_ip:
        blocks.append(
            Paragraph(
                "One exception, for fraud prevention: we keep the IP address of your most "
                "recent sign-in to the website for "
                f"{_plural(privacy.last_login_ip_retention_days or 0, 'day')}. It is not linked "
                "to your use of the VPN."
            )
        )
    else:
        blocks.append(Paragraph("We do not store the IP address you sign in to the website from."))
    if privacy.mode == "metered" and privacy.client_ips_in_logs:
        blocks.append(
            Paragraph("Our application logs may contain the IP address a request came from.")
        )
    else:
        blocks.append(Paragraph("IP addresses are removed from our application logs."))
    blocks.append(Paragraph(_ACCOUNT_DATA))
    return Section("What we store, and what we do not", tuple(blocks))


def _erasure(policy: Policy) -> Section:
    # The same sentences the privacy center shows before a customer erases the account.
    return Section(
        "What we keep after your account is erased",
        (
            Paragraph(
                "You can erase your account at any time from its privacy page. What happens to "
                "your data then:"
            ),
            Bullets(tuple(retention_statement(policy))),
        ),
    )


def _per_server(plan: PlanSection) -> str:
    if not plan.connections_per_server:
        return "no limit"
    by_count: dict[int, list[str]] = {}
    for protocol, count in plan.connections_per_server.items():
        by_count.setdefault(count, []).append(PROTOCOL_NAMES.get(protocol, protocol))
    return "; ".join(f"{_join(names)}: {count}" for count, names in sorted(by_count.items()))


def _plans(policy: Policy) -> Section:
    rows = []
    for plan in policy.plans.values():
        rows.append(
            (
                plan.name,
                plan.kind,
                money(plan.price_minor, plan.currency),
                _plural(plan.period_months, "month"),
                "unlimited" if plan.device_limit is None else str(plan.device_limit),
                "unlimited"
                if plan.simultaneous_connections is None
                else str(plan.simultaneous_connections),
                _per_server(plan),
            )
        )
    header = (
        "Plan",
        "Kind",
        "Price",
        "Period",
        "Devices",
        "Simultaneous connections",
        "Connections per server",
    )
    blocks: list[Block] = [Table(header, tuple(rows))]
    blocks.append(
        Paragraph(
            "Simultaneous connections are counted across all our servers; connections per "
            "server are counted per protocol, on one server, for one subscription. A protocol "
            "not named there is limited only by the number of simultaneous connections."
        )
    )
    blocks.append(
        Paragraph(
            "When a new connection would go over a limit, the new connection is refused and "
            "your account shows why; a connection that is already up is never cut for a newer "
            "one."
        )
    )
    served = [PROTOCOL_NAMES[p] for p in SERVED_PROTOCOLS]
    blocks.append(
        Paragraph(
            f"You can connect with {_join(served, 'or')}. PPTP and L2TP are not offered: they "
            "are no longer secure."
        )
    )
    trial = policy.trial
    if trial is not None and trial.enabled:
        plan_name = policy.plans[trial.plan].name if trial.plan in policy.plans else trial.plan
        blocks.append(
            Paragraph(
                f"A new account may try the service once, free, for {_plural(trial.days, 'day')}, "
                f'with the limits of the "{plan_name}" plan. A trial needs only an email address.'
            )
        )
    else:
        blocks.append(Paragraph("There is no free trial."))
    return Section("Plans, prices and limits", tuple(blocks))


def _payment(policy: Policy) -> Section:
    methods = policy.payment_methods
    offered = [PAYMENT_METHOD_NAMES[m] for m in methods.offered]
    blocks: list[Block] = [Paragraph(f"You can pay by {_join(offered, 'or')}.")]
    recurring = [PAYMENT_METHOD_NAMES[m] for m in methods.recurring]
    if recurring:
        blocks.append(
            Paragraph(
                f"A subscription paid by {_join(recurring, 'or')} renews automatically at the end "
                "of each period. You can cancel it at any time before the renewal date from your "
                "account; it then ends at the end of the period you paid for."
            )
        )
    one_off = [PAYMENT_METHOD_NAMES[m] for m in methods.offered if m not in methods.recurring]
    if one_off:
        blocks.append(
            Paragraph(
                f"A payment by {_join(one_off, 'or')} pays for one period; it does not renew "
                "by itself."
            )
        )
    return Section("Payment and renewal", tuple(blocks))


def _refunds(refunds: RefundsSection | None) -> Section:
    title = "Refunds"
    if refunds is None:
        return Section(title, (Paragraph("There is no money-back guarantee."),))
    blocks: list[Block] = []
    days = _plural(refunds.window_days, "day")
    if refunds.condition:
        blocks.append(
            Paragraph(
                f"You can ask for your money back within {days} of your order if "
                f"{refunds.condition}."
            )
        )
    else:
        blocks.append(Paragraph(f"You can ask for your money back within {days} of your order."))
    needs = []
    if refunds.first_order_only:
        needs.append("the order is the first order of your account")
    if refunds.not_for_renewals:
        needs.append("the order is not a renewal")
    if refunds.max_data_bytes is not None:
        needs.append(
            f"the order has used less than {data_size(refunds.max_data_bytes)} of data, upload "
            "and download together"
        )
    if refunds.max_sessions is not None:
        needs.append(
            f"the order has had fewer than {refunds.max_sessions} VPN sessions (each "
            "connection counts as one)"
        )
    if refunds.one_per_person:
        needs.append("you have not had a refund under this guarantee for another account")
    if refunds.reason_required:
        needs.append("you tell us why you ask for it")
    if needs:
        blocks.append(Paragraph("A full refund needs all of the following:"))
        blocks.append(Bullets(tuple(needs)))
    excluded = []
    if refunds.excluded_payment_methods:
        names = [PAYMENT_METHOD_NAMES[m] for m in refunds.excluded_payment_methods]
        excluded.append(f"for a payment made through {_join(names, 'or')}")
    if refunds.unsupported_device_excludes:
        excluded.append(
            "when we find that you used an unsupported device or operating system, or tried "
            "to reach an unsupported site"
        )
    if refunds.terminated_for_violation_excludes:
        excluded.append("when your account was terminated for breaking these terms")
    if excluded:
        blocks.append(Paragraph("There is no refund:"))
        blocks.append(Bullets(tuple(excluded)))
    partial = refunds.partial_past_data_limit
    if partial is not None:
        longer = _plural(partial.order_longer_than_months, "month")
        charged = ""
        if partial.usage_charged:
            price = partial.data_price_minor_per_gb
            each = f" at {price / 100:.2f} per GB in your order's currency" if price else ""
            charged = f", charging for the data you used{each}"
        blocks.append(
            Paragraph(
                f"When the order has used more data than that but was for more than {longer}, "
                f"we may offer a partial refund{charged}. That is at our discretion."
            )
        )
    hours = refunds.service_level_hours
    if refunds.auto_approve:
        text = "A request that meets every condition is approved at once."
        if hours is not None:
            text += f" Any other request is answered by a person within {_plural(hours, 'hour')}."
        blocks.append(Paragraph(text))
    elif hours is not None:
        blocks.append(Paragraph(f"We act on every request within {_plural(hours, 'hour')}."))
    return Section(title, tuple(blocks))


def _network(policy: Policy) -> Section:
    network = policy.network
    blocks: list[Block] = []
    blocked = []
    for protocol, ports in (
        ("TCP", network.blocked_egress_tcp_ports),
        ("UDP", network.blocked_egress_udp_ports),
    ):
        if ports:
            listed = ", ".join(str(port) for port in sorted(set(ports)))
            blocked.append(f"{protocol} port{'s' if len(set(ports)) > 1 else ''} {listed}")
    if blocked:
        note = ""
        if 25 in network.blocked_egress_tcp_ports:
            note = " (port 25 carries outgoing email, which spammers abuse)"
        blocks.append(
            Paragraph(
                f"Connections from our network to {_join(blocked)} on the internet are "
                f"blocked{note}."
            )
        )
    else:
        blocks.append(Paragraph("No ports are blocked."))
    if network.isolate_clients:
        blocks.append(Paragraph("Devices cannot reach each other through our network."))
    if network.shared_egress_ips:
        blocks.append(
            Paragraph(
                "You reach the internet from the static address of the server you connect to, "
                "which you share with everyone else on that server. We do not offer dedicated "
                "addresses."
            )
        )
    return Section("Network", tuple(blocks))


def _dns(policy: Policy) -> Section:
    dns = policy.dns
    upstream = (
        "asks the upstream resolvers we chose on your behalf, without saying who you are"
        if dns.forwarders
        else "finds every answer itself, so no other company sees what you look up"
    )
    checks = " and checks DNSSEC signatures" if dns.dnssec else ""
    blocks: list[Block] = [
        Paragraph(
            "Every server runs its own DNS resolver, which your device uses through the tunnel. "
            f"It {upstream}{checks}. Your DNS queries are never recorded: the resolver keeps "
            "no query log and no statistics about any customer, and writes nothing about your "
            "queries anywhere."
        )
    ]
    if dns.filters:
        blocks.append(
            Paragraph(
                "As a bonus service you can choose, for each device, filters that stop names "
                "from resolving. A filtered name, and every name under it, does not resolve. "
                "Your choice is the resolver address in the device's configuration, so the "
                "resolver never learns who is asking. The filters are:"
            )
        )
        blocks.append(
            Bullets(
                tuple(
                    f"{entry.title}: {entry.description}" if entry.description else entry.title
                    for entry in dns.filters.values()
                )
            )
        )
        combos = [" + ".join(dns.filters[name].title for name in c) for c in dns.offered]
        blocks.append(
            Paragraph(
                f"You can pick {_join(combos, 'or')}. Filtering is a bonus service: the lists "
                "are ours, a filter may miss a name or block one it should not, and we may "
                "change or discontinue it at any time."
            )
        )
    return Section("DNS", tuple(blocks))


def _fair_use(policy: Policy) -> Section:
    fair_use = policy.fair_use
    blocks: list[Block] = []
    if fair_use.monthly_data_cap_bytes is None:
        blocks.append(Paragraph("Your monthly data is not capped."))
    else:
        blocks.append(
            Paragraph(
                f"You may transfer up to {data_size(fair_use.monthly_data_cap_bytes)} a month."
            )
        )
    if fair_use.shaping and fair_use.shaped_rate_mbit is not None:
        blocks.append(
            Paragraph(
                "When your use harms others, we may slow it down: when a server is busier than "
                f"{fair_use.trigger_utilisation_percent} % of its capacity, the connections that "
                "used the most bandwidth over the last "
                f"{_plural(fair_use.window_minutes, 'minute')} may be limited to "
                f"{fair_use.shaped_rate_mbit} Mbit/s until it is less busy."
            )
        )
    return Section("Fair use", tuple(blocks))


def _age(policy: Policy) -> Section:
    age = policy.age
    if not age.attestation_required:
        return Section("Age", (Paragraph("We set no age requirement."),))
    text = f"You must be {age.minimum_age} or older"
    others = []
    if age.allow_emancipated_minor:
        others.append("be an emancipated minor")
    if age.allow_guardian_consent:
        others.append("have the consent of a parent or guardian")
    if others:
        text += f", or {_join(others, 'or')}"
    text += ". You confirm it when you sign up."
    return Section("Age", (Paragraph(text),))


def _affiliates(policy: Policy) -> Section | None:
    rules = affiliate_rules(policy)
    return Section("Affiliate program", (Bullets(tuple(rules)),)) if rules else None


def affiliate_rules(policy: Policy) -> list[str]:
    """The affiliate program's rules as burrow enforces them (control/affiliates), one
    sentence each; none without a program. The terms and the affiliate's page show these."""
    affiliates = policy.affiliates
    if affiliates is None or not affiliates.enabled:
        return []
    minimum = money(affiliates.payout_minimum_minor, affiliates.currency)
    items = [
        "Apply with accurate contact details"
        + (
            " and the address of your active promotional site"
            if affiliates.requires_website
            else ""
        )
        + "; we may approve or deny an application, and suspend an affiliate, with the reason.",
        f"Payouts start from a balance of {minimum}, paid by "
        f"{PAYOUT_METHOD_NAMES[affiliates.payout_method]}"
        + (" to a valid PayPal account" if affiliates.payout_method == "paypal" else "")
        + ".",
    ]
    if affiliates.commission_percent is not None:
        items.append(
            f"You earn {affiliates.commission_percent} % of the first order of each customer "
            "you refer."
        )
    if affiliates.renewal_percent is not None:
        span = (
            f"for {_plural(affiliates.renewal_months, 'month')} after their first order"
            if affiliates.renewal_months is not None
            else "for as long as they stay"
        )
        items.append(f"You earn {affiliates.renewal_percent} % of their renewals {span}.")
    days = _plural(affiliates.cookie_days, "day")
    items.append(
        f"Your referral link counts for {days} in the visitor's browser; a referral code typed "
        "at sign-up or checkout counts too. Once referred, a customer stays yours."
    )
    holding = affiliates.holding(policy.refunds)
    if holding:
        items.append(
            f"A commission becomes payable {_plural(holding, 'day')} after the order is paid; "
            "an order refunded before then earns nothing."
        )
    items.append(
        "An order refunded after its commission was paid out takes that commission back from "
        "your next payout."
    )
    if affiliates.requires_website:
        items.append("You need an active website where you promote us.")
    if affiliates.forbid_self_referrals:
        items.append(
            "Orders you refer to yourself do not count: a commission on an order that shares "
            "your email address, card or PayPal account is held for review."
        )
    if affiliates.inactivity_termination_months is not None:
        months = _plural(affiliates.inactivity_termination_months, "month")
        items.append(
            f"We end an affiliate account after {months} without a referred paid order or a "
            f"sign-in, after emailing you {_plural(affiliates.inactivity_notice_days, 'day')} "
            "before."
        )
    if affiliates.refund_rate_threshold_percent is not None:
        items.append(
            "We suspend an affiliate account when more than "
            f"{affiliates.refund_rate_threshold_percent} % of its referred orders of the last "
            f"{_plural(affiliates.refund_rate_window_days, 'day')} are refunded (once there are "
            f"at least {affiliates.refund_rate_min_orders})."
        )
    ended = "paid out as usual" if affiliates.payable_on_termination == "pay" else "held for review"
    items.append(
        f"When an affiliate account ends, pending commissions are cancelled and payable ones "
        f"are {ended}."
    )
    return items


def _changes(policy: Policy) -> Section:
    text = "We may change these terms. Each version is published here with its effective date."
    if policy.terms.continued_use_is_acceptance:
        text += " If you keep using the service after a new version takes effect, you accept it."
    else:
        text += " A new version applies to you once you accept it from your account."
    return Section("Changes to these terms", (Paragraph(text),))


def build(policy: Policy) -> Document:
    terms = policy.terms
    intro: list[Block] = [
        Paragraph(
            f"Version {terms.version}, effective {_date(terms.effective_date)}. "
            f"Questions: {policy.provider.contact_email}."
        ),
    ]
    prose = tuple(Section(s.title, prose_blocks(s.body)) for s in terms.sections)
    generated: list[Section] = [
        _storage(policy),
        _erasure(policy),
        _plans(policy),
        _payment(policy),
        _refunds(policy.refunds),
        _network(policy),
        _dns(policy),
        _fair_use(policy),
        _age(policy),
    ]
    affiliates = _affiliates(policy)
    if affiliates is not None:
        generated.append(affiliates)
    generated.append(_changes(policy))
    intro.append(
        Paragraph(
            f'The sections from "{generated[0].title}" on are written from the policy file our '
            "servers run on, so what they say is what the software does."
        )
    )
    return Document(
        title=f"Terms of service: {policy.provider.name}",
        intro=tuple(intro),
        sections=prose + tuple(generated),
    )


# --- Markdown ----------------------------------------------------------------------------------

_MD_LINE_START = re.compile(r"^(#|>|\d+[.)]\s|[-+*]\s|=|\|)")


def _md_text(text: str) -> str:
    text = text.replace("<", "&lt;")
    if _MD_LINE_START.match(text):
        text = "\\" + text
    return text


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|")


def _md_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return _md_text(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_text(item)}" for item in block.items)
    lines = [
        "| " + " | ".join(_md_cell(c) for c in block.header) + " |",
        "|" + "---|" * len(block.header),
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def to_markdown(document: Document) -> str:
    parts = [f"# {_md_text(document.title)}"]
    parts += [_md_block(block) for block in document.intro]
    for section in document.sections:
        parts.append(f"## {_md_text(section.title)}")
        parts += [_md_block(block) for block in section.blocks]
    return "\n\n".join(parts) + "\n"


# --- HTML --------------------------------------------------------------------------------------

_STYLE = (
    "body{max-width:46rem;margin:2rem auto;padding:0 1rem;font:16px/1.6 system-ui,sans-serif;"
    "color:#1d1d1f}table{border-collapse:collapse;margin:1rem 0;font-size:.95rem}"
    "th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}"
    "footer{margin-top:3rem;font-size:.85rem;color:#555}code{word-break:break-all}"
)


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Paragraph):
        return f"<p>{e(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    head = "".join(f'<th scope="col">{e(cell)}</th>' for cell in block.header)
    # Each cell names its column, so a phone-width page can show a row as a labelled list.
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{e(label)}">{e(cell)}</td>'
            for label, cell in zip(block.header, row, strict=False)
        )
        + "</tr>"
        for row in block.rows
    )
    return (
        f'<div class="table-wrap"><table class="data stack"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def to_html_article(document: Document, sha256: str) -> str:
    """The terms as an ``<article>``, for a page of the site (with its header and style)."""
    e = html.escape
    parts = ['<article class="terms">', f"<h1>{e(document.title)}</h1>"]
    parts += [_html_block(block) for block in document.intro]
    for section in document.sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        parts += [_html_block(block) for block in section.blocks]
    parts.append(
        '<footer>The same terms as Markdown: <a href="/terms.md">/terms.md</a>, whose SHA-256 '
        f"is <code>{e(sha256)}</code>.</footer>"
    )
    parts.append("</article>")
    return "\n".join(parts) + "\n"


def to_html(document: Document, sha256: str) -> str:
    """The terms as a page of their own (no site around them)."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(document.title)}</title><style>{_STYLE}</style></head><body>",
        to_html_article(document, sha256),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render(policy: Policy) -> RenderedTerms:
    document = build(policy)
    markdown = to_markdown(document)
    return RenderedTerms(document, markdown, hashlib.sha256(markdown.encode()).hexdigest())
