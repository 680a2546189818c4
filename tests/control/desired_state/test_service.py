"""The desired state: served peers, the change log, deltas, the full state and the long poll."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import unit_of_work
from burrow.control.desired_state import service as desired_state_module
from burrow.control.desired_state.schemas import Change, PeerAddresses
from burrow.control.desired_state.service import collapse
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.desired_state.tasks import prune_change_log
from burrow.control.models import (
    Account,
    AccountStatus,
    Device,
    Node,
    PeerChange,
    PeerChangeOp,
    ServedPeer,
    SubscriptionStatus,
    utcnow,
)
from burrow.control.policy.schemas import FairUseSection
from burrow.control.runtime import Runtime
from burrow.wire import DeltaState, FairUseSpec, FullState
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_subscription,
    new_public_key,
)

UPSERT, REMOVE = PeerChangeOp.upsert, PeerChangeOp.remove


async def served(session: AsyncSession) -> dict[str, tuple[int, str, str, int]]:
    """public key -> (device id, ipv4, ipv6, revision)."""
    rows = (await session.execute(select(ServedPeer))).scalars().all()
    return {r.public_key: (r.device_id, r.ipv4, r.ipv6, r.revision) for r in rows}


async def log(session: AsyncSession) -> list[tuple[int, PeerChangeOp, str]]:
    rows = (await session.execute(select(PeerChange).order_by(PeerChange.revision))).scalars()
    return [(r.revision, r.op, r.public_key) for r in rows]


async def paying_customer(session: AsyncSession, devices: int = 1) -> tuple[Account, list[Device]]:
    account = await create_account(session)
    await create_subscription(session, account)
    return account, [await create_device(session, account) for _ in range(devices)]


async def test_an_added_device_is_served_with_a_new_revision(
    session: AsyncSession, runtime: Runtime
) -> None:
    account, (device,) = await paying_customer(session)

    assert await desired_state_service.refresh_account(session, runtime, account.id) == 1

    [(revision, op, key)] = await log(session)
    assert (op, key) == (UPSERT, device.public_key)
    assert await served(session) == {
        device.public_key: (device.id, device.ipv4, device.ipv6, revision)
    }
    assert await desired_state_service.current_revision(session) == revision
    # Nothing changed: no new revision.
    assert await desired_state_service.refresh_account(session, runtime, account.id) == 0
    assert len(await log(session)) == 1


async def test_a_removed_device_leaves_with_a_removal(
    session: AsyncSession, runtime: Runtime
) -> None:
    account, (kept, gone) = await paying_customer(session, devices=2)
    await desired_state_service.refresh_account(session, runtime, account.id)
    await session.delete(gone)
    await session.flush()

    assert await desired_state_service.refresh_account(session, runtime, account.id) == 1

    assert set(await served(session)) == {kept.public_key}
    assert (await log(session))[-1][1:] == (REMOVE, gone.public_key)


async def test_a_rotated_key_removes_the_old_key_and_adds_the_new(
    session: AsyncSession, runtime: Runtime
) -> None:
    account, (device,) = await paying_customer(session)
    await desired_state_service.refresh_account(session, runtime, account.id)
    old_key, new_key = device.public_key, new_public_key()
    device.public_key = new_key
    await session.flush()

    assert await desired_state_service.refresh_account(session, runtime, account.id) == 2

    assert [entry[1:] for entry in (await log(session))[-2:]] == [
        (REMOVE, old_key),
        (UPSERT, new_key),
    ]
    assert set(await served(session)) == {new_key}


async def test_a_suspended_account_loses_every_peer_and_gets_them_back(
    session: AsyncSession, runtime: Runtime
) -> None:
    account, devices = await paying_customer(session, devices=3)
    await desired_state_service.refresh_account(session, runtime, account.id)
    keys = {d.public_key for d in devices}

    account.status = AccountStatus.suspended
    await session.flush()
    assert await desired_state_service.refresh_account(session, runtime, account.id) == 3
    assert await served(session) == {}
    assert {key for _, op, key in (await log(session))[-3:] if op == REMOVE} == keys

    account.status = AccountStatus.active
    await session.flush()
    assert await desired_state_service.refresh_account(session, runtime, account.id) == 3
    assert set(await served(session)) == keys


@pytest.mark.parametrize(
    ("status", "period_end_in", "served_expected"),
    [
        (SubscriptionStatus.active, timedelta(days=3), True),
        (SubscriptionStatus.trialing, timedelta(hours=1), True),
        (SubscriptionStatus.active, timedelta(seconds=-1), False),  # period over, not yet expired
        (SubscriptionStatus.expired, timedelta(days=3), False),
        (SubscriptionStatus.past_due, timedelta(days=3), False),
        (SubscriptionStatus.canceled, timedelta(days=3), False),
    ],
)
async def test_only_a_current_trialing_or_active_subscription_gives_access(
    session: AsyncSession,
    runtime: Runtime,
    status: SubscriptionStatus,
    period_end_in: timedelta,
    served_expected: bool,
) -> None:
    account = await create_account(session)
    await create_subscription(session, account, status=status, period_end=utcnow() + period_end_in)
    device = await create_device(session, account)

    await desired_state_service.refresh_account(session, runtime, account.id)

    assert (device.public_key in await served(session)) is served_expected


async def test_an_expiring_subscription_removes_the_peers(
    session: AsyncSession, runtime: Runtime
) -> None:
    account = await create_account(session)
    subscription = await create_subscription(session, account)
    device = await create_device(session, account)
    await desired_state_service.refresh_account(session, runtime, account.id)

    subscription.status = SubscriptionStatus.expired
    await session.flush()
    await desired_state_service.refresh_account(session, runtime, account.id)

    assert await served(session) == {}
    assert (await log(session))[-1][1:] == (REMOVE, device.public_key)


async def test_a_deleted_account_loses_its_peers(session: AsyncSession, runtime: Runtime) -> None:
    account, (device,) = await paying_customer(session)
    await desired_state_service.refresh_account(session, runtime, account.id)
    await session.delete(account)  # cascades to its devices and subscriptions
    await session.flush()

    await desired_state_service.refresh_account(session, runtime, account.id)

    assert await served(session) == {}
    assert (await log(session))[-1][1:] == (REMOVE, device.public_key)


async def test_refreshing_one_account_leaves_the_others_alone(
    session: AsyncSession, runtime: Runtime
) -> None:
    first, (mine,) = await paying_customer(session)
    second, (theirs,) = await paying_customer(session)
    await desired_state_service.refresh_account(session, runtime, first.id)

    assert set(await served(session)) == {mine.public_key}
    first.status = AccountStatus.suspended
    await session.flush()
    await desired_state_service.refresh_account(session, runtime, first.id)
    await desired_state_service.refresh_account(session, runtime, second.id)
    assert set(await served(session)) == {theirs.public_key}


async def test_a_key_moving_to_another_account_stays_served_once(
    session: AsyncSession, runtime: Runtime
) -> None:
    first, (device,) = await paying_customer(session)
    second = await create_account(session)
    await create_subscription(session, second)
    await desired_state_service.refresh_account(session, runtime, first.id)
    key = device.public_key
    # The first account drops the device without a refresh; the second adds the same key.
    await session.delete(device)
    await session.flush()
    moved = await create_device(session, second, public_key=key)

    await desired_state_service.refresh_account(session, runtime, second.id)
    await desired_state_service.refresh_account(session, runtime, first.id)

    assert await served(session) == {
        key: (moved.id, moved.ipv4, moved.ipv6, (await log(session))[-1][0])
    }


async def test_nodes_are_woken_only_after_commit(runtime: Runtime) -> None:
    before = runtime.notifier.generation

    async def refresh_then_fail() -> None:
        async with unit_of_work(runtime.sessionmaker) as session:
            account, _ = await paying_customer(session)
            await desired_state_service.refresh_account(session, runtime, account.id)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await refresh_then_fail()
    assert runtime.notifier.generation == before
    async with unit_of_work(runtime.sessionmaker) as session:
        assert await served(session) == {}
        account, _ = await paying_customer(session)
        await desired_state_service.refresh_account(session, runtime, account.id)
        assert runtime.notifier.generation == before
    assert runtime.notifier.generation == before + 1


# --- deltas ---------------------------------------------------------------------------


def _change(op: PeerChangeOp, key: str, revision: int, ipv4: str = "10.64.0.2") -> Change:
    return Change(op, PeerAddresses(key, ipv4, "fd42:b0::2"), device_id=1, revision=revision)


@pytest.mark.parametrize(
    ("ops", "upserted", "removed"),
    [
        ([(UPSERT, "a")], ["a"], []),
        ([(REMOVE, "a")], [], ["a"]),
        ([(UPSERT, "a"), (REMOVE, "a")], [], ["a"]),
        ([(REMOVE, "a"), (UPSERT, "a")], ["a"], []),
        ([(UPSERT, "a"), (REMOVE, "a"), (UPSERT, "a")], ["a"], []),
        ([(UPSERT, "a"), (UPSERT, "b"), (REMOVE, "a"), (UPSERT, "c")], ["b", "c"], ["a"]),
        ([], [], []),
    ],
)
def test_collapse_keeps_the_newest_op_per_key(
    ops: list[tuple[PeerChangeOp, str]], upserted: list[str], removed: list[str]
) -> None:
    changes = [_change(op, key, revision) for revision, (op, key) in enumerate(ops, start=1)]
    upserts, removals = collapse(changes)
    assert [c.peer.public_key for c in upserts] == upserted
    assert [c.peer.public_key for c in removals] == removed


def test_collapse_keeps_the_newest_addresses() -> None:
    changes = [_change(UPSERT, "a", 1, "10.64.0.2"), _change(UPSERT, "a", 2, "10.64.0.9")]
    [upsert], [] = collapse(changes)
    assert upsert.peer.ipv4 == "10.64.0.9"


async def test_changes_since_collapses_per_key_and_names_the_revisions(
    session: AsyncSession, runtime: Runtime
) -> None:
    node = await create_node(session)
    account, (stays, leaves) = await paying_customer(session, devices=2)
    start = await desired_state_service.current_revision(session)
    await desired_state_service.refresh_account(session, runtime, account.id)
    await session.delete(leaves)
    await session.flush()
    await desired_state_service.refresh_account(session, runtime, account.id)
    current = await desired_state_service.current_revision(session)

    update = await desired_state_service.changes_since(session, runtime, node, start)

    assert isinstance(update, DeltaState)
    assert (update.from_revision, update.revision) == (start, current)
    assert [p.public_key for p in update.upserts] == [stays.public_key]
    assert update.upserts[0].allowed_ips == (f"{stays.ipv4}/32", f"{stays.ipv6}/128")
    assert update.removals == (leaves.public_key,)
    assert update.network is not None
    assert update.network.listen_port == node.endpoint_port
    # Asking from the newest revision: nothing to do, same revision.
    same = await desired_state_service.changes_since(session, runtime, node, current)
    assert isinstance(same, DeltaState)
    assert (same.revision, same.upserts, same.removals) == (current, (), ())


async def test_a_pruned_revision_gets_the_full_state(
    session: AsyncSession, runtime: Runtime
) -> None:
    runtime.settings.change_log_keep = 10
    node = await create_node(session)
    account = await create_account(session)
    await create_subscription(session, account)
    start = await desired_state_service.current_revision(session)
    devices = []
    for _ in range(15):
        devices.append(await create_device(session, account))
        await desired_state_service.refresh_account(session, runtime, account.id)
    await session.commit()

    assert await prune_change_log(runtime) == 5
    oldest = (await log(session))[0][0]
    assert oldest == start + 6

    too_old = await desired_state_service.changes_since(session, runtime, node, start + 4)
    assert isinstance(too_old, FullState)
    assert {p.public_key for p in too_old.state.peers} == {d.public_key for d in devices}
    just_kept = await desired_state_service.changes_since(session, runtime, node, oldest - 1)
    assert isinstance(just_kept, DeltaState)
    assert len(just_kept.upserts) == 10
    assert await prune_change_log(runtime) == 0


async def test_a_revision_from_the_future_gets_the_full_state(
    session: AsyncSession, runtime: Runtime
) -> None:
    node = await create_node(session)
    current = await desired_state_service.current_revision(session)
    update = await desired_state_service.changes_since(session, runtime, node, current + 5)
    assert isinstance(update, FullState)
    assert update.state.revision == current


async def test_the_full_state_has_every_served_peer_and_the_nodes_network(
    session: AsyncSession, runtime: Runtime
) -> None:
    node = await create_node(session, endpoint_port=51999)
    node.egress_ipv4 = "203.0.113.7"
    node.egress_ipv4_extra = "203.0.113.8 203.0.113.9"
    account, devices = await paying_customer(session, devices=3)
    lapsed = await create_account(session, status=AccountStatus.suspended)
    await create_subscription(session, lapsed)
    await create_device(session, lapsed)
    await desired_state_service.refresh_account(session, runtime, account.id)
    await desired_state_service.refresh_account(session, runtime, lapsed.id)

    state = await desired_state_service.full_state(session, runtime, node)

    assert state.revision == await desired_state_service.current_revision(session)
    assert {(p.public_key, p.allowed_ips) for p in state.peers} == {
        (d.public_key, (f"{d.ipv4}/32", f"{d.ipv6}/128")) for d in devices
    }
    network = state.network
    assert (network.listen_port, network.mtu) == (51999, runtime.settings.tunnel_mtu)
    assert (network.tunnel_ipv4, network.gateway_ipv4) == ("10.64.0.0/10", "10.64.0.1")
    assert (network.tunnel_ipv6, network.gateway_ipv6) == ("fd42:b0::/48", "fd42:b0::1")
    assert (network.egress_ipv4, network.egress_ipv6) == ("203.0.113.7", None)
    assert network.egress_ipv4_extra == ("203.0.113.8", "203.0.113.9")
    assert network.blocked_egress_tcp_ports == (25,)
    assert network.isolate_clients is True
    # What goes over the wire validates as the agent will read it.
    assert FullState.model_validate_json(FullState(state=state).model_dump_json()).state == state


async def test_the_policys_fair_use_and_the_nodes_uplink_reach_the_node(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await create_node(session)
    # The strict example policy shapes to 20 Mbit/s at 90 % over 15 minutes.
    assert desired_state_service.network(runtime, node).fair_use == FairUseSpec(
        shaped_rate_mbit=20, trigger_utilisation_percent=90, window_minutes=15
    )
    node.uplink_mbit = 1000
    fair_use = desired_state_service.network(runtime, node).fair_use
    assert fair_use is not None
    assert fair_use.uplink_mbit == 1000
    policy = runtime.policy.model_copy(update={"fair_use": FairUseSection(shaping=False)})
    monkeypatch.setattr(runtime, "policy", policy)
    assert desired_state_service.network(runtime, node).fair_use is None


async def test_a_nodes_network_is_built_once_until_what_it_is_made_of_changes(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every long poll's answer carries the network: built again only when it would differ."""
    node = await create_node(session)
    first = desired_state_service.network(runtime, node)
    assert desired_state_service.network(runtime, node) is first
    monkeypatch.setattr(runtime.settings, "tunnel_mtu", first.mtu - 20)
    assert desired_state_service.network(runtime, node).mtu == first.mtu - 20
    node.endpoint_port = 443
    assert desired_state_service.network(runtime, node).listen_port == 443
    node.egress_ipv4, node.egress_ipv4_extra = "203.0.113.7", "203.0.113.9"
    assert desired_state_service.network(runtime, node).egress_ipv4_extra == ("203.0.113.9",)
    node.egress_ipv4_extra = "203.0.113.10"
    assert desired_state_service.network(runtime, node).egress_ipv4_extra == ("203.0.113.10",)
    other = await create_node(session, name="fra-1")
    assert desired_state_service.network(runtime, other).listen_port != 443


# --- the long poll ----------------------------------------------------------------------


async def _node_and_revision(runtime: Runtime) -> tuple[Node, int]:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session)
        return node, await desired_state_service.current_revision(session)


async def _add_paying_device(runtime: Runtime) -> Device:
    async with unit_of_work(runtime.sessionmaker) as session:
        account, (device,) = await paying_customer(session)
        await desired_state_service.refresh_account(session, runtime, account.id)
    return device


async def test_a_long_poll_wakes_on_a_change_committed_elsewhere_in_this_process(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Re-checks are off: only the notifier can wake the poll in time.
    monkeypatch.setattr(desired_state_module, "RECHECK_SECONDS", 30.0)
    node, revision = await _node_and_revision(runtime)
    poll = asyncio.create_task(
        desired_state_service.wait_for_changes(runtime, node, revision, 20.0)
    )
    await asyncio.sleep(0.3)
    assert not poll.done()

    device = await _add_paying_device(runtime)
    committed = time.monotonic()
    update = await asyncio.wait_for(poll, 5)

    assert time.monotonic() - committed < 1.0
    assert isinstance(update, DeltaState)
    assert [p.public_key for p in update.upserts] == [device.public_key]


async def test_a_long_poll_sees_a_change_made_by_another_process_within_a_second(
    runtime: Runtime,
) -> None:
    node, revision = await _node_and_revision(runtime)
    poll = asyncio.create_task(
        desired_state_service.wait_for_changes(runtime, node, revision, 20.0)
    )
    await asyncio.sleep(0.3)
    # Another process (the CLI, a replica) has its own notifier, which cannot wake this one.
    other = Runtime.build(runtime.settings)
    try:
        device = await _add_paying_device(other)
    finally:
        await other.close()
    committed = time.monotonic()
    update = await asyncio.wait_for(poll, 5)

    assert time.monotonic() - committed < 1.0
    assert isinstance(update, DeltaState)
    assert [p.public_key for p in update.upserts] == [device.public_key]


async def test_a_long_poll_answers_an_empty_delta_at_its_timeout(runtime: Runtime) -> None:
    node, revision = await _node_and_revision(runtime)
    started = time.monotonic()
    update = await desired_state_service.wait_for_changes(runtime, node, revision, 0.6)
    assert 0.6 <= time.monotonic() - started < 2.0
    assert isinstance(update, DeltaState)
    assert (update.from_revision, update.revision) == (revision, revision)
    assert (update.upserts, update.removals) == ((), ())


async def test_a_long_poll_behind_answers_at_once(runtime: Runtime) -> None:
    node, revision = await _node_and_revision(runtime)
    await _add_paying_device(runtime)
    started = time.monotonic()
    update = await desired_state_service.wait_for_changes(runtime, node, revision, 20.0)
    assert time.monotonic() - started < 0.5
    assert isinstance(update, DeltaState)
    assert len(update.upserts) == 1
