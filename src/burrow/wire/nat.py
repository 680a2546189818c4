"""Deterministic NAT (RFC 7422): which port block of which egress address a tunnel address uses.

A device's block follows from its tunnel address alone, so a complaint naming (egress address,
port, time) finds the tunnel address by arithmetic, without any per-connection log. The node
agent renders its NAT rules from these functions and the control plane reverses them; both
read the same ``NatSpec``. Imports the standard library and ``burrow.wire.models`` only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from burrow.wire.models import NatSpec

# The pool's network address and the node's gateway take offsets 0 and 1; devices start at 2.
FIRST_DEVICE_OFFSET = 2


@dataclass(frozen=True, slots=True)
class PortBlock:
    """One device's share of one egress address: ports ``first``..``last``, both included."""

    egress_index: int
    first: int
    last: int

    @property
    def ports(self) -> str:
        return f"{self.first}-{self.last}"


def capacity(spec: NatSpec, egress_addresses: int) -> int:
    """How many devices the node's egress addresses hold, one block each."""
    return spec.devices_per_egress_ip * egress_addresses


def block_for_offset(spec: NatSpec, offset: int, egress_addresses: int) -> PortBlock | None:
    """The block of the tunnel address ``offset`` places after the pool's start; None: beyond
    what the node's egress addresses hold (the node refuses that device's traffic)."""
    slot = offset - FIRST_DEVICE_OFFSET
    if slot < 0 or slot >= capacity(spec, egress_addresses):
        return None
    egress_index, block = divmod(slot, spec.devices_per_egress_ip)
    first = spec.first_port + block * spec.ports_per_device
    return PortBlock(egress_index, first, first + spec.ports_per_device - 1)


def offset_for_port(spec: NatSpec, egress_index: int, port: int) -> int | None:
    """The tunnel address offset whose block holds ``port`` on egress address ``egress_index``;
    None when the port lies in no block."""
    if port < spec.first_port:
        return None
    block = (port - spec.first_port) // spec.ports_per_device
    if block >= spec.devices_per_egress_ip:
        return None
    return FIRST_DEVICE_OFFSET + egress_index * spec.devices_per_egress_ip + block


def tunnel_offset(pool: str, address: str) -> int:
    """How far ``address`` lies from the start of ``pool``."""
    network = ipaddress.ip_network(pool)
    host = ipaddress.ip_address(address.split("/", 1)[0])
    if host.version != network.version or host not in network:
        raise ValueError(f"{address} is not in the tunnel pool {pool}")
    return int(host) - int(network.network_address)


def tunnel_address(pool: str, offset: int) -> str:
    """The address ``offset`` places after the start of ``pool``."""
    network = ipaddress.ip_network(pool)
    if not 0 <= offset < network.num_addresses:
        raise ValueError(f"offset {offset} is outside the tunnel pool {pool}")
    return str(network.network_address + offset)
