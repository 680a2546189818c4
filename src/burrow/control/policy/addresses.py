"""Finding IP address literals in free text, for the log filter and ``burrow audit``.

A cheap pattern finds candidates; ``ipaddress`` decides, so "12:30:45", MAC addresses and
version strings like "1.2.3" are not addresses, while "192.0.2.44", "[2001:db8::1]:51820" and
"::ffff:192.0.2.1" are. Imports the standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REMOVED = "[ip removed]"

_V4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_CANDIDATE = re.compile(
    # IPv6 first (it may end in an embedded IPv4), then IPv4; neither may touch a word.
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:" + _V4 + r"|[0-9A-Fa-f]{0,4})(?:%[\w.-]+)?(?![\w:])"
    r"|(?<![\w.])" + _V4 + r"(?![\w]|\.\d)"
)

# Addresses that never identify a customer: this host, and "any address".
ALWAYS_ALLOWED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("0.0.0.0/32"),
    ipaddress.ip_network("::/128"),
)


@dataclass(frozen=True)
class AddressMatch:
    start: int
    end: int
    address: IPAddress

    @property
    def masked(self) -> str:
        """The address with its host part hidden, for reports that should not copy it."""
        if isinstance(self.address, ipaddress.IPv4Address):
            head = str(self.address).rsplit(".", 1)[0]
            return f"{head}.*"
        network = ipaddress.ip_network(f"{self.address}/48", strict=False)
        return f"{network.network_address}*"

    @property
    def kind(self) -> str:
        return f"IPv{self.address.version} address"


def _parse(text: str) -> tuple[IPAddress, int] | None:
    """The address a candidate holds and how many characters of it belong to the address."""
    candidates = [text]
    if text.endswith(":") and not text.endswith("::"):
        candidates.append(text.rstrip(":"))  # "2001:db8::1: refused" ends a sentence
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate.split("%", 1)[0]), len(candidate)
        except ValueError:
            continue
    return None


def find_addresses(text: str) -> Iterator[AddressMatch]:
    """Every IP address literal in ``text``, in order."""
    for match in _CANDIDATE.finditer(text):
        parsed = _parse(match.group())
        if parsed is not None:
            address, length = parsed
            yield AddressMatch(match.start(), match.start() + length, address)


def is_allowed(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address.version == net.version and address in net for net in networks)


def redact(text: str, allowed: Iterable[IPNetwork] = ALWAYS_ALLOWED) -> str:
    """``text`` with every address outside ``allowed`` replaced by ``[ip removed]``."""
    networks = tuple(allowed)
    pieces: list[str] = []
    last = 0
    for found in find_addresses(text):
        if is_allowed(found.address, networks):
            continue
        pieces.append(text[last : found.start])
        pieces.append(REMOVED)
        last = found.end
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)
