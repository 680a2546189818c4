"""The policy file's shape, and the rules that tie its sections together.

Each section is a pydantic model that refuses unknown keys, so a misspelt rule is an error
rather than a silently ignored line. Rules between sections (a refund rule that needs byte
counts under a privacy mode that forbids storing them) live in ``cross_check``, which names
both sides of every contradiction; ``Policy`` runs it too, so a ``Policy`` object that exists
is always consistent. Amounts are integers in minor units with their currency.

The lowest layer of the domain: imports pydantic only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

# Payment method classes: how the money came, which is what refund rules and renewals care about.
PAYMENT_METHOD_CLASSES = (
    "card",
    "paypal",
    "crypto",
    "paymentwall",
    "app_store",
    "google_play",
    "manual",
)
# VPN protocols a per-server connection rule may name.
# The protocols a plan can limit, with the names customers know them by.
PROTOCOL_NAMES = {
    "wireguard": "WireGuard",
    "openvpn": "OpenVPN",
    "ikev2": "IKEv2",
    "l2tp": "L2TP",
    "pptp": "PPTP",
    "sstp": "SSTP",
    "softether": "SoftEther",
}
PROTOCOLS = tuple(PROTOCOL_NAMES)
# The protocols burrow's nodes serve (the node agent's drivers). A policy promises no other:
# the terms are rendered from it, so a limit on a protocol nobody serves would be a promise
# of a service that does not exist.
SERVED_PROTOCOLS = ("wireguard", "openvpn", "ikev2")
_NOT_SERVED = {
    "pptp": "PPTP is insecure and burrow does not serve it",
    "l2tp": "L2TP is insecure and burrow does not serve it",
    "sstp": "no burrow node serves SSTP",
    "softether": "no burrow node serves SoftEther",
}


def _payment_method_class(value: str) -> str:
    if value not in PAYMENT_METHOD_CLASSES:
        raise ValueError(
            f"'{value}' is not a payment method class; the classes are: "
            + ", ".join(PAYMENT_METHOD_CLASSES)
        )
    return value


def _protocol(value: str) -> str:
    if value not in PROTOCOLS:
        raise ValueError(
            f"'{value}' is not a VPN protocol; the protocols are: {', '.join(PROTOCOLS)}"
        )
    if value not in SERVED_PROTOCOLS:
        raise ValueError(
            f"{_NOT_SERVED.get(value, 'no burrow node serves it')}; a policy may promise only "
            f"the protocols burrow's nodes serve: {', '.join(SERVED_PROTOCOLS)}"
        )
    return value


PaymentMethodClass = Annotated[str, AfterValidator(_payment_method_class)]
ProtocolName = Annotated[str, AfterValidator(_protocol)]
Port = Annotated[int, Field(ge=1, le=65535)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Days = Annotated[int, Field(ge=1, le=3650)]


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file: where (a dotted path) and the rule it breaks."""

    location: str
    message: str

    def __str__(self) -> str:
        # A contradiction is a sentence that already starts with its path; say it only once.
        if self.message.startswith(f"{self.location} "):
            return self.message
        return f"{self.location}: {self.message}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSection(_Section):
    name: str = Field(min_length=1, max_length=200)
    contact_email: EmailStr
    website: str | None = Field(None, max_length=300)


class PrivacySection(_Section):
    mode: Literal["strict", "metered"]
    # Metered mode only: how long connection records (start, duration, node location, bytes
    # up and down) are kept before the purge job deletes them.
    connection_record_retention_days: Days | None = None
    # Byte and session counts of a customer's first order, kept only so that a refund rule
    # with a data or session limit can be checked. Metered mode only.
    first_order_usage_counters: bool = False
    # The website's last-login IP, for fraud prevention (both seeds allow it).
    store_last_login_ip: bool = False
    last_login_ip_retention_days: Days | None = None
    # Client IP addresses may appear in application logs. Metered mode only; off, the log
    # filter removes every address.
    client_ips_in_logs: bool = False
    # Data-subject requests (access, erasure, ...) that need a person are answered within
    # this many days (the GDPR's month); the admin panel lists them by this deadline.
    request_response_days: int = Field(30, ge=1, le=90)
    # After an account is erased, its invoices (orders and payments, without the person)
    # are kept this long because accounting law requires it; the privacy page says so.
    invoice_retention_years: int = Field(10, ge=1, le=30)
    # A payment provider's event (a checkout, a dispute, a Radar review) is kept whole only
    # this many days after it was handled, then reduced to its id and type (all a duplicate
    # delivery needs); 0: reduced as soon as it is handled. Client IP addresses inside it are
    # never stored.
    provider_event_retention_days: int = Field(30, ge=0, le=3650)
    # Metered mode with deterministic NAT only: how long the history of which device held which
    # tunnel address is kept after the device gave it up (what traces an abuse complaint).
    address_history_retention_days: Days | None = None

    @property
    def keeps_connection_records(self) -> bool:
        return self.mode == "metered"


class PlanSection(_Section):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["personal", "business"] = "personal"
    price_minor: int = Field(ge=0, description="The price in minor units (cents).")
    currency: Currency
    period_months: int = Field(ge=1, le=120)
    device_limit: int | None = Field(None, ge=1, description="Absent: unlimited devices.")
    simultaneous_connections: int | None = Field(
        None, ge=1, description="Across the fleet; absent: unlimited."
    )
    connections_per_server: dict[ProtocolName, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict,
        description="Per protocol, per server, per subscription; a protocol not named is "
        "limited only by simultaneous_connections.",
    )


class TrialSection(_Section):
    enabled: bool = True
    days: int = Field(1, ge=1, le=90)
    plan: str = Field(description="The plan whose limits apply during the trial.")


class NetworkSection(_Section):
    blocked_egress_tcp_ports: list[Port] = Field(default_factory=lambda: [25])
    blocked_egress_udp_ports: list[Port] = Field(default_factory=list)
    isolate_clients: bool = True
    # Customers leave through their node's static egress address, shared with everyone on
    # that node. burrow has no dedicated addresses.
    shared_egress_ips: bool = True
    # How tunnel addresses share the egress address. "random": a random source port per
    # connection, so no port points at a device. "deterministic" (RFC 7422): each tunnel
    # address leaves from its own fixed block of ports, so a complaint's (address, port, time)
    # names the device without any per-connection log. Metered mode only.
    nat: Literal["random", "deterministic"] = "random"
    # Deterministic NAT's blocks: ports in each device's block, and blocks per egress address
    # (from port 1024 on, so ports x devices is at most 64,512). A node serves at most this
    # many devices per egress address and refuses the excess.
    nat_ports_per_device: int = Field(1000, ge=16, le=64512)
    nat_devices_per_egress_ip: int = Field(64, ge=1, le=4032)


FilterName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
# Each list is one bit of a combination's number, which picks its resolver address: at most
# this many lists, so that at most 2**MAX - 1 addresses are reserved at the pools' end.
MAX_DNS_FILTERS = 6
MAX_DNS_COMBINATIONS = 16


class DnsFilterSection(_Section):
    """One filter list: a file of domain names the operator keeps (one a line)."""

    title: str = Field(min_length=1, max_length=100)
    description: str | None = Field(None, max_length=500)
    file: str = Field(
        min_length=1,
        max_length=1000,
        description="Path of the list; relative paths start at the policy file's folder.",
    )


class DnsSection(_Section):
    """The resolver every node runs, and the filters customers may pick per device.

    The lists' order matters: list n is bit n of a combination's number, and that number picks
    the combination's resolver address (reserved at the end of the tunnel pools). Add new lists
    at the end, so that no device's resolver address moves.
    """

    forwarders: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Upstream resolvers; empty: every node resolves recursively itself.",
    )
    dnssec: bool = True
    filters: dict[FilterName, DnsFilterSection] = Field(
        default_factory=dict, max_length=MAX_DNS_FILTERS
    )
    # The combinations customers may pick; absent: each list alone, and all lists together.
    combinations: list[list[FilterName]] | None = Field(None, max_length=MAX_DNS_COMBINATIONS)

    @model_validator(mode="after")
    def _known_names(self) -> DnsSection:
        for address in self.forwarders:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"forwarder {address!r} is not an IP address") from None
        for combination in self.combinations or []:
            if not combination:
                raise ValueError("a combination names at least one filter list")
            for name in combination:
                if name not in self.filters:
                    raise ValueError(
                        f"combination {combination} names '{name}', which is not in dns.filters"
                    )
        return self

    @property
    def offered(self) -> list[tuple[str, ...]]:
        """The filter combinations customers may pick, each in the lists' order, no repeats."""
        order = list(self.filters)
        if self.combinations is not None:
            picked = [tuple(sorted(set(c), key=order.index)) for c in self.combinations]
        else:
            picked = [(name,) for name in order]
            if len(order) > 1:
                picked.append(tuple(order))
        return list(dict.fromkeys(picked))

    def mask(self, combination: tuple[str, ...] | list[str]) -> int:
        order = list(self.filters)
        return sum(1 << order.index(name) for name in set(combination))

    @property
    def reserved_addresses(self) -> int:
        """Addresses kept at the end of each tunnel pool for the combinations' resolvers."""
        return (1 << len(self.filters)) - 1


class PartialRefundSection(_Section):
    """A partial refund past the data limit, at the operator's discretion (a person decides)."""

    order_longer_than_months: int = Field(1, ge=0, le=120)
    usage_charged: bool = True
    # The price of the data used, in minor units (cents) of the order's currency per GB
    # (10^9 bytes, up and down): the proposal is the amount paid minus this charge.
    data_price_minor_per_gb: int | None = Field(None, ge=0, le=1_000_000)


class RefundsSection(_Section):
    """A money-back guarantee. No [refunds] section: no guarantee."""

    window_days: int = Field(ge=1, le=365)
    # A condition only a person can judge, e.g. "the service does not work as advertised".
    condition: str | None = Field(None, min_length=1, max_length=500)
    excluded_payment_methods: list[PaymentMethodClass] = Field(default_factory=list)
    first_order_only: bool = False
    not_for_renewals: bool = False
    max_data_bytes: int | None = Field(None, ge=0)
    max_sessions: int | None = Field(None, ge=0)
    one_per_person: bool = False
    # A support finding that the customer used an unsupported device, OS or site excludes.
    unsupported_device_excludes: bool = False
    terminated_for_violation_excludes: bool = False
    partial_past_data_limit: PartialRefundSection | None = None
    reason_required: bool = False
    auto_approve: bool = False
    # How soon a person acts on a request that is not approved automatically.
    service_level_hours: int | None = Field(None, ge=1, le=720)
    # A customer asking for a refund is first offered a support conversation about the
    # problem; the refund request, if made, links to it.
    support_first: bool = False


# What a support request is about; the customer picks one when opening it.
SUPPORT_TOPICS = ("connection", "billing", "refund", "privacy", "cancellation", "other")
SupportTopic = Literal["connection", "billing", "refund", "privacy", "cancellation", "other"]


def _default_deadlines() -> dict[SupportTopic, int]:
    return {
        "connection": 24,
        "billing": 24,
        "refund": 24,
        "privacy": 72,
        "cancellation": 24,
        "other": 48,
    }


class SupportSection(_Section):
    """The support desk: how soon each topic is answered, and what its emails carry."""

    # Hours from a request's opening to its answer, per topic; a topic left out gets the
    # default of its kind above.
    deadline_hours: dict[SupportTopic, Annotated[int, Field(ge=1, le=720)]] = Field(
        default_factory=_default_deadlines
    )
    # The notification of a new message carries its text; off, only a link to read it in
    # the panel (nothing the customer wrote leaves the server by email).
    message_in_email: bool = True
    # The address customers write to; replies to notifications come back through
    # reply addresses at its domain. None: the provider's contact address.
    address: EmailStr | None = None

    def deadline_for(self, topic: str) -> int:
        defaults: dict[str, int] = {str(k): v for k, v in _default_deadlines().items()}
        hours: dict[str, int] = {str(k): v for k, v in self.deadline_hours.items()}
        return hours.get(topic, defaults.get(topic, 48))


class PaymentMethodsSection(_Section):
    offered: list[PaymentMethodClass] = Field(default_factory=lambda: ["card"], min_length=1)
    # Classes that renew automatically; the others pay one period at a time.
    recurring: list[PaymentMethodClass] = Field(default_factory=lambda: ["card"])
    # A failed renewal leaves the subscription past_due with access for this many days, then
    # it expires. 0: access ends when the payment fails.
    past_due_grace_days: int = Field(3, ge=0, le=60)
    # Non-recurring methods (crypto, manual) get a reminder email this many days before the
    # period ends.
    renewal_reminder_days: int = Field(7, ge=1, le=60)


class FairUseSection(_Section):
    """Bandwidth shaping when one customer's use harms others. Measured in RAM only."""

    shaping: bool = False
    shaped_rate_mbit: int | None = Field(None, ge=1, le=100_000)
    # A node busier than this (uplink use, percent) shapes its heaviest current users.
    trigger_utilisation_percent: int = Field(90, ge=10, le=100)
    window_minutes: int = Field(15, ge=1, le=1440)
    monthly_data_cap_bytes: int | None = Field(None, ge=1)


class AffiliatesSection(_Section):
    """The affiliate program. No [affiliates] section (or ``enabled = false``): none."""

    enabled: bool = True
    payout_minimum_minor: int = Field(ge=0)
    currency: Currency
    payout_method: Literal["paypal", "bank_transfer", "crypto", "account_credit"]
    # Percent of a referred customer's first order; renewals earn ``renewal_percent`` (none:
    # renewals earn nothing) for ``renewal_months`` after the first order (none: for ever).
    commission_percent: int | None = Field(None, ge=1, le=100)
    renewal_percent: int | None = Field(None, ge=1, le=100)
    renewal_months: int | None = Field(None, ge=1, le=120)
    # How long the first-party cookie set by a referral link lasts.
    cookie_days: int = Field(30, ge=1, le=365)
    # A commission stays pending this long after its order was paid (none: the refund window
    # of [refunds], so no commission is paid out on an order that can still be refunded).
    holding_days: int | None = Field(None, ge=0, le=365)
    inactivity_termination_months: int | None = Field(None, ge=1, le=120)
    # An inactive affiliate is emailed this many days before the account ends.
    inactivity_notice_days: int = Field(14, ge=1, le=90)
    refund_rate_threshold_percent: int | None = Field(None, ge=1, le=100)
    # The refund rate counts the referred orders paid in this many days, and only once there
    # are at least ``refund_rate_min_orders`` of them.
    refund_rate_window_days: int = Field(90, ge=1, le=3650)
    refund_rate_min_orders: int = Field(10, ge=1, le=100_000)
    requires_website: bool = False
    forbid_self_referrals: bool = True
    # Order currency -> payout currency rate, as a decimal string ("EUR" = "1.08"); an order
    # in a currency not listed (and not the payout currency) earns no commission.
    exchange_rates: dict[Currency, str] = Field(default_factory=dict, max_length=200)
    # The scheduler pays out by itself (otherwise an administrator starts each batch).
    scheduled_payouts: bool = False
    # What an ended affiliate's payable balance becomes: paid out one last time, or held.
    payable_on_termination: Literal["pay", "hold"] = "pay"

    def holding(self, refunds: RefundsSection | None) -> int:
        """Days a commission is pending: the policy's, else the refund window."""
        if self.holding_days is not None:
            return self.holding_days
        return refunds.window_days if refunds is not None else 0


class AgeSection(_Section):
    attestation_required: bool = False
    minimum_age: int = Field(18, ge=13, le=21)
    allow_guardian_consent: bool = True
    allow_emancipated_minor: bool = True


class TermsProse(_Section):
    """One of the operator's own sections of the terms, in plain text."""

    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)
    # The section describes prohibited conduct: an account may be terminated for breaking it
    # (or one of its listed items). Sections like "General" or "Your rights" are not.
    prohibited_conduct: bool = False


class TermsSection(_Section):
    version: str = Field(min_length=1, max_length=64)
    effective_date: date
    continued_use_is_acceptance: bool = True
    sections: list[TermsProse] = Field(default_factory=list, max_length=100)


@dataclass
class PolicyParts:
    """The sections that parsed; a section that did not is None and its rules are skipped."""

    provider: ProviderSection | None = None
    privacy: PrivacySection | None = None
    plans: dict[str, PlanSection] | None = None
    trial: TrialSection | None = None
    network: NetworkSection | None = None
    refunds: RefundsSection | None = None
    payment_methods: PaymentMethodsSection | None = None
    fair_use: FairUseSection | None = None
    dns: DnsSection | None = None
    affiliates: AffiliatesSection | None = None
    age: AgeSection | None = None
    terms: TermsSection | None = None
    support: SupportSection | None = None
    # Every plan code in the file, broken plans included (``plans`` holds the valid ones).
    plan_codes: list[str] | None = None


_STRICT = 'privacy.mode = "strict"'


def _privacy_rules(privacy: PrivacySection) -> list[PolicyProblem]:
    problems = []
    retention = "privacy.connection_record_retention_days"
    if privacy.mode == "strict":
        if privacy.connection_record_retention_days is not None:
            problems.append(
                PolicyProblem(
                    retention, f"{retention} is set, but {_STRICT} keeps no connection records"
                )
            )
        if privacy.first_order_usage_counters:
            where = "privacy.first_order_usage_counters"
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} = true keeps per-customer byte and session counts, but "
                    f"{_STRICT} forbids storing them",
                )
            )
        if privacy.client_ips_in_logs:
            where = "privacy.client_ips_in_logs"
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} = true, but {_STRICT} forbids client IP addresses in logs",
                )
            )
    elif privacy.connection_record_retention_days is None:
        problems.append(
            PolicyProblem(
                retention,
                f'{retention} is missing, but privacy.mode = "metered" keeps connection '
                "records and must say for how many days",
            )
        )
    login = "privacy.last_login_ip_retention_days"
    if privacy.store_last_login_ip and privacy.last_login_ip_retention_days is None:
        problems.append(
            PolicyProblem(
                login,
                f"{login} is missing, but privacy.store_last_login_ip = true must say for how "
                "many days the address is kept",
            )
        )
    if not privacy.store_last_login_ip and privacy.last_login_ip_retention_days is not None:
        problems.append(
            PolicyProblem(
                login,
                f"{login} is set, but privacy.store_last_login_ip = false stores no login address",
            )
        )
    return problems


def _plan_rules(plans: dict[str, PlanSection]) -> list[PolicyProblem]:
    problems = []
    for code, plan in plans.items():
        devices, connections = plan.device_limit, plan.simultaneous_connections
        if devices is not None and connections is not None and devices < connections:
            where = f"plans.{code}.device_limit"
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} ({devices}) is below plans.{code}.simultaneous_connections "
                    f"({connections})",
                )
            )
    return problems


def _usage_limit_rules(parts: PolicyParts) -> list[PolicyProblem]:
    refunds, privacy = parts.refunds, parts.privacy
    if refunds is None or privacy is None:
        return []
    problems = []
    limits = (
        ("refunds.max_data_bytes", refunds.max_data_bytes, "byte counts"),
        ("refunds.max_sessions", refunds.max_sessions, "session counts"),
    )
    for where, limit, what in limits:
        if limit is None:
            continue
        if privacy.mode == "strict":
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} needs per-customer {what}, but {_STRICT} forbids storing them",
                )
            )
        elif not privacy.first_order_usage_counters:
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} needs per-customer {what}, but "
                    "privacy.first_order_usage_counters = false does not keep them",
                )
            )
    counted = refunds.max_data_bytes is not None or refunds.max_sessions is not None
    if (
        counted
        and privacy.mode == "metered"
        and privacy.first_order_usage_counters
        and not refunds.first_order_only
    ):
        where = "refunds.first_order_only"
        problems.append(
            PolicyProblem(
                where,
                f"{where} = false also refunds later orders, but "
                "privacy.first_order_usage_counters counts the first order's usage only, "
                "which the usage limits of [refunds] need",
            )
        )
    return problems


def _refund_rules(refunds: RefundsSection) -> list[PolicyProblem]:
    problems = []
    if refunds.partial_past_data_limit is not None and refunds.max_data_bytes is None:
        where = "refunds.partial_past_data_limit"
        problems.append(
            PolicyProblem(
                where,
                f"{where} is set, but refunds.max_data_bytes is not: there is no data limit "
                "to be past",
            )
        )
    partial = refunds.partial_past_data_limit
    if partial is not None and partial.usage_charged and partial.data_price_minor_per_gb is None:
        where = "refunds.partial_past_data_limit.data_price_minor_per_gb"
        problems.append(
            PolicyProblem(
                where,
                f"{where} is missing, but refunds.partial_past_data_limit.usage_charged is "
                "on: name the price of the data used, which the partial refund subtracts",
            )
        )
    if refunds.auto_approve and refunds.condition is not None:
        where = "refunds.auto_approve"
        problems.append(
            PolicyProblem(
                where,
                f"{where} = true approves requests without a person, but refunds.condition "
                "needs a person to judge it",
            )
        )
    return problems


# Ports below this are left to the node itself; the blocks share the rest.
NAT_FIRST_PORT = 1024


def _nat_rules(parts: PolicyParts) -> list[PolicyProblem]:
    network, privacy = parts.network, parts.privacy
    if network is None:
        return []
    problems = []
    history = "privacy.address_history_retention_days"
    deterministic = network.nat == "deterministic"
    if deterministic:
        used = network.nat_ports_per_device * network.nat_devices_per_egress_ip
        if used > 65536 - NAT_FIRST_PORT:
            where = "network.nat_devices_per_egress_ip"
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} ({network.nat_devices_per_egress_ip}) blocks of "
                    f"network.nat_ports_per_device ({network.nat_ports_per_device}) ports need "
                    f"{used} ports, but an egress address has {65536 - NAT_FIRST_PORT} from "
                    f"port {NAT_FIRST_PORT} on",
                )
            )
    if privacy is None:
        return problems
    if deterministic and privacy.mode == "strict":
        problems.append(
            PolicyProblem(
                "network.nat",
                'network.nat = "deterministic" ties every port to one device, which (with the '
                f"history of tunnel addresses it needs) traces traffic to an account, but "
                f"{_STRICT} promises that nothing can",
            )
        )
    elif deterministic and privacy.address_history_retention_days is None:
        problems.append(
            PolicyProblem(
                history,
                f'{history} is missing, but network.nat = "deterministic" keeps the history of '
                "which device held which tunnel address and must say for how many days",
            )
        )
    if not deterministic and privacy.address_history_retention_days is not None:
        problems.append(
            PolicyProblem(
                history,
                f'{history} is set, but network.nat = "{network.nat}" keeps no history of '
                "tunnel addresses",
            )
        )
    return problems


def _affiliate_rules(
    affiliates: AffiliatesSection, refunds: RefundsSection | None
) -> list[PolicyProblem]:
    problems = []
    holding = affiliates.holding_days
    if holding is not None and refunds is not None and holding < refunds.window_days:
        where = "affiliates.holding_days"
        problems.append(
            PolicyProblem(
                where,
                f"{where} ({holding}) is shorter than refunds.window_days "
                f"({refunds.window_days}): a commission would be paid out on an order that "
                "can still be refunded",
            )
        )
    for currency, rate in affiliates.exchange_rates.items():
        try:
            good = Decimal(rate).is_finite() and Decimal(rate) > 0
        except InvalidOperation:
            good = False
        if not good:
            where = f"affiliates.exchange_rates.{currency}"
            problems.append(
                PolicyProblem(where, f'{where} must be a positive decimal such as "1.08"')
            )
    if affiliates.renewal_months is not None and affiliates.renewal_percent is None:
        where = "affiliates.renewal_months"
        problems.append(
            PolicyProblem(
                where,
                f"{where} is set, but affiliates.renewal_percent is not: renewals earn nothing",
            )
        )
    return problems


def cross_check(parts: PolicyParts) -> list[PolicyProblem]:
    """Every contradiction between the sections that parsed, each naming both sides."""
    problems: list[PolicyProblem] = []
    if parts.privacy is not None:
        problems += _privacy_rules(parts.privacy)
    if parts.plans is not None:
        problems += _plan_rules(parts.plans)
        codes = parts.plan_codes if parts.plan_codes is not None else list(parts.plans)
        trial = parts.trial
        if trial is not None and trial.plan not in codes:
            problems.append(
                PolicyProblem(
                    "trial.plan",
                    f"trial.plan names '{trial.plan}', which is not in [plans] (the plans are: "
                    f"{', '.join(codes)})",
                )
            )
    problems += _usage_limit_rules(parts)
    if parts.refunds is not None:
        problems += _refund_rules(parts.refunds)
    if parts.affiliates is not None:
        problems += _affiliate_rules(parts.affiliates, parts.refunds)
    methods = parts.payment_methods
    if methods is not None:
        for method in methods.recurring:
            if method not in methods.offered:
                problems.append(
                    PolicyProblem(
                        "payment_methods.recurring",
                        f"payment_methods.recurring lists '{method}', but "
                        "payment_methods.offered does not offer it",
                    )
                )
    fair_use = parts.fair_use
    if fair_use is not None:
        if fair_use.shaping and fair_use.shaped_rate_mbit is None:
            where = "fair_use.shaped_rate_mbit"
            problems.append(
                PolicyProblem(
                    where,
                    f"{where} is missing, but fair_use.shaping = true needs a rate to shape to",
                )
            )
        if fair_use.monthly_data_cap_bytes is not None:
            where = "fair_use.monthly_data_cap_bytes"
            if parts.privacy is not None and parts.privacy.mode == "strict":
                rule = (
                    f"{where} needs per-customer byte counts over a month, but {_STRICT} "
                    "forbids storing them"
                )
            else:
                # The terms would promise a cap that no part of burrow enforces yet.
                rule = (
                    "burrow does not enforce a monthly data cap yet, so the terms "
                    "cannot promise one; remove it and use fair_use.shaping"
                )
            problems.append(PolicyProblem(where, rule))
    problems += _nat_rules(parts)
    if parts.network is not None and not parts.network.shared_egress_ips:
        where = "network.shared_egress_ips"
        problems.append(
            PolicyProblem(
                where,
                f"{where} = false asks for dedicated addresses, which burrow does not offer: "
                "each node has one egress address that its customers share",
            )
        )
    return problems


class Policy(_Section):
    provider: ProviderSection
    privacy: PrivacySection
    plans: dict[str, PlanSection] = Field(min_length=1)
    trial: TrialSection | None = None
    network: NetworkSection = Field(default_factory=NetworkSection)
    refunds: RefundsSection | None = None
    payment_methods: PaymentMethodsSection = Field(default_factory=PaymentMethodsSection)
    fair_use: FairUseSection = Field(default_factory=FairUseSection)
    dns: DnsSection = Field(default_factory=DnsSection)
    affiliates: AffiliatesSection | None = None
    age: AgeSection = Field(default_factory=AgeSection)
    terms: TermsSection
    support: SupportSection = Field(default_factory=SupportSection)

    @model_validator(mode="after")
    def _cross_rules(self) -> Policy:
        problems = cross_check(self.parts())
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        return self

    def parts(self) -> PolicyParts:
        return PolicyParts(**{name: getattr(self, name) for name in type(self).model_fields})
