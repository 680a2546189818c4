"""Who may connect over OpenVPN: the decision the management hook makes, from desired state.

Pure: no I/O, no clock. The node's desired peers (``PeerSpec``) carry each device's OpenVPN
credential (username and verifier), its subscription's opaque key and per-server limits. A
client's username and password are checked against them here, on the node alone, so a node
whose control plane is down keeps admitting valid devices and refusing revoked ones.

``CredentialIndex`` is built once per desired revision (O(devices)); a decision is then one
dict look-up, one SHA-256 and a count over this node's own OpenVPN sessions.

Imports ``burrow.wire`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from burrow.wire import PeerSpec, check_openvpn_secret

OPENVPN = "openvpn"

# What a refused client is shown. Wrong name and wrong password read the same, on purpose.
BAD_CREDENTIALS = "Wrong username or password, or these credentials were revoked."


@dataclass(frozen=True, slots=True)
class Account:
    """What the node needs of one device to admit it over OpenVPN."""

    public_key: str
    verifier: str
    subscription: str | None
    per_server: int | None
    ipv4: str
    ipv6: str


@dataclass(frozen=True, slots=True)
class Admit:
    account: Account


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str  # shown to the client
    log_reason: str  # a word for the node's log: never a name, key or address
    # The device refused over a limit (its credentials were good); None for bad credentials.
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One admitted OpenVPN connection on this node (any of its processes)."""

    session_id: str
    public_key: str
    subscription: str | None


def _host(allowed_ips: Iterable[str], version: int) -> str:
    # Allowed IPs come validated and canonical ("10.64.0.2/32", "fd42:b0::2/128"): string
    # work is enough, and ten times cheaper than parsing 10,000 of them on every revision.
    for network in allowed_ips:
        address, _, _prefix = network.partition("/")
        if (":" in address) == (version == 6):
            return address
    return ""


class CredentialIndex:
    """Username -> device, for the OpenVPN credentials of one desired revision."""

    def __init__(self, peers: Mapping[str, PeerSpec] | Iterable[PeerSpec]) -> None:
        values = peers.values() if isinstance(peers, Mapping) else peers
        self._by_username: dict[str, Account] = {}
        for peer in values:
            credential = peer.credential(OPENVPN)
            if credential is None:
                continue
            self._by_username[credential.username] = Account(
                public_key=peer.public_key,
                verifier=credential.verifier,
                subscription=peer.subscription,
                per_server=peer.per_server_limit(OPENVPN),
                ipv4=_host(peer.allowed_ips, 4),
                ipv6=_host(peer.allowed_ips, 6),
            )

    def __len__(self) -> int:
        return len(self._by_username)

    def get(self, username: str) -> Account | None:
        return self._by_username.get(username)

    def still_valid(self, username: str, public_key: str, verifier: str) -> bool:
        """Is a session admitted with these credentials still allowed?"""
        account = self._by_username.get(username)
        return (
            account is not None
            and account.public_key == public_key
            and account.verifier == verifier
        )


def per_server_reason(limit: int) -> str:
    noun = "OpenVPN connection" if limit == 1 else "OpenVPN connections"
    return (
        f"Your plan allows {limit} {noun} per server; connect to another server, or disconnect "
        "another device from this one."
    )


def decide(
    index: CredentialIndex,
    username: str,
    password: str,
    sessions: Iterable[LiveSession],
    *,
    blocked: Mapping[str, str] | None = None,
) -> Admit | Refuse:
    """Admit or refuse a new connection.

    ``sessions``: this node's admitted OpenVPN sessions; a session of the same device is not
    counted (it is replaced by the new one). ``blocked``: public key -> reason, the devices
    the control plane last said are over a limit on this node.
    """
    account = index.get(username)
    if account is None or not check_openvpn_secret(account.verifier, password):
        return Refuse(BAD_CREDENTIALS, "credentials")
    if blocked and account.public_key in blocked:
        reason = blocked[account.public_key] or "Over a limit of your plan."
        return Refuse(reason, "limit", account.public_key)
    if account.per_server is not None and account.subscription is not None:
        others = {
            s.public_key
            for s in sessions
            if s.subscription == account.subscription and s.public_key != account.public_key
        }
        if len(others) >= account.per_server:
            reason = per_server_reason(account.per_server)
            return Refuse(reason, "per-server limit", account.public_key)
    return Admit(account)
