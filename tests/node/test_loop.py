"""The sync loop against a fake control plane and a fake driver, then against the real app."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import Device
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.node.agent import enroll
from burrow.node.client import NodeApiClient, NodeTokenRejected
from burrow.node.loop import Backoff, SyncLoop
from burrow.node.reconcile import AddPeer, RemovePeer, UpdateAllowedIPs
from burrow.node.status import StatusReporter
from burrow.wire import DeltaState, FairUseSpec, FullState
from tests.support.factories import (
    create_account,
    create_device,
    create_node,
    create_subscription,
)

from .fakes import (
    NETWORK,
    NODE_TOKEN,
    FakeControlPlane,
    FakeDriver,
    FakeNetwork,
    FakeShaper,
    peer,
    random_key,
)

PRIVATE_KEY = random_key()


@dataclass
class Rig:
    cp: FakeControlPlane
    driver: FakeDriver
    network: FakeNetwork
    loop: SyncLoop
    journal: list[str]
    sleeps: list[float]

    def interface(self) -> dict[str, tuple[str, ...]]:
        return dict(self.driver.peers)

    def desired(self) -> dict[str, tuple[str, ...]]:
        return {key: spec.allowed_ips for key, spec in self.cp.peers.items()}


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Let the event loop run until ``condition`` holds."""
    async with asyncio.timeout(seconds):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0 if _ % 100 else 0.001)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    cp = FakeControlPlane()
    for n in range(2, 6):
        cp.upsert(peer(n))
    journal: list[str] = []
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    driver = FakeDriver(journal)
    network = FakeNetwork(journal)
    client = NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport())
    loop = SyncLoop(
        client,
        driver,
        network,
        private_key=PRIVATE_KEY,
        long_poll_seconds=0.05,
        backoff_initial_seconds=0.5,
        backoff_max_seconds=4.0,
        sleep=sleep,
        rng=random.Random(1),
    )
    yield Rig(cp, driver, network, loop, journal, sleeps)
    await client.aclose()


async def test_full_sync_sets_up_firewall_first_then_interface_then_all_peers(rig: Rig) -> None:
    await rig.loop.step()
    assert rig.interface() == rig.desired()
    assert rig.journal == ["prepare", "start", "configure", "apply 4"]
    assert rig.driver.configured == [(PRIVATE_KEY, NETWORK.listen_port)]
    assert rig.network.prepared == [(NETWORK, True)]
    assert rig.loop.applied_revision == rig.cp.revision
    assert rig.loop.synced.is_set()


async def test_a_delta_is_one_transaction_that_touches_only_its_peers(rig: Rig) -> None:
    await rig.loop.step()
    leaving = next(iter(rig.cp.peers))
    moved = list(rig.cp.peers)[1]
    newcomer = peer(9)
    rig.cp.remove(leaving)
    rig.cp.upsert(newcomer)
    rig.cp.upsert(peer(10, key=moved))  # same device, new address
    rig.driver.batches.clear()
    await rig.loop.step()
    assert rig.driver.batches == [
        [
            RemovePeer(leaving),
            UpdateAllowedIPs(moved, peer(10).allowed_ips),
            AddPeer(newcomer.public_key, newcomer.allowed_ips),
        ]
    ]
    assert rig.interface() == rig.desired()
    assert rig.loop.applied_revision == rig.cp.revision
    # No second configuration, no restart, no full read for a delta.
    assert rig.driver.starts == 1
    assert len(rig.driver.configured) == 1


async def test_an_empty_long_poll_answer_changes_nothing(rig: Rig) -> None:
    await rig.loop.step()
    rig.journal.clear()
    await rig.loop.step()
    assert rig.journal == []
    assert rig.cp.requests[-1] == "GET /state/changes"


async def test_a_revision_gap_means_a_full_resync(rig: Rig) -> None:
    await rig.loop.step()
    # The control plane's log moved on without this node seeing every change: the delta it
    # gets does not start where the node stands.
    for n in range(20, 23):
        rig.cp.upsert(peer(n))
    rig.cp.forced = DeltaState(
        from_revision=rig.cp.revision - 1,
        revision=rig.cp.revision,
        upserts=(rig.cp.log[-1][2],),
        network=NETWORK,
    )
    rig.driver.batches.clear()
    await rig.loop.step()
    assert rig.driver.batches == []  # a delta with a gap is not applied at all
    await rig.loop.step()
    assert rig.cp.requests[-1] == "GET /state"
    assert rig.interface() == rig.desired()
    assert rig.loop.applied_revision == rig.cp.revision


async def test_a_full_state_answer_replaces_everything(rig: Rig) -> None:
    await rig.loop.step()
    first = next(iter(rig.cp.peers))
    rig.cp.peers.pop(first)
    rig.cp.upsert(peer(30))
    rig.cp.forced = FullState(state=rig.cp.full())
    await rig.loop.step()
    assert rig.interface() == rig.desired()
    assert first not in rig.interface()


async def test_a_peer_on_the_interface_that_is_not_desired_is_removed_at_start(rig: Rig) -> None:
    intruder = random_key()
    await rig.driver.ensure_running()  # an interface that already has a stray peer
    rig.driver.peers[intruder] = ("10.64.9.9/32",)
    await rig.loop.step()
    assert intruder not in rig.interface()
    assert rig.interface() == rig.desired()


async def test_a_stray_peer_seen_by_a_status_read_is_removed(rig: Rig) -> None:
    await rig.loop.step()
    intruder = random_key()
    rig.driver.peers[intruder] = ("10.64.9.9/32",)
    await rig.loop.read_peers()
    await rig.loop.supervise_once()
    assert intruder not in rig.interface()
    assert rig.interface() == rig.desired()


async def test_a_peer_missing_from_the_interface_is_put_back(rig: Rig) -> None:
    await rig.loop.step()
    gone = next(iter(rig.driver.peers))
    del rig.driver.peers[gone]
    await rig.loop.read_peers()
    await rig.loop.supervise_once()
    assert rig.interface() == rig.desired()


async def test_control_plane_down_keeps_serving_then_converges(rig: Rig) -> None:
    await rig.loop.step()
    served = rig.interface()
    rig.cp.available = False
    task = asyncio.create_task(rig.loop.sync_forever())
    await until(lambda: len(rig.sleeps) >= 6)
    # Fail-static: nothing was removed while the control plane was away.
    assert rig.interface() == served
    # Backoff: doubling, capped at 4 s, each wait 50-100 % of its ceiling.
    for wait, ceiling in zip(rig.sleeps, [0.5, 1, 2, 4, 4, 4], strict=False):
        assert ceiling / 2 <= wait <= ceiling
    newcomer = peer(40)
    rig.cp.upsert(newcomer)
    rig.cp.remove(next(iter(served)))
    rig.cp.available = True
    await until(lambda: rig.interface() == rig.desired())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.interface() == rig.desired()
    assert rig.loop.applied_revision == rig.cp.revision


async def test_nothing_is_served_before_the_first_full_state(rig: Rig) -> None:
    rig.cp.available = False
    task = asyncio.create_task(rig.loop.sync_forever())
    await until(lambda: len(rig.sleeps) >= 3)
    await rig.loop.supervise_once()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not rig.driver.running
    assert rig.journal == []


async def test_wireguard_go_died_is_restarted_and_everything_is_pushed_again(rig: Rig) -> None:
    await rig.loop.step()
    epoch = rig.loop.interface_epoch
    rig.driver.kill()
    rig.journal.clear()
    await rig.loop.supervise_once()
    # The firewall survives in nftables; it is loaded again all the same, before any peer.
    assert rig.journal == ["start", "prepare", "configure", "apply 4"]
    assert rig.network.prepared[-1] == (NETWORK, True)  # the firewall is loaded again too
    assert rig.driver.configured[-1] == (PRIVATE_KEY, NETWORK.listen_port)
    assert rig.interface() == rig.desired()
    assert rig.loop.interface_epoch == epoch + 1
    # Nothing was asked of the control plane to do it.
    assert rig.cp.requests.count("GET /state") == 1


async def test_a_failed_delta_pushes_everything_again(rig: Rig) -> None:
    await rig.loop.step()
    rig.cp.upsert(peer(50))
    rig.driver.fail_next_apply = True
    with pytest.raises(Exception, match="died"):
        await rig.loop.step()
    rig.driver.kill()
    await rig.loop.step()  # pushes everything first, then polls on
    assert rig.interface() == rig.desired()


async def test_a_changed_network_reloads_the_firewall_and_port(rig: Rig) -> None:
    await rig.loop.step()
    rig.cp.network = NETWORK.model_copy(
        update={"listen_port": 51999, "blocked_egress_tcp_ports": (25, 465)}
    )
    await rig.loop.step()
    assert rig.network.prepared[-1] == (rig.cp.network, False)
    assert rig.driver.configured[-1] == (PRIVATE_KEY, 51999)
    assert rig.driver.starts == 1


async def test_blocked_keys_become_blocked_tunnel_addresses(rig: Rig) -> None:
    await rig.loop.step()
    key = next(iter(rig.cp.peers))
    stranger = random_key()
    await rig.loop.set_blocked_keys([key, stranger])  # an unknown key blocks nothing
    assert rig.network.blocked == [sorted(rig.cp.peers[key].allowed_ips)]
    await rig.loop.set_blocked_keys([stranger, key])
    assert len(rig.network.blocked) == 1  # the same list again: no second nft call
    await rig.loop.set_blocked_keys([key])
    rig.driver.kill()
    await rig.loop.supervise_once()
    assert rig.network.blocked[-1] == sorted(rig.cp.peers[key].allowed_ips)


async def test_a_block_the_firewall_refused_is_made_at_the_next_answer(rig: Rig) -> None:
    """The same blocked keys again are skipped only once they are really blocked."""
    await rig.loop.step()
    key = next(iter(rig.cp.peers))
    rig.network.failures.append(OSError("nft: netlink busy"))
    with pytest.raises(OSError, match="netlink busy"):
        await rig.loop.set_blocked_keys([key])
    assert rig.network.blocked == []
    await rig.loop.set_blocked_keys([key])  # the next report's answer, the same keys
    assert rig.network.blocked == [sorted(rig.cp.peers[key].allowed_ips)]


async def test_a_rejected_node_token_stops_the_loop(rig: Rig) -> None:
    await rig.loop.step()
    rig.cp.token_valid = False
    with pytest.raises(ExceptionGroup) as stopped:
        await asyncio.wait_for(rig.loop.run(), 5)
    assert stopped.group_contains(NodeTokenRejected)


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(7))
    waits = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert len({round(w, 6) for w in waits[4:]}) > 1  # jitter: not the same wait every time
    backoff.reset()
    assert backoff.next_delay() <= 0.5


# --- against the real control plane ---------------------------------------------------------


async def _paying_device(runtime: Runtime) -> Device:
    async with unit_of_work(runtime.sessionmaker) as session:
        account = await create_account(session)
        await create_subscription(session, account)
        device = await create_device(session, account)
        await desired_state_service.refresh_account(session, runtime, account.id)
    return device


async def test_the_loop_speaks_the_real_node_api(
    runtime: Runtime, app: FastAPI, tmp_path: Path
) -> None:
    """Enroll, full state, a delta by long poll and a report, through the real app."""
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, wg_public_key=None)
        issued = await node_service.new_enrollment_token(session, runtime, node)
    first = await _paying_device(runtime)

    transport = httpx.ASGITransport(app=app)
    identity = await enroll("http://testserver", issued.token, tmp_path, transport=transport)
    node_client = NodeApiClient("http://testserver", identity.node_token, transport=transport)
    driver = FakeDriver()
    loop = SyncLoop(
        node_client, driver, FakeNetwork(), private_key=identity.private_key, long_poll_seconds=2
    )
    try:
        await loop.step()
        assert driver.peers == {first.public_key: (f"{first.ipv4}/32", f"{first.ipv6}/128")}
        second = await _paying_device(runtime)
        await loop.step()
        assert set(driver.peers) == {first.public_key, second.public_key}
        reporter = StatusReporter(node_client, loop)
        ack = await reporter.report_once()
        assert ack.accepted
        async with unit_of_work(runtime.sessionmaker) as session:
            node = await node_service.get(session, node.id)
        health = await node_service.health(runtime, node)
        assert health.state == "online"
        assert health.applied_revision == loop.applied_revision
    finally:
        await node_client.aclose()


async def test_a_push_that_keeps_failing_is_retried_with_backoff(rig: Rig) -> None:
    await rig.loop.step()
    now = [1000.0]
    rig.loop._monotonic = lambda: now[0]
    rig.cp.upsert(peer(60))
    rig.driver.fail_next_apply = True
    with pytest.raises(Exception, match="died"):
        await rig.loop.step()
    rig.journal.clear()
    rig.driver.fail_next_apply = True
    with pytest.raises(Exception, match="died"):
        await rig.loop.supervise_once()
    attempts = rig.journal.count("prepare")
    await rig.loop.supervise_once()  # too soon: no new attempt
    assert rig.journal.count("prepare") == attempts
    now[0] += 60
    await rig.loop.supervise_once()
    assert rig.interface() == rig.desired()


async def test_after_a_failed_change_the_next_round_starts_from_a_full_state(rig: Rig) -> None:
    await rig.loop.step()
    rig.cp.upsert(peer(61))
    rig.driver.fail_next_apply = True
    with pytest.raises(Exception, match="died"):
        await rig.loop.step()
    await rig.loop.step()
    assert rig.cp.requests[-1] == "GET /state"
    assert rig.interface() == rig.desired()


# --- fair use -----------------------------------------------------------------------------------

FAIR_USE = FairUseSpec(shaped_rate_mbit=10, trigger_utilisation_percent=90, window_minutes=1)
MBIT_SECONDS = 1_000_000 // 8


@dataclass
class FairRig:
    cp: FakeControlPlane
    driver: FakeDriver
    shaper: FakeShaper
    loop: SyncLoop
    now: list[float]

    async def read(self, rates: dict[str, tuple[int, int]], seconds: int = 5) -> None:
        """``seconds`` pass with each peer moving (rx, tx) Mbit/s; then the reporter reads."""
        self.now[0] += seconds
        for key, (rx, tx) in rates.items():
            old_rx, old_tx = self.driver.counters.get(key, (0, 0))
            moved = MBIT_SECONDS * seconds
            self.driver.counters[key] = (old_rx + rx * moved, old_tx + tx * moved)
        await self.loop.read_peers()


@pytest.fixture
async def fair() -> AsyncIterator[FairRig]:
    cp = FakeControlPlane(network=NETWORK.model_copy(update={"fair_use": FAIR_USE}))
    for n in range(2, 5):
        cp.upsert(peer(n))
    driver = FakeDriver()
    shaper = FakeShaper()
    client = NodeApiClient("http://control.test", NODE_TOKEN, transport=cp.transport())
    loop = SyncLoop(
        client,
        driver,
        FakeNetwork(),
        private_key=PRIVATE_KEY,
        long_poll_seconds=0.05,
        shaper=shaper,
        uplink_mbit=100,
    )
    now = [1_000.0]
    loop._monotonic = lambda: now[0]
    await loop.step()
    yield FairRig(cp, driver, shaper, loop, now)
    await client.aclose()


async def test_a_busy_node_shapes_its_heaviest_peer_until_it_is_less_busy(fair: FairRig) -> None:
    heavy, light, idle = fair.cp.peers
    await fair.read({})  # the baseline
    for _ in range(6):
        await fair.read({heavy: (2, 90), light: (1, 3)})
    # Half a minute at 93 % of 100 Mbit/s: the heavy peer is shaped, with both its addresses.
    assert fair.shaper.peers == {heavy: fair.cp.peers[heavy].allowed_ips}
    assert fair.shaper.rate == 10
    assert idle not in fair.shaper.shaped

    # Shaped, it moves 10 Mbit/s: after a window the node is quiet and the shaping goes.
    for _ in range(12):
        await fair.read({heavy: (2, 10), light: (1, 3)})
    assert fair.shaper.shaped == frozenset()
    assert fair.shaper.changes == [("apply", heavy), ("apply",)]


async def test_a_fresh_interface_gets_its_shaping_back_at_once(fair: FairRig) -> None:
    heavy, light, _ = fair.cp.peers
    await fair.read({})
    for _ in range(6):
        await fair.read({heavy: (2, 90), light: (1, 3)})
    assert fair.shaper.shaped == {heavy}
    fair.driver.kill()
    await fair.loop.supervise_once()  # wireguard-go restarted: everything pushed again
    # Its counters restart at zero; the window is kept and the qdiscs go on again.
    fair.driver.counters.clear()
    await fair.read({heavy: (2, 90), light: (1, 3)})
    assert fair.shaper.changes[-1] == ("force", heavy)


async def test_a_policy_without_shaping_lifts_it(fair: FairRig) -> None:
    heavy, light, _ = fair.cp.peers
    await fair.read({})
    for _ in range(6):
        await fair.read({heavy: (2, 90), light: (1, 3)})
    assert fair.shaper.shaped == {heavy}
    revision = fair.cp.revision
    await fair.loop.apply_update(
        DeltaState(from_revision=revision, revision=revision, network=NETWORK)
    )
    await fair.read({heavy: (2, 90), light: (1, 3)})
    assert fair.shaper.shaped == frozenset()
    assert fair.shaper.changes[-1] == "clear"


async def test_without_an_uplink_bandwidth_nobody_is_shaped(
    fair: FairRig, caplog: pytest.LogCaptureFixture
) -> None:
    fair.loop._uplink_mbit = None
    assert fair.loop.fair_use_settings() is None
    assert "uplink bandwidth is unknown" in caplog.text
    # The control plane naming it is enough.
    fair.loop.network = NETWORK.model_copy(
        update={"fair_use": FAIR_USE.model_copy(update={"uplink_mbit": 1000})}
    )
    settings = fair.loop.fair_use_settings()
    assert settings is not None
    assert settings.uplink_mbit == 1000
