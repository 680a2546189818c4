"""Finding IP address literals in free text: addresses yes, look-alikes no."""

from __future__ import annotations

import ipaddress

import pytest

from burrow.control.policy.addresses import REMOVED, find_addresses, redact


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("client 192.0.2.44 connected", ["192.0.2.44"]),
        ("peer [2001:db8::7]:51820 up", ["2001:db8::7"]),
        ("refused by 2001:db8::1: timeout", ["2001:db8::1"]),
        ("mapped ::ffff:198.51.100.9", ["::ffff:c633:6409"]),
        ("link fe80::1%eth0", ["fe80::1"]),
        ("('203.0.113.5', 443)", ["203.0.113.5"]),
        ("a=198.51.100.1,b=198.51.100.2.", ["198.51.100.1", "198.51.100.2"]),
        ("at 12:30:45.123 nothing", []),
        ("mac aa:bb:cc:dd:ee:ff", []),
        ("version 1.2.3 and 1.2.3.4.5", []),
        ("not an address 999.1.1.1", []),
        ("C++ std::vector", []),
    ],
)
def test_find_addresses(text: str, found: list[str]) -> None:
    assert [str(match.address) for match in find_addresses(text)] == found


def test_redact_keeps_loopback_and_what_is_allowed() -> None:
    text = "from 192.0.2.44 via 127.0.0.1 to 10.64.0.9 and [2001:db8::1]:443"
    assert redact(text) == f"from {REMOVED} via 127.0.0.1 to {REMOVED} and [{REMOVED}]:443"
    pools = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.64.0.0/10"))
    assert redact(text, pools) == f"from {REMOVED} via 127.0.0.1 to 10.64.0.9 and [{REMOVED}]:443"


def test_masked_hides_the_host_part() -> None:
    v4, v6 = list(find_addresses("192.0.2.44 2001:db8:1:2::99"))
    assert v4.masked == "192.0.2.*"
    assert v6.masked == "2001:db8:1::*"
