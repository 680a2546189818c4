"""Plain values the desired state passes between its service and its repository.

The lowest layer of the room: imports the models' enums and nothing else of burrow.
What goes over the wire to nodes lives in ``burrow.wire``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from burrow.control.models import PeerChangeOp


class PeerAddresses(NamedTuple):
    """A peer as every node serves it: the key, the device's tunnel addresses and its access.

    ``access`` is the canonical JSON of ``PeerAccess`` ("" where none was recorded), compared
    as a string so that a changed credential or limit is a change of the peer.
    """

    public_key: str
    ipv4: str
    ipv6: str
    access: str = ""


@dataclass(frozen=True, slots=True)
class PeerAccess:
    """What a node needs beyond the WireGuard key: credentials, subscription key, limits.

    ``credentials``: (protocol, username, verifier), sorted; ``per_server``: (protocol,
    limit), sorted; ``subscription``: an opaque key, the same for the subscription's devices.
    """

    credentials: tuple[tuple[str, str, str], ...] = ()
    subscription: str | None = None
    per_server: tuple[tuple[str, int], ...] = ()

    def dumps(self) -> str:
        return json.dumps(
            {
                "c": [list(c) for c in sorted(self.credentials)],
                "s": self.subscription,
                "l": [list(limit) for limit in sorted(self.per_server)],
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def loads(cls, text: str | None) -> PeerAccess:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            credentials=tuple((str(p), str(u), str(v)) for p, u, v in data.get("c", ())),
            subscription=data.get("s"),
            per_server=tuple((str(p), int(n)) for p, n in data.get("l", ())),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change log. ``revision`` is 0 until the row is written."""

    op: PeerChangeOp
    peer: PeerAddresses
    device_id: int
    revision: int = 0
