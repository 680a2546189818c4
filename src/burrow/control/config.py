"""Settings of one control-plane process, read once from ``BURROW_*`` variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "change-me-development-only"  # noqa: S105 - the known placeholder we refuse


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BURROW_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        "sqlite+aiosqlite:///./var/burrow.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    policy_path: Path = Path("examples/policies/strict-no-logs.toml")
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="Base URL used in emailed links and the node enrollment command. Unset: "
        "http://PUBLIC_HOST:PORT when BURROW_PUBLIC_HOST is set.",
    )
    public_host: str | None = Field(
        None,
        description="The DNS name or address customers' WireGuard apps reach this server at; "
        "the embedded node's endpoint. Unset: 127.0.0.1, which works on this machine only.",
    )

    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks of the reverse proxies (Caddy) "
        "whose X-Forwarded-For and X-Forwarded-Proto headers are believed. Empty: none; the "
        "headers of every other sender are ignored.",
    )

    log_file: Path | None = Field(
        None,
        description="Where `burrow serve` also writes its log (IP addresses removed as the "
        "policy says); `burrow audit` scans it and its rotated siblings.",
    )

    # Request bodies: larger ones are refused with 413 before anything parses them.
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="The most a request body may have on most routes."
    )
    node_report_max_body_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="The most a node's status report may have: sized for a node serving "
        "65,536 peers and more (each peer's line is under 200 bytes of JSON).",
    )

    # Email verification and notices.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "burrow <no-reply@localhost>"
    email_enabled: bool = Field(True, description="Off: verification links go to the log only.")
    inbound_smtp: str | None = Field(
        None,
        description="host:port where `burrow serve` listens for email to the support desk "
        "(replies to its notifications and new requests); unset, no listener. It accepts mail "
        "for the support address only and relays nothing.",
        pattern=r"^[^:\s]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$",
    )

    # Sessions.
    session_ttl_hours: int = Field(24 * 14, ge=1, description="A session's longest life.")
    session_idle_hours: int = Field(
        24 * 7, ge=1, description="A session unused for this long ends (within the maximum)."
    )
    session_touch_seconds: int = Field(
        60, ge=1, description="A session's last-use time is written at most this often."
    )

    # Rate limits (the `limits` library's notation: "5 per 15 minutes; 100 per hour"). Each
    # attempt is counted before it is checked. Clients are keyed digests of their address,
    # held in the rate-limit store only (RAM by default, never on disk).
    redis_url: str | None = Field(
        None,
        description="redis://host:6379/0: the live store (connection leases, node reports) "
        "shared by several replicas, and their wake-ups. Unset: this process's RAM only.",
    )
    rate_limit_storage_uri: str = Field(
        "async+memory://",
        description="Where rate limits count: async+memory:// (one process) or "
        "async+redis://host:6379 (several replicas).",
    )
    login_limit_account_client: str = Field(
        "5 per 15 minutes",
        description="Sign-in attempts for one account from one client: a wrong guesser slows "
        "down without locking the owner out elsewhere.",
    )
    login_limit_account: str = Field(
        "30 per 5 minutes; 100 per hour",
        description="Sign-in attempts for one account from everywhere: bites only under a "
        "distributed attack (OWASP ASVS 2.2.1: at most 100 failures an hour).",
    )
    login_known_client_days: float = Field(
        30,
        ge=0,
        description="A client that signed in to an account is remembered (a keyed digest, in "
        "the rate-limit store only) for this long: the account's wide bucket does not hold it "
        "back during a distributed attack. 0: remember none.",
    )
    login_limit_client: str = Field(
        "100 per 15 minutes",
        description="Sign-in attempts from one client, all accounts (many people may share "
        "an address, so it is wide).",
    )
    login_failure_notice: str = Field(
        "10 per hour",
        description="Failed sign-ins of one account past which its owner is emailed (at most "
        "once in that time).",
    )
    signup_limit_client: str = Field("10 per hour", description="Sign-ups from one client.")
    verification_resend_seconds: float = Field(
        60.0, ge=0, description="Least time between two verification emails to one account."
    )
    verification_ttl_hours: int = Field(48, ge=1)

    # Fleet-wide tunnel address pools: a device keeps its address on every node.
    tunnel_ipv4_pool: str = "10.64.0.0/10"
    tunnel_ipv6_pool: str = "fd42:b0::/48"
    # The DNS line of device configs; unset: the gateway addresses of the pools above, where
    # every node's resolver answers.
    client_dns: str | None = None
    wireguard_port: int = 51820
    peers_per_interface: int = Field(
        65_536,
        ge=2,
        le=65_536,
        description="Devices per WireGuard interface on a node (a power of two; wireguard-go "
        "takes at most 65,536). A node serves more over several interfaces, the n-th on its "
        "port + n; a device's interface follows from its tunnel address.",
    )
    tunnel_mtu: int = Field(1320, ge=1280, le=1500)
    max_devices_per_account: int = Field(
        500,
        ge=1,
        description="A safety cap under 'unlimited' plans, so one account cannot drain "
        "the address pool.",
    )

    # Node API.
    long_poll_timeout_seconds: float = Field(25.0, gt=0, le=120)
    revision_fallback_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often each replica's watcher reads the desired-state revision without "
        "being told it moved: the most a lost wake-up (or a change by the CLI) can cost.",
    )
    enrollment_ttl_hours: int = Field(24, ge=1)
    change_log_keep: int = Field(
        100_000,
        ge=10,
        description="Revisions kept for deltas; an older revision gets a full state.",
    )

    # Connection limits (leases in RAM) and, in metered mode, connection records.
    connection_idle_seconds: float = Field(
        180.0,
        gt=0,
        description="The node agents' idle threshold: a device counts as disconnected this "
        "long after its last handshake. Used in what customers are told.",
    )
    connection_lease_ttl_seconds: float = Field(
        15.0,
        gt=0,
        description="How long a connection lease lives without a node report renewing it "
        "(about three report intervals); a node that stops reporting frees its leases.",
    )
    connection_record_flush_seconds: float = Field(
        300.0,
        gt=0,
        description="Metered mode: how often an open connection's record is brought up to "
        "date, which bounds what a crash of the control plane loses.",
    )

    # Scheduler.
    # Stripe: the webhook endpoint's signing secret (whsec_...). Unset: the endpoint is 404.
    stripe_webhook_secret: SecretStr | None = None
    stripe_webhook_tolerance_seconds: int = Field(
        300, ge=1, description="Older signed deliveries are refused as replays."
    )
    # Stripe's API: the secret key refunds go out with; unset, Stripe refunds wait (and retry).
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = Field(
        None, description="Another address for Stripe's API (a test server); unset: Stripe's."
    )

    # CoinGate (crypto): the API key orders are made with. Unset: no crypto checkout, and the
    # callback endpoint is 404.
    coingate_api_key: SecretStr | None = None
    coingate_api_base: str = Field(
        "https://api.coingate.com",
        description="CoinGate's API (https://api-sandbox.coingate.com for its sandbox; a test "
        "server in tests); requests go to {base}/v2/...",
    )
    coingate_receive_currency: str = Field(
        "DO_NOT_CONVERT",
        description="The currency CoinGate settles in (EUR, USD, BTC ... or DO_NOT_CONVERT).",
    )

    # PayPal: the REST app's client id and secret (Orders, Payments, Subscriptions). Unset: no
    # PayPal checkout, and its webhook endpoint is 404.
    paypal_client_id: str | None = None
    paypal_client_secret: SecretStr | None = None
    # The id PayPal gave the webhook burrow listens on (its deliveries are verified against it).
    paypal_webhook_id: str | None = None
    paypal_api_base: str = Field(
        "live",
        description="PayPal's API: 'live' (https://api-m.paypal.com), 'sandbox' "
        "(https://api-m.sandbox.paypal.com), or another address (a test server).",
    )
    paypal_plan_ids: dict[str, str] = Field(
        default_factory=dict,
        description="PayPal billing plan id (P-...) for each burrow plan code that renews "
        "through PayPal; a plan not named here is sold through PayPal as a single payment.",
    )

    # GET /metrics (Prometheus): served only when a token is set, to callers that send it as a
    # bearer token. Unset: /metrics is 404.
    metrics_token: SecretStr | None = None

    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = Field(30.0, gt=0)

    # All-in-one: run a node agent inside `burrow serve`.
    embedded_node: bool = False
    embedded_node_name: str = Field(
        "local", description="The embedded node's name; its row is made on first start."
    )
    embedded_node_country: str = Field(
        "ZZ",
        description="ISO 3166 code of where the embedded node is, shown to customers (ZZ: "
        "not said).",
    )
    embedded_node_city: str = Field(
        "Unknown", description="The city the embedded node is in, shown to customers."
    )
    embedded_node_capacity: int = Field(
        1000, ge=1, description="Devices the embedded node serves at once at most."
    )

    @field_validator("peers_per_interface")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two (such as 4096 or 65536)")
        return value

    @field_validator("tunnel_ipv4_pool")
    @classmethod
    def _v4(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or net.prefixlen > 24:
            raise ValueError("must be an IPv4 network of /24 or larger")
        return str(net)

    @field_validator("tunnel_ipv6_pool")
    @classmethod
    def _v6(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 6 or net.prefixlen > 112:
            raise ValueError("must be an IPv6 network of /112 or larger")
        return str(net)

    @field_validator(
        "login_limit_account_client",
        "login_limit_account",
        "login_limit_client",
        "login_failure_notice",
        "signup_limit_client",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate limit; write it like '5 per 15 minutes; 100 per hour'"
            ) from exc
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"'{entry}' is not an IP address or network; list the proxies' addresses "
                    "separated by commas, such as 127.0.0.1,::1"
                ) from None
        return ",".join(entries)

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [entry for entry in self.trusted_proxies.split(",") if entry]

    @field_validator("public_host")
    @classmethod
    def _public_host(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().removeprefix("[").removesuffix("]")
        if "/" in value or " " in value or value.count(":") == 1:
            raise ValueError(
                "give only a DNS name or an IP address, such as vpn.example.net or 203.0.113.7 "
                "(no scheme, port or path)"
            )
        return value

    @model_validator(mode="after")
    def _public_url_from_host(self) -> Settings:
        if self.public_host is not None and "public_url" not in self.model_fields_set:
            host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
            self.public_url = f"http://{host}:{self.port}"
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        if self.environment == "production" and (secret == PLACEHOLDER_SECRET or len(secret) < 32):
            raise ValueError(
                "BURROW_SECRET_KEY must be set to a random value of at least 32 characters "
                "outside development (make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def mail_to_output(self) -> bool:
        """Whether emails go to the server's output instead of a mail server: development
        with no SMTP server configured (BURROW_SMTP_HOST unset)."""
        return (
            self.email_enabled
            and self.environment == "development"
            and "smtp_host" not in self.model_fields_set
        )

    @property
    def public_endpoint_host(self) -> str:
        """Where customers' apps reach this server: BURROW_PUBLIC_HOST, else the host of
        ``public_url``."""
        return self.public_host or urlsplit(self.public_url).hostname or "127.0.0.1"

    def loopback_notice(self) -> str | None:
        """One line for the operator when customers' configurations would name a loopback
        address nobody asked for; None when the public address was set."""
        if self.public_host is not None or "public_url" in self.model_fields_set:
            return None
        if not _is_loopback(self.public_endpoint_host):
            return None
        return (
            f"Customers' configurations point at {self.public_endpoint_host}, which works on "
            "this machine only: set BURROW_PUBLIC_HOST to the DNS name or address their apps "
            "reach (for example BURROW_PUBLIC_HOST=vpn.example.net make run)."
        )

    def public_link(self, path: str = "") -> str:
        """An absolute address on this server for emails and providers: ``path`` after
        ``public_url`` (a trailing slash there or not)."""
        return f"{self.public_url.rstrip('/')}{path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
