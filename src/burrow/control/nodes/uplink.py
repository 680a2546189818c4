"""What a node's uplink can physically carry, and the report cut down to it. Pure.

A node's byte counts are its own word; a hostile node could report 60 TB for one customer.
Each node has a byte credit per direction that fills at its uplink's rate (times a margin for
the jitter between when the agent measures and when its report arrives), up to what one
lease's lifetime of traffic could be; a report spends it. Traffic past the credit is dropped
(each peer's share cut in proportion) and counted, so the fleet page and ``/metrics`` can
flag the node. A node reporting more often gets no more credit: it fills with time only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from burrow.wire import PeerStatus

# The jitter between the agent's measuring and the arrival of its reports, and counters read
# a moment apart, make an honest node at full load report a little over its rate at times.
UPLINK_MARGIN = 1.5
# A node with no uplink set in its row is taken to carry at most this (Mbit/s, each way).
DEFAULT_UPLINK_MBIT = 10_000


@dataclass(frozen=True)
class Credit:
    """Bytes a node may still report, from its peers (rx) and to them (tx)."""

    rx: float
    tx: float


def rate_bytes(uplink_mbit: int | None) -> float:
    """Bytes per second a node's reports may carry each way, margin included."""
    mbit = uplink_mbit if uplink_mbit is not None else DEFAULT_UPLINK_MBIT
    return mbit * 1_000_000 / 8 * UPLINK_MARGIN


def refill(previous: Credit | None, elapsed: float, rate: float, window: float) -> Credit:
    """The credit ``elapsed`` seconds after ``previous`` (None: a node not seen yet, full)."""
    cap = rate * window
    if previous is None:
        return Credit(cap, cap)
    gain = rate * max(0.0, elapsed)
    return Credit(min(cap, previous.rx + gain), min(cap, previous.tx + gain))


def _scale(values: list[int], credit: float) -> tuple[list[int], float, int]:
    total = sum(values)
    if total <= credit:
        return values, credit - total, 0
    kept = [int(v * credit // total) for v in values]
    return kept, max(0.0, credit - sum(kept)), total - sum(kept)


def clamp(
    peers: Sequence[PeerStatus], credit: Credit
) -> tuple[tuple[PeerStatus, ...], Credit, int]:
    """The peers with their bytes cut to the credit, the credit left, the bytes dropped."""
    rx, rx_left, rx_dropped = _scale([p.rx_bytes for p in peers], credit.rx)
    tx, tx_left, tx_dropped = _scale([p.tx_bytes for p in peers], credit.tx)
    if not rx_dropped and not tx_dropped:
        return tuple(peers), Credit(rx_left, tx_left), 0
    kept = tuple(
        peer.model_copy(update={"rx_bytes": r, "tx_bytes": t})
        for peer, r, t in zip(peers, rx, tx, strict=True)
    )
    return kept, Credit(rx_left, tx_left), rx_dropped + tx_dropped
