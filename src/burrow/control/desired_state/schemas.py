"""Plain values the desired state passes between its service and its repository.

The lowest layer of the room: imports the models' enums and nothing else of burrow.
What goes over the wire to nodes lives in ``burrow.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from burrow.control.models import PeerChangeOp


class PeerAddresses(NamedTuple):
    """A peer as every node serves it: the key and the device's tunnel addresses."""

    public_key: str
    ipv4: str
    ipv6: str


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change log. ``revision`` is 0 until the row is written."""

    op: PeerChangeOp
    peer: PeerAddresses
    device_id: int
    revision: int = 0
