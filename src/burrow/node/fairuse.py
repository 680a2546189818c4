"""Fair use: which peers a busy node slows down, decided from traffic measured in RAM only.

The policy's ``[fair_use]`` reaches the node as ``NetworkSpec.fair_use``. Every status read
the agent turns the interface's byte counters into a ``Sample`` (bytes each peer moved since
the previous read) and keeps the samples of the last ``window`` in memory; nothing of it is
written anywhere or reported. ``decide`` is pure:

- the node's utilisation is the window's traffic in its busier direction over the uplink's
  bandwidth (a full-duplex link carries ``uplink_mbit`` each way);
- when it reaches the trigger, every peer that moved more than its fair share (the window's
  traffic divided by the peers that moved any) and more than the shaped rate would let it is
  shaped; peers already shaped stay shaped while the node is busy;
- the shaping is lifted once utilisation falls below ``RELEASE_FRACTION`` of the trigger, so
  that a node just under the trigger does not shape and unshape on every read.

Since utilisation is averaged over the window, a node whose heavy peers were shaped becomes
"less busy" about a window later and lifts the shaping; if they fill the link again, they are
shaped again. That is the promise of the terms: limited while the server is busy.

Imports ``burrow.wire`` and the UAPI peer type only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from burrow.node.drivers.uapi import WgPeer
from burrow.wire import FairUseSpec

# Lift shaping below this share of the trigger (90 % trigger: lift below 72 %).
RELEASE_FRACTION = 0.8
# A bound on what the window keeps, whatever the read interval: a day of 5-second reads.
MAX_SAMPLES = 17_280


@dataclass(frozen=True, slots=True)
class FairUseSettings:
    shaped_rate_mbit: int
    trigger_utilisation_percent: int
    window_seconds: float
    uplink_mbit: int

    @classmethod
    def from_spec(cls, spec: FairUseSpec, uplink_mbit: int) -> FairUseSettings:
        return cls(
            shaped_rate_mbit=spec.shaped_rate_mbit,
            trigger_utilisation_percent=spec.trigger_utilisation_percent,
            window_seconds=spec.window_minutes * 60.0,
            uplink_mbit=uplink_mbit,
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """Bytes each peer moved during the ``seconds`` before ``at`` (a monotonic time)."""

    at: float
    seconds: float
    # public key -> (bytes received from the peer, bytes sent to it)
    traffic: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Load:
    """What the window says: the utilisation in percent and each peer's bytes (both ways)."""

    utilisation_percent: float
    usage: Mapping[str, int]
    seconds: float


def measure(samples: Sequence[Sample], window_seconds: float, uplink_mbit: int) -> Load:
    """The load over the last ``window_seconds`` of ``samples`` (oldest first)."""
    if not samples:
        return Load(0.0, {}, 0.0)
    start = samples[-1].at - window_seconds
    usage: dict[str, int] = {}
    received = sent = 0
    seconds = 0.0
    for sample in samples:
        # A sample that began before the window still counts if it ended inside it: reads
        # are seconds apart and windows minutes long.
        if sample.at <= start:
            continue
        seconds += sample.seconds
        for key, (rx, tx) in sample.traffic.items():
            usage[key] = usage.get(key, 0) + rx + tx
            received += rx
            sent += tx
    if seconds <= 0:
        return Load(0.0, usage, 0.0)
    bits_per_second = max(received, sent) * 8 / seconds
    return Load(100.0 * bits_per_second / (uplink_mbit * 1_000_000), usage, seconds)


def decide(
    samples: Sequence[Sample], settings: FairUseSettings, shaped: Iterable[str] = ()
) -> frozenset[str]:
    """The peers to shape now, given the window's samples and who is shaped already."""
    load = measure(samples, settings.window_seconds, settings.uplink_mbit)
    shaped_now = frozenset(shaped)
    active = {key: used for key, used in load.usage.items() if used > 0}
    if load.utilisation_percent >= settings.trigger_utilisation_percent and active:
        fair_share = sum(active.values()) / len(active)
        # A peer that moved less than the shaped rate allows would not be slowed by it.
        capped = settings.shaped_rate_mbit * 1_000_000 / 8 * load.seconds
        heavy = {key for key, used in active.items() if used > fair_share and used > capped}
        return frozenset(heavy | (shaped_now & active.keys()))
    if load.utilisation_percent < settings.trigger_utilisation_percent * RELEASE_FRACTION:
        return frozenset()
    return frozenset(shaped_now & active.keys())


class TrafficMeter:
    """Turns cumulative counters into samples and keeps the window's samples, in RAM only."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        self.samples: deque[Sample] = deque(maxlen=max_samples)
        self._last: dict[str, tuple[int, int]] | None = None
        self._last_at = 0.0

    def reset(self) -> None:
        """Forget everything (the interface restarted, or fair use was switched off)."""
        self.samples.clear()
        self._last = None

    def observe(self, peers: Iterable[WgPeer], now: float, window_seconds: float) -> None:
        """Book what each peer moved since the previous read; the first read is the baseline."""
        current = {peer.public_key: (peer.rx_bytes, peer.tx_bytes) for peer in peers}
        last, self._last = self._last, current
        previous_at, self._last_at = self._last_at, now
        if last is None or now <= previous_at:
            return
        traffic: dict[str, tuple[int, int]] = {}
        for key, (rx, tx) in current.items():
            old_rx, old_tx = last.get(key, (0, 0))
            # A counter below its last reading restarted from zero: all of it is new.
            delta = (rx - old_rx if rx >= old_rx else rx, tx - old_tx if tx >= old_tx else tx)
            if delta != (0, 0):
                traffic[key] = delta
        self.samples.append(Sample(now, now - previous_at, traffic))
        while self.samples and self.samples[0].at <= now - window_seconds:
            self.samples.popleft()
