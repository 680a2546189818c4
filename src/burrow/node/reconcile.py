"""What the node must change so its WireGuard peers match the desired state. Pure: no I/O.

Two planners share one set of actions:

- ``plan(desired, actual)`` diffs everything. The agent runs it at start, after
  a restart of wireguard-go and on any resync; it is O(peers).
- ``plan_changes(desired, applied, keys)`` diffs only the peers a delta touched
  against the agent's own record of what it applied. This is the everyday
  path: adding one peer to a node that serves 65,000 costs O(1), with no read
  of the socket.

``DesiredPeers`` holds the desired peer map and its revision and applies
deltas to it, refusing a delta that does not follow on (the caller then asks
for a full state).

Imports ``burrow.wire`` only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from burrow.wire import DeltaState, DesiredState, PeerSpec


@dataclass(frozen=True, slots=True)
class AddPeer:
    public_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateAllowedIPs:
    """The peer stays (its session, handshake and counters too); only its allowed IPs change."""

    public_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemovePeer:
    public_key: str


Action = AddPeer | UpdateAllowedIPs | RemovePeer


class ObservedPeer(Protocol):
    """A peer as read from the interface (``uapi.WgPeer`` fits)."""

    @property
    def public_key(self) -> str: ...

    @property
    def allowed_ips(self) -> tuple[str, ...]: ...


def _same_networks(want: Sequence[str], have: Sequence[str]) -> bool:
    if set(want) == set(have):
        return True
    # Spelling may differ (upper-case hex, unmasked bits); compare the networks themselves.
    try:
        return {ipaddress.ip_network(n, strict=False) for n in want} == {
            ipaddress.ip_network(n, strict=False) for n in have
        }
    except ValueError:
        return False


def _desired_map(desired: DesiredState | Mapping[str, PeerSpec]) -> Mapping[str, PeerSpec]:
    if isinstance(desired, DesiredState):
        return {peer.public_key: peer for peer in desired.peers}
    return desired


def _order(removals: list[Action], updates: list[Action], adds: list[Action]) -> list[Action]:
    # Removals first: a leaver's addresses are free before a newcomer claims
    # them (WireGuard would otherwise move them, then drop them with the leaver).
    return removals + updates + adds


def plan(
    desired: DesiredState | Mapping[str, PeerSpec], actual: Iterable[ObservedPeer]
) -> list[Action]:
    """Everything to change so that ``actual`` becomes ``desired``.

    Identical peers get no action, a peer whose allowed IPs differ gets
    ``UpdateAllowedIPs`` (never remove-and-add, which would cut its session),
    a peer not desired gets ``RemovePeer``. Order: removals, updates, adds.
    """
    wanted = _desired_map(desired)
    removals: list[Action] = []
    updates: list[Action] = []
    seen: set[str] = set()
    for peer in actual:
        key = peer.public_key
        seen.add(key)
        spec = wanted.get(key)
        if spec is None:
            removals.append(RemovePeer(key))
        elif not _same_networks(spec.allowed_ips, peer.allowed_ips):
            updates.append(UpdateAllowedIPs(key, spec.allowed_ips))
    adds: list[Action] = [
        AddPeer(key, spec.allowed_ips) for key, spec in wanted.items() if key not in seen
    ]
    return _order(removals, updates, adds)


def plan_changes(
    desired: Mapping[str, PeerSpec],
    applied: Mapping[str, Sequence[str]],
    keys: Iterable[str],
) -> list[Action]:
    """The same diff as ``plan``, restricted to ``keys``; O(len(keys)).

    ``applied`` maps each public key the agent has put on the interface to the
    allowed IPs it gave it.
    """
    removals: list[Action] = []
    updates: list[Action] = []
    adds: list[Action] = []
    for key in keys:
        spec = desired.get(key)
        have = applied.get(key)
        if spec is None:
            if have is not None:
                removals.append(RemovePeer(key))
        elif have is None:
            adds.append(AddPeer(key, spec.allowed_ips))
        elif not _same_networks(spec.allowed_ips, have):
            updates.append(UpdateAllowedIPs(key, spec.allowed_ips))
    return _order(removals, updates, adds)


class DeltaRejected(Exception):
    """A delta the agent cannot apply; the remedy is always a full resync."""


class RevisionGap(DeltaRejected):
    """The delta does not start at the revision the agent holds: some change was missed."""

    def __init__(self, current: int, delta: DeltaState) -> None:
        self.current = current
        self.from_revision = delta.from_revision
        self.revision = delta.revision
        super().__init__(
            f"delta {delta.from_revision}->{delta.revision} does not follow revision {current}"
        )


class MalformedDelta(DeltaRejected):
    """The delta contradicts itself."""


class DesiredPeers:
    """The desired peers at one revision, kept up to date by deltas.

    ``apply_delta`` changes this map in place rather than returning a copy:
    copying 65,000 entries for every added peer would cost more than the
    change itself. It checks everything first, so a rejected delta changes
    nothing.
    """

    def __init__(self, revision: int = 0, peers: Iterable[PeerSpec] = ()) -> None:
        self.revision = revision
        self._peers: dict[str, PeerSpec] = {peer.public_key: peer for peer in peers}

    @classmethod
    def from_state(cls, state: DesiredState) -> DesiredPeers:
        return cls(state.revision, state.peers)

    @property
    def peers(self) -> Mapping[str, PeerSpec]:
        return self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def replace(self, state: DesiredState) -> None:
        """Take a full state (after a gap, or at start)."""
        self.revision = state.revision
        self._peers = {peer.public_key: peer for peer in state.peers}

    def apply_delta(self, delta: DeltaState) -> frozenset[str]:
        """Apply ``delta`` and return the public keys it touched.

        Raises ``RevisionGap`` when ``delta.from_revision`` is not the held
        revision and ``MalformedDelta`` when the delta contradicts itself;
        either way nothing changes and the caller must fetch a full state.
        """
        if delta.from_revision != self.revision:
            raise RevisionGap(self.revision, delta)
        if delta.revision < delta.from_revision:
            raise MalformedDelta("a delta may not go back in revisions")
        upserted = {peer.public_key for peer in delta.upserts}
        if len(upserted) != len(delta.upserts):
            raise MalformedDelta("a peer is upserted twice")
        removed = frozenset(delta.removals)
        if upserted & removed:
            raise MalformedDelta("a peer is both upserted and removed")
        peers = self._peers
        for key in removed:
            peers.pop(key, None)
        for peer in delta.upserts:
            peers[peer.public_key] = peer
        self.revision = delta.revision
        return frozenset(upserted) | removed
