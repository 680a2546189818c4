"""Settings of one node agent process, read once from ``BURROW_NODE_*`` variables.

The command line (``burrow node run --state-dir ... --netns ...``) overrides them. Nothing
here is a secret: the node's private key and token live in the identity file (``identity``).

Imports pydantic only.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path("/var/lib/burrow-node")


class NodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BURROW_NODE_", extra="ignore")

    state_dir: Path = Field(
        DEFAULT_STATE_DIR, description="Holds the identity file, the one file the node keeps."
    )
    netns: str | None = Field(
        None, description="Run the WireGuard interface and the firewall in this network namespace."
    )
    egress_interface: str | None = Field(
        None,
        description="Where customers' traffic leaves (NAT); default: the default route's device.",
    )
    interface: str | None = Field(
        None,
        max_length=15,
        description="The WireGuard interface's name; default: the one the control plane gave at "
        "enrollment. Names are host-wide (one socket directory for all namespaces).",
    )
    wireguard_go: str = Field("wireguard-go", description="The wireguard-go program to run.")

    # The resolver (Unbound behind one dnsmasq per filter choice).
    runtime_dir: Path = Field(
        Path("/run/burrow-node"),
        description="Resolver configuration and filter lists (a tmpfs: nothing of it must "
        "outlive the machine). One subdirectory per WireGuard interface.",
    )
    resolver_upstream_port: int = Field(
        5335, ge=1, le=65535, description="Unbound's port on the node's loopback."
    )
    resolver_stub_zones: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Private zones the resolver asks these authoritative servers for "
        '(JSON, e.g. {"corp.example.": ["192.0.2.53"]}); they are unsigned.',
    )

    # Talking to the control plane.
    long_poll_seconds: float = Field(
        25.0, gt=0, le=3600, description="How long one request for changes may wait."
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="Connect and answer timeout of every other request."
    )
    backoff_initial_seconds: float = Field(
        0.5, gt=0, description="First wait after the control plane could not be reached."
    )
    backoff_max_seconds: float = Field(30.0, gt=0, description="Cap of the doubling wait.")

    # Supervision and status.
    supervise_interval_seconds: float = Field(
        1.0, gt=0, description="How often wireguard-go is checked (and restarted if it died)."
    )
    report_interval_seconds: float = Field(
        5.0, gt=0, description="How often status goes up to the control plane."
    )
    idle_threshold_seconds: float = Field(
        180.0, gt=0, description="A peer is connected while its last handshake is younger."
    )

    # IKEv2 (strongSwan's charon, driven over vici).
    ikev2_host: str | None = Field(
        None,
        max_length=253,
        description="The name (or address) IKEv2 clients dial: the node's server certificate "
        "names it. Unset: the node serves no IKEv2.",
    )
    charon: str = Field("/usr/lib/ipsec/charon", description="strongSwan's charon to run.")
    ikev2_interface: str = Field(
        "ipsec0",
        max_length=15,
        description="The TUN device kernel-libipsec makes in the node's namespace for IKEv2.",
    )

    # Fair use.
    uplink_mbit: int | None = Field(
        None,
        ge=1,
        description="The uplink's bandwidth in Mbit/s, for fair-use shaping, when the control "
        "plane does not name one for this node.",
    )

    # OpenVPN (one openvpn process per transport, decided by the agent).
    openvpn: bool = Field(
        True, description="Serve OpenVPN too (when the openvpn program is installed)."
    )
    openvpn_program: str = Field("openvpn", description="The openvpn 2.6 program to run.")
    openvpn_transports: list[str] = Field(
        default_factory=lambda: ["udp:1194", "tcp:443"],
        description='One server process each, "udp:PORT" or "tcp:PORT" (JSON list).',
    )
