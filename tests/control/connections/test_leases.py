"""The pure lease step, as a table: a state and a report in, a state and record writes out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from burrow.control.connections.leases import (
    AccountLeases,
    Lease,
    Moment,
    NodePlace,
    OpenRecord,
    RecordOp,
    Seen,
    apply_report,
    attach_record,
    lapse,
    lease_id,
)
from burrow.control.connections.limits import Limits
from burrow.control.connections.service import ACCOUNT_LEASES, NODE_INDEX, NodeIndex

T0 = datetime(2026, 1, 1, tzinfo=UTC)
AMS = NodePlace(1, "ams-1", "NL", "Amsterdam")
FRA = NodePlace(2, "fra-1", "DE", "Frankfurt")
ONE = Limits(simultaneous=1)
ACCOUNT = 7


def at(seconds: float = 0, *, records: bool = False) -> Moment:
    return Moment(
        now=1000 + seconds,
        wall=T0 + timedelta(seconds=seconds),
        ttl=120,
        records=records,
        flush_seconds=60,
    )


def key(n: int) -> str:
    return f"{n:043d}="


def seen(n: int, rx: int = 0, tx: int = 0) -> Seen:
    return Seen(key(n), device_id=n, subscription_id=5, rx=rx, tx=tx)


def report(
    state: AccountLeases | None,
    node: NodePlace,
    *devices: Seen,
    idle: dict[str, tuple[int, int]] | None = None,
    limits: Limits | None = ONE,
    moment: Moment | None = None,
) -> tuple[AccountLeases | None, list[tuple[RecordOp, int, int, bool]]]:
    new, writes = apply_report(
        state,
        account_id=ACCOUNT,
        node=node,
        seen=devices,
        idle_bytes=idle or {},
        limits=limits,
        at=moment or at(),
    )
    return new, [(w.op, w.usage_bytes, w.usage_sessions, w.ended) for w in writes]


def admitted(state: AccountLeases | None) -> dict[str, bool]:
    assert state is not None
    return {lid: lease.admitted for lid, lease in state.leases.items()}


def test_a_new_connection_starts_a_lease_and_strict_mode_writes_nothing() -> None:
    state, writes = report(None, AMS, seen(1, 100, 200))
    assert writes == []
    assert state is not None
    lease = state.leases[lease_id(1, key(1))]
    assert (lease.admitted, lease.expires, lease.seq, lease.protocol) == (
        True,
        1120,
        1,
        "wireguard",
    )
    # Strict mode keeps no byte count even in memory.
    assert lease.record is None


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [(AMS, (1,)), (FRA, (2,))],
            {"1:" + key(1): True, "2:" + key(2): False},
            id="one at once: the newest, on another node, is refused",
        ),
        pytest.param(
            [(AMS, (1,)), (FRA, (2,)), (AMS, ())],
            {"2:" + key(2): True},
            id="the first goes idle on its node: the refused one gets the slot",
        ),
        pytest.param(
            [(AMS, (1, 2))],
            {"1:" + key(1): True, "1:" + key(2): False},
            id="new in one report: they start in the report's order",
        ),
    ],
)
def test_limits_across_reports(
    steps: list[tuple[NodePlace, tuple[int, ...]]], expected: dict[str, bool]
) -> None:
    state: AccountLeases | None = None
    for n, (node, devices) in enumerate(steps):
        state, _ = report(state, node, *(seen(d) for d in devices), moment=at(n))
    assert admitted(state) == expected


def test_a_lease_no_report_renews_lapses() -> None:
    state, _ = report(None, AMS, seen(1))
    state, _ = report(state, FRA, seen(2), moment=at(10))
    assert admitted(state) == {"1:" + key(1): True, "2:" + key(2): False}
    # ams is silent; at fra's report after the TTL ams's lease is gone.
    state, _ = report(state, FRA, seen(2), moment=at(121))
    assert admitted(state) == {"2:" + key(2): True}
    # And the sweep alone ends what nobody renews.
    assert lapse(state, account_id=ACCOUNT, at=at(241)) == (None, [])


def test_metered_records_open_flush_and_close() -> None:
    state, writes = report(None, AMS, seen(1, 10, 20), moment=at(0, records=True))
    assert writes == [(RecordOp.open, 0, 1, False)]
    lid = lease_id(1, key(1))
    state = attach_record(state, lid, 99)
    assert state is not None
    record = state.leases[lid].record
    assert record is not None
    assert (record.record_id, record.rx, record.tx) == (99, 10, 20)

    state, writes = report(state, AMS, seen(1, 1, 1), moment=at(61, records=True))
    assert writes == [(RecordOp.update, 32, 0, False)]  # flushed: the usage so far
    state, writes = report(state, AMS, idle={key(1): (5, 5)}, moment=at(70, records=True))
    assert writes == [(RecordOp.update, 10, 0, True)]  # closed with the idle report's bytes
    assert state is None


def test_a_record_still_being_written_only_counts_its_usage() -> None:
    state, _ = report(None, AMS, seen(1, 10, 20), moment=at(0, records=True))
    state, writes = report(state, AMS, moment=at(5, records=True))
    assert writes == [(RecordOp.usage_only, 30, 0, True)]


def test_a_refused_connection_moves_no_counted_bytes() -> None:
    state, _ = report(None, AMS, seen(1), moment=at(0, records=True))
    state, writes = report(state, FRA, seen(2, 10**9, 10**9), moment=at(1, records=True))
    assert writes == []
    assert state is not None
    assert state.leases[lease_id(2, key(2))].record is None


def test_steps_are_pure_and_can_be_retried() -> None:
    """A Redis store may run a step twice: the input is left as it was, the answer equal."""
    first, _ = report(None, AMS, seen(1), moment=at(0, records=True))
    assert first is not None
    frozen = replace(first)
    again = [report(first, FRA, seen(2), moment=at(1, records=True)) for _ in range(2)]
    assert again[0] == again[1]
    assert first == frozen
    with pytest.raises(AttributeError):
        first.leases[lease_id(1, key(1))].admitted = False  # type: ignore[misc]


def test_the_live_values_round_trip_through_json() -> None:
    state, _ = report(None, AMS, seen(1, 3, 4), moment=at(0, records=True))
    state = attach_record(state, lease_id(1, key(1)), 5)
    assert state is not None
    assert isinstance(next(iter(state.leases.values())).record, OpenRecord)
    assert ACCOUNT_LEASES.load(ACCOUNT_LEASES.dump(state)) == state
    index = NodeIndex({key(1): ACCOUNT})
    assert NODE_INDEX.load(NODE_INDEX.dump(index)) == index
    assert isinstance(next(iter(state.leases.values())), Lease)


def test_other_protocols_hold_leases_of_their_own_through_the_same_step() -> None:
    openvpn = replace(seen(1), protocol="openvpn")
    state, _ = report(None, AMS, seen(1), openvpn, limits=Limits(per_server={"wireguard": 1}))
    assert state is not None
    assert {lid: lease.protocol for lid, lease in state.leases.items()} == {
        lease_id(1, key(1)): "wireguard",
        lease_id(1, key(1), "openvpn"): "openvpn",
    }
    assert all(lease.admitted for lease in state.leases.values())
    # The node stops showing the OpenVPN connection: only that lease ends.
    state, _ = report(state, AMS, seen(1), moment=at(1))
    assert state is not None
    assert list(state.leases) == [lease_id(1, key(1))]
