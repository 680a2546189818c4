"""The arithmetic of deterministic NAT over several egress addresses (RFC 7422)."""

from __future__ import annotations

from burrow.wire import NatSpec
from burrow.wire.nat import (
    FIRST_DEVICE_OFFSET,
    PortBlock,
    block_for_offset,
    capacity,
    offset_for_port,
)

SPEC = NatSpec(mode="deterministic", ports_per_device=100, devices_per_egress_ip=4)


def test_capacity_is_addresses_times_blocks() -> None:
    assert capacity(SPEC, 1) == 4
    assert capacity(SPEC, 3) == 12


def test_a_block_is_an_address_index_and_a_block_index() -> None:
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET, 2) == PortBlock(0, 1024, 1123)
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET + 3, 2) == PortBlock(0, 1324, 1423)
    # The fifth device starts over on the second address.
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET + 4, 2) == PortBlock(1, 1024, 1123)
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET + 7, 2) == PortBlock(1, 1324, 1423)


def test_beyond_the_addresses_blocks_there_is_no_block() -> None:
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET + 8, 2) is None
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET + 4, 1) is None
    assert block_for_offset(SPEC, FIRST_DEVICE_OFFSET - 1, 2) is None


def test_a_port_on_an_address_leads_back_to_its_tunnel_offset() -> None:
    for offset in range(FIRST_DEVICE_OFFSET, FIRST_DEVICE_OFFSET + capacity(SPEC, 3)):
        block = block_for_offset(SPEC, offset, 3)
        assert block is not None
        for port in (block.first, block.last):
            assert offset_for_port(SPEC, block.egress_index, port) == offset
    assert offset_for_port(SPEC, 1, 1023) is None
    assert offset_for_port(SPEC, 1, 1424) is None
