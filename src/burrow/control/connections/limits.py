"""The connection-limit decision: which of one account's connections may pass, and why not.

Pure: no I/O, no clock, table-tested. The service feeds it the account's live leases and its
plan's limits after every node report and turns the answer into each node's blocked set.

The rule, from the issue: when a connection would exceed a limit, the newest one is refused;
an older connection is never cut for a newer one; when a slot frees, the oldest refused
connection gets it. So the connections admitted before keep their places first (oldest
first, in case a lower limit now cuts some), then the others are considered oldest first.

Across nodes, a device is one connection however many nodes report it. A node cannot prove
that a device shook hands with it (WireGuard's handshake is deniable: a node can forge one
from any peer to itself), so a hostile node could otherwise claim a customer's devices before
they connect and make their real connections on honest nodes the "newest" ones to refuse.
With one slot per device, its claim of a device shares that device's slot and refuses nothing
elsewhere; a device moving between servers is not refused while the old server still
counts it either. The per-server rule still counts each node on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Literal

from burrow.control.policy.schemas import PROTOCOL_NAMES

Rule = Literal["simultaneous_connections", "connections_per_server"]


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What the decision needs to know of one live connection."""

    id: str
    order: tuple[float, int]  # (start time, arrival sequence): smaller is older
    node_id: int
    node_name: str
    protocol: str
    subscription_id: int | None
    admitted_before: bool = False
    device_id: int | None = None


@dataclass(frozen=True)
class Limits:
    """A plan's connection limits. None / a protocol left out: unlimited."""

    simultaneous: int | None = None
    per_server: Mapping[str, int] = field(default_factory=dict)


UNLIMITED = Limits()


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    limit: int
    reason: str


@dataclass(frozen=True)
class Decision:
    admitted: frozenset[str]
    refused: Mapping[str, Refusal]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@cache
def simultaneous_reason(limit: int) -> str:
    return (
        f"Your plan allows {_plural(limit, 'simultaneous connection')}; disconnect another device."
    )


@lru_cache(maxsize=4096)
def per_server_reason(limit: int, protocol: str, node_name: str) -> str:
    name = PROTOCOL_NAMES.get(protocol, protocol)
    return (
        f"Your plan allows {_plural(limit, name + ' connection')} per server; connect this "
        f"device to another server, or disconnect your other device from {node_name}."
    )


def node_refusal_reason(limit: int | None, protocol: str, node_name: str) -> str:
    """What a customer reads of a connection a node refused by itself: the plan's per-server
    rule when it has one for the protocol, otherwise a neutral way out."""
    if limit is not None:
        return per_server_reason(limit, protocol, node_name)
    name = PROTOCOL_NAMES.get(protocol, protocol)
    return (
        f"{node_name} refused this device over {name}; try again in a minute, or connect "
        "to another server."
    )


def decide(leases: Iterable[LeaseView], limits: Limits) -> Decision:
    """Admit or refuse each of one account's leases under its plan's limits."""
    ordered = sorted(leases, key=lambda lease: (not lease.admitted_before, lease.order))
    admitted: set[str] = set()
    refused: dict[str, Refusal] = {}
    per_server: dict[tuple[int | None, int, str], int] = {}
    # The devices holding a slot of the simultaneous limit (a lease without a device: itself).
    slots: set[int | str] = set()
    for lease in ordered:
        server_key = (lease.subscription_id, lease.node_id, lease.protocol)
        server_limit = limits.per_server.get(lease.protocol)
        slot = lease.device_id if lease.device_id is not None else lease.id
        if (
            limits.simultaneous is not None
            and slot not in slots
            and len(slots) >= limits.simultaneous
        ):
            refused[lease.id] = Refusal(
                "simultaneous_connections",
                limits.simultaneous,
                simultaneous_reason(limits.simultaneous),
            )
        elif server_limit is not None and per_server.get(server_key, 0) >= server_limit:
            refused[lease.id] = Refusal(
                "connections_per_server",
                server_limit,
                per_server_reason(server_limit, lease.protocol, lease.node_name),
            )
        else:
            admitted.add(lease.id)
            slots.add(slot)
            per_server[server_key] = per_server.get(server_key, 0) + 1
    return Decision(frozenset(admitted), refused)
