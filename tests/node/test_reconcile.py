"""The planner and the desired-peer map: tables of inputs and the actions they must give."""

from __future__ import annotations

import base64

import pytest

from burrow.node.drivers.uapi import WgPeer
from burrow.node.reconcile import (
    Action,
    AddPeer,
    DesiredPeers,
    MalformedDelta,
    RemovePeer,
    RevisionGap,
    UpdateAllowedIPs,
    plan,
    plan_changes,
)
from burrow.wire import DeltaState, DesiredState, NetworkSpec, PeerSpec


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


A, B, C, D = key(1), key(2), key(3), key(4)
IPS: dict[str, tuple[str, ...]] = {
    A: ("10.64.0.2/32", "fd42:b0::2/128"),
    B: ("10.64.0.3/32", "fd42:b0::3/128"),
    C: ("10.64.0.4/32", "fd42:b0::4/128"),
    D: ("10.64.0.5/32", "fd42:b0::5/128"),
}
NEW_B = ("10.64.0.99/32", "fd42:b0::99/128")


def spec(k: str, ips: tuple[str, ...] | None = None) -> PeerSpec:
    return PeerSpec(public_key=k, allowed_ips=ips if ips is not None else IPS[k])


def seen(k: str, ips: tuple[str, ...] | None = None, **counters: int) -> WgPeer:
    return WgPeer(public_key=k, allowed_ips=ips if ips is not None else IPS[k], **counters)


PLAN_CASES: list[tuple[str, list[PeerSpec], list[WgPeer], list[Action]]] = [
    ("both empty", [], [], []),
    ("fresh interface", [spec(A), spec(B)], [], [AddPeer(A, IPS[A]), AddPeer(B, IPS[B])]),
    ("identical, counters differ", [spec(A)], [seen(A, rx_bytes=9, last_handshake_sec=5)], []),
    ("same networks, other order", [spec(A)], [seen(A, (IPS[A][1], IPS[A][0]))], []),
    ("same network, other spelling", [spec(A)], [seen(A, ("10.64.0.2/32", "FD42:B0::2/128"))], []),
    ("allowed IPs changed", [spec(B, NEW_B)], [seen(B)], [UpdateAllowedIPs(B, NEW_B)]),
    (
        "one of two addresses gone",
        [spec(A, IPS[A][:1])],
        [seen(A)],
        [UpdateAllowedIPs(A, IPS[A][:1])],
    ),
    (
        "extra address on the interface",
        [spec(A)],
        [seen(A, (*IPS[A], "10.0.0.9/32"))],
        [UpdateAllowedIPs(A, IPS[A])],
    ),
    ("peer not desired", [], [seen(C)], [RemovePeer(C)]),
    (
        "mixed: removals, then updates, then adds",
        [spec(A), spec(B, NEW_B), spec(D)],
        [seen(A), seen(B), seen(C)],
        [RemovePeer(C), UpdateAllowedIPs(B, NEW_B), AddPeer(D, IPS[D])],
    ),
]


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [case[1:] for case in PLAN_CASES],
    ids=[case[0] for case in PLAN_CASES],
)
def test_plan(desired: list[PeerSpec], actual: list[WgPeer], expected: list[Action]) -> None:
    assert plan({p.public_key: p for p in desired}, actual) == expected


def test_plan_takes_a_desired_state() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
    )
    state = DesiredState(revision=3, network=network, peers=(spec(A), spec(B)))
    assert plan(state, [seen(B), seen(C)]) == [RemovePeer(C), AddPeer(A, IPS[A])]


def test_plan_then_applying_it_converges() -> None:
    desired = {p.public_key: p for p in (spec(A), spec(B, NEW_B), spec(D))}
    actual = {k: IPS[k] for k in (A, B, C)}
    for action in plan(desired, [seen(k, v) for k, v in actual.items()]):
        if isinstance(action, RemovePeer):
            del actual[action.public_key]
        else:
            actual[action.public_key] = action.allowed_ips
    assert plan(desired, [seen(k, v) for k, v in actual.items()]) == []


Applied = dict[str, tuple[str, ...]]
CHANGE_CASES: list[tuple[str, list[PeerSpec], Applied, list[str], list[Action]]] = [
    ("new peer", [spec(A), spec(D)], {A: IPS[A]}, [D], [AddPeer(D, IPS[D])]),
    ("already applied", [spec(A)], {A: IPS[A]}, [A], []),
    ("moved addresses", [spec(B, NEW_B)], {B: IPS[B]}, [B], [UpdateAllowedIPs(B, NEW_B)]),
    ("gone", [spec(A)], {A: IPS[A], C: IPS[C]}, [C], [RemovePeer(C)]),
    ("gone and never applied", [], {}, [C], []),
    (
        "untouched peers are not looked at",
        [spec(A), spec(B, NEW_B)],
        {A: (), B: IPS[B]},
        [B],
        [UpdateAllowedIPs(B, NEW_B)],
    ),
]


@pytest.mark.parametrize(
    ("desired", "applied", "keys", "expected"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_plan_changes(
    desired: list[PeerSpec],
    applied: Applied,
    keys: list[str],
    expected: list[Action],
) -> None:
    assert plan_changes({p.public_key: p for p in desired}, applied, keys) == expected


def delta(
    frm: int, to: int, upserts: tuple[PeerSpec, ...] = (), removals: tuple[str, ...] = ()
) -> DeltaState:
    return DeltaState(from_revision=frm, revision=to, upserts=upserts, removals=removals)


def test_apply_delta_upserts_removes_and_reports_what_it_touched() -> None:
    desired = DesiredPeers(4, [spec(A), spec(B), spec(C)])
    touched = desired.apply_delta(delta(4, 6, upserts=(spec(B, NEW_B), spec(D)), removals=(C,)))
    assert touched == {B, C, D}
    assert desired.revision == 6
    assert dict(desired.peers) == {A: spec(A), B: spec(B, NEW_B), D: spec(D)}


def test_removing_an_unknown_peer_is_harmless() -> None:
    desired = DesiredPeers(1, [spec(A)])
    assert desired.apply_delta(delta(1, 2, removals=(C,))) == {C}
    assert list(desired.peers) == [A]


REJECTED = [
    ("missed a revision", delta(6, 7, upserts=(spec(D),)), RevisionGap),
    ("from the past", delta(3, 5, removals=(A,)), RevisionGap),
    ("going backwards", delta(5, 4, removals=(A,)), MalformedDelta),
    (
        "upsert and removal of one peer",
        delta(5, 6, upserts=(spec(A),), removals=(A,)),
        MalformedDelta,
    ),
    ("same peer upserted twice", delta(5, 6, upserts=(spec(D), spec(D, NEW_B))), MalformedDelta),
]


@pytest.mark.parametrize(
    ("bad", "error"), [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED]
)
def test_a_rejected_delta_changes_nothing(bad: DeltaState, error: type[Exception]) -> None:
    desired = DesiredPeers(5, [spec(A), spec(B)])
    with pytest.raises(error):
        desired.apply_delta(bad)
    assert desired.revision == 5
    assert dict(desired.peers) == {A: spec(A), B: spec(B)}


def test_revision_gap_says_where_it_is() -> None:
    desired = DesiredPeers(5)
    with pytest.raises(RevisionGap) as caught:
        desired.apply_delta(delta(7, 8))
    assert (caught.value.current, caught.value.from_revision, caught.value.revision) == (5, 7, 8)


def test_replace_takes_a_full_state() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
    )
    desired = DesiredPeers(5, [spec(A)])
    desired.replace(DesiredState(revision=9, network=network, peers=(spec(C),)))
    assert (desired.revision, list(desired.peers)) == (9, [C])
    assert desired.apply_delta(delta(9, 10, upserts=(spec(D),))) == {D}
