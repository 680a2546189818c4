"""The uplink budget of a node's reports, as a table."""

from __future__ import annotations

import pytest

from burrow.control.nodes.uplink import (
    DEFAULT_UPLINK_MBIT,
    UPLINK_MARGIN,
    Credit,
    clamp,
    rate_bytes,
    refill,
)
from burrow.wire import PeerStatus


def peer(n: int, rx: int, tx: int) -> PeerStatus:
    return PeerStatus(public_key=f"{n:043d}=", connected=True, rx_bytes=rx, tx_bytes=tx)


def test_the_rate_is_the_uplink_with_its_margin() -> None:
    assert rate_bytes(8) == 1_000_000 * UPLINK_MARGIN
    assert rate_bytes(None) == rate_bytes(DEFAULT_UPLINK_MBIT)


@pytest.mark.parametrize(
    ("previous", "elapsed", "expected"),
    [
        pytest.param(None, 0.0, Credit(150, 150), id="a node not seen yet starts full"),
        pytest.param(Credit(0, 20), 5.0, Credit(50, 70), id="credit fills with time"),
        pytest.param(Credit(140, 0), 60.0, Credit(150, 150), id="up to one window"),
        pytest.param(Credit(3, 3), -5.0, Credit(3, 3), id="a clock step back gives nothing"),
    ],
)
def test_refill(previous: Credit | None, elapsed: float, expected: Credit) -> None:
    assert refill(previous, elapsed, rate=10, window=15) == expected


def test_within_the_credit_nothing_changes() -> None:
    peers = (peer(1, 10, 20), peer(2, 30, 0))
    kept, left, dropped = clamp(peers, Credit(100, 100))
    assert (kept, left, dropped) == (peers, Credit(60, 80), 0)


def test_past_the_credit_each_peer_keeps_its_share() -> None:
    peers = (peer(1, 300, 10), peer(2, 100, 10))
    kept, left, dropped = clamp(peers, Credit(100, 100))
    assert [(p.rx_bytes, p.tx_bytes) for p in kept] == [(75, 10), (25, 10)]
    assert left == Credit(0, 80)
    assert dropped == 300


def test_sixty_terabytes_in_one_report_are_cut_to_the_credit() -> None:
    credit = refill(None, 0, rate_bytes(100), 15)
    kept, left, dropped = clamp((peer(1, 30 * 10**12, 30 * 10**12),), credit)
    assert kept[0].rx_bytes + kept[0].tx_bytes <= credit.rx + credit.tx
    assert dropped >= 60 * 10**12 - credit.rx - credit.tx
    # Reporting again at once finds the credit spent (but for the rounding of a byte).
    again, _, _ = clamp((peer(1, 10**9, 10**9),), refill(left, 0.0, rate_bytes(100), 15))
    assert again[0].rx_bytes + again[0].tx_bytes <= 2
