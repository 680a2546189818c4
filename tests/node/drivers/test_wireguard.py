"""The WireGuard driver: the delta path against a fake, then real wireguard-go in namespaces."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from burrow.node.drivers.uapi import PeerRemoval, PeerUpsert, UapiErrnoError, WgPeer
from burrow.node.drivers.wireguard import (
    InterfaceInUse,
    TooManyPeers,
    WireGuardGoDriver,
    WireGuardNotRunning,
    WireGuardStartError,
    interface_addresses,
    push_delta,
    push_full,
    to_peer_changes,
)
from burrow.node.reconcile import (
    Action,
    AddPeer,
    DesiredPeers,
    RemovePeer,
    RevisionGap,
    UpdateAllowedIPs,
)
from burrow.wire import DeltaState, NetworkSpec, PeerSpec

from ..netns import Lab, Namespace, needs, unique_name


def keypair() -> tuple[str, str]:
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw_private).decode(), base64.b64encode(raw_public).decode()


def random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def peer(key: str, n: int) -> PeerSpec:
    return PeerSpec(public_key=key, allowed_ips=(f"10.99.0.{n}/32", f"fd00:99::{n}/128"))


# --- without a network ---------------------------------------------------------------------------


class FakeDriver:
    """An interface in memory that counts full reads."""

    def __init__(self, peers: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.peers: dict[str, tuple[str, ...]] = dict(peers or {})
        self._applied = dict(self.peers)
        self.full_reads = 0
        self.batches: list[list[Action]] = []

    @property
    def applied(self) -> Mapping[str, tuple[str, ...]]:
        return self._applied

    @property
    def needs_resync(self) -> bool:
        return False

    async def ensure_running(self) -> bool:
        return False

    async def configure_interface(self, private_key: str, listen_port: int) -> None:
        pass

    async def get_state(self) -> list[WgPeer]:
        self.full_reads += 1
        self._applied = dict(self.peers)
        return [WgPeer(public_key=k, allowed_ips=v) for k, v in self.peers.items()]

    async def apply(self, actions: Sequence[Action]) -> None:
        self.batches.append(list(actions))
        for action in actions:
            if isinstance(action, RemovePeer):
                self.peers.pop(action.public_key, None)
            else:
                self.peers[action.public_key] = action.allowed_ips
        self._applied = dict(self.peers)


async def test_a_delta_is_pushed_without_reading_the_interface() -> None:
    existing = [peer(random_key(), n) for n in range(2, 200)]
    driver = FakeDriver({p.public_key: p.allowed_ips for p in existing})
    desired = DesiredPeers(7, existing)
    newcomer = peer(random_key(), 250)
    moved = PeerSpec(public_key=existing[0].public_key, allowed_ips=("10.99.0.251/32",))
    delta = DeltaState(
        from_revision=7,
        revision=8,
        upserts=(newcomer, moved),
        removals=(existing[1].public_key,),
    )

    actions = await push_delta(driver, desired, delta)

    assert actions == [
        RemovePeer(existing[1].public_key),
        UpdateAllowedIPs(moved.public_key, moved.allowed_ips),
        AddPeer(newcomer.public_key, newcomer.allowed_ips),
    ]
    assert driver.full_reads == 0
    assert driver.batches == [actions]
    assert desired.revision == 8


async def test_a_gap_changes_neither_the_model_nor_the_interface() -> None:
    driver = FakeDriver()
    desired = DesiredPeers(7)
    with pytest.raises(RevisionGap):
        await push_delta(driver, desired, DeltaState(from_revision=6, revision=8))
    assert (driver.batches, desired.revision) == ([], 7)


async def test_a_full_push_repairs_drift() -> None:
    keep, drifted, stray, missing = (random_key() for _ in range(4))
    driver = FakeDriver({keep: peer(keep, 2).allowed_ips, drifted: (), stray: ()})
    desired = DesiredPeers(1, [peer(keep, 2), peer(drifted, 3), peer(missing, 4)])
    actions = await push_full(driver, desired.peers)
    assert driver.full_reads == 1
    assert actions == [
        RemovePeer(stray),
        UpdateAllowedIPs(drifted, peer(drifted, 3).allowed_ips),
        AddPeer(missing, peer(missing, 4).allowed_ips),
    ]
    assert await push_full(driver, desired.peers) == []


def test_actions_become_upserts_and_removals() -> None:
    a, b = random_key(), random_key()
    changes = to_peer_changes([RemovePeer(a), AddPeer(b, ("10.0.0.2/32",))])
    assert changes == [PeerRemoval(a), PeerUpsert(b, ("10.0.0.2/32",))]
    assert all(c.replace_allowed_ips for c in changes if isinstance(c, PeerUpsert))


def test_interface_addresses_take_the_pools_prefix_lengths() -> None:
    network = NetworkSpec(
        tunnel_ipv4="10.64.0.0/10",
        tunnel_ipv6="fd42:b0::/48",
        gateway_ipv4="10.64.0.1",
        gateway_ipv6="fd42:b0::1",
    )
    assert interface_addresses(network) == ("10.64.0.1/10", "fd42:b0::1/48")


@pytest.mark.parametrize("name", ["", "a" * 16, "wg 0", "../etc", "wg0\n"])
def test_interface_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="interface names"):
        WireGuardGoDriver(name)


async def test_the_peer_limit_is_checked_before_anything_is_sent() -> None:
    driver = WireGuardGoDriver("bwtlimit", max_peers=2)
    a, b, c = random_key(), random_key(), random_key()
    with pytest.raises(TooManyPeers, match="3 peers"):
        await driver.apply([AddPeer(k, ()) for k in (a, b, c)])
    # Within the limit, the next check is whether the daemon runs at all.
    with pytest.raises(WireGuardNotRunning):
        await driver.apply([AddPeer(k, ()) for k in (a, b)])
    with pytest.raises(WireGuardNotRunning):
        await driver.apply([RemovePeer(a), AddPeer(a, ()), AddPeer(b, ())])


async def test_a_driver_that_never_started_refuses_changes() -> None:
    driver = WireGuardGoDriver("bwtnever")
    with pytest.raises(WireGuardNotRunning):
        await driver.get_state()
    with pytest.raises(WireGuardNotRunning):
        await driver.apply([RemovePeer(random_key())])


# --- real wireguard-go in namespaces ------------------------------------------------------------


@pytest.fixture
async def server(lab: Lab) -> AsyncIterator[tuple[Namespace, WireGuardGoDriver]]:
    ns = lab.namespace()
    driver = WireGuardGoDriver(
        unique_name(), netns=ns.name, addresses=("10.99.0.1/24", "fd00:99::1/64")
    )
    await driver.start()
    assert driver.pid is not None
    lab.track(driver.pid)
    try:
        yield ns, driver
    finally:
        await driver.stop()


async def wait_for_handshake(driver: WireGuardGoDriver, key: str) -> WgPeer:
    for _ in range(100):
        found = {p.public_key: p for p in await driver.get_state()}
        if found[key].last_handshake is not None and found[key].rx_bytes > 0:
            return found[key]
        await asyncio.sleep(0.05)
    raise AssertionError("no handshake within 5 s")


@needs("wireguard-go", "wg")
async def test_peers_change_one_by_one_without_disturbing_the_others(
    lab: Lab, server: tuple[Namespace, WireGuardGoDriver]
) -> None:
    server_ns, driver = server
    server_private, server_public = keypair()
    client_private, client_public = keypair()
    await driver.configure_interface(server_private, 51820)

    # A real client, so that peer A has a session a careless change would reset.
    client_ns = lab.namespace()
    lab.link(server_ns, client_ns, ["10.200.0.1/30"], ["10.200.0.2/30"])
    client = WireGuardGoDriver(unique_name(), netns=client_ns.name, addresses=("10.99.0.2/24",))
    await client.start()
    try:
        await client.configure_interface(client_private, 51821)
        client_ns.run(
            "wg", "set", client.interface, "peer", server_public,
            "endpoint", "10.200.0.1:51820", "allowed-ips", "10.99.0.0/24",
        )  # fmt: skip

        a, b, c = client_public, random_key(), random_key()
        desired = DesiredPeers(1, [peer(a, 2), peer(b, 3), peer(c, 4)])
        added = await push_full(driver, desired.peers)
        assert sorted(added, key=repr) == sorted(
            [AddPeer(k, peer(k, n).allowed_ips) for k, n in ((a, 2), (b, 3), (c, 4))], key=repr
        )

        client_ns.run(
            sys.executable, "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(b'hello', ('10.99.0.1', 9))",
        )  # fmt: skip
        before = await wait_for_handshake(driver, a)

        moved = PeerSpec(public_key=b, allowed_ips=("10.99.0.33/32",))
        delta = DeltaState(from_revision=1, revision=2, upserts=(moved,), removals=(c,))
        actions = await push_delta(driver, desired, delta)
        assert actions == [RemovePeer(c), UpdateAllowedIPs(b, ("10.99.0.33/32",))]

        after = {p.public_key: p for p in await driver.get_state()}
        assert set(after) == {a, b}
        assert after[b].allowed_ips == ("10.99.0.33/32",)
        # A kept its session: same handshake, counters not reset.
        assert after[a].last_handshake == before.last_handshake
        assert after[a].rx_bytes >= before.rx_bytes > 0
        assert set(after[a].allowed_ips) == set(peer(a, 2).allowed_ips)
        assert dict(driver.applied) == {k: p.allowed_ips for k, p in after.items()}
    finally:
        await client.stop()


@needs("wireguard-go")
async def test_the_interface_gets_its_addresses_and_mtu(
    server: tuple[Namespace, WireGuardGoDriver],
) -> None:
    ns, driver = server
    shown = ns.ip("address", "show", "dev", driver.interface).stdout
    assert "10.99.0.1/24" in shown
    assert "fd00:99::1/64" in shown
    assert "mtu 1320" in shown
    assert ",UP" in shown


@needs("wireguard-go")
async def test_a_killed_daemon_is_noticed_and_restarted_empty(
    server: tuple[Namespace, WireGuardGoDriver],
) -> None:
    ns, driver = server
    await driver.configure_interface(keypair()[0], 51820)
    await push_full(driver, {k: peer(k, 5) for k in [random_key()]})
    old_pid = driver.pid
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)
    await asyncio.wait_for(driver.wait_exited(), 5)
    assert not driver.running
    assert driver.socket_path.exists()  # stale: what a SIGKILL leaves behind

    assert await driver.ensure_running() is True
    assert driver.pid != old_pid
    assert driver.restarts == 1
    assert driver.needs_resync
    assert await driver.get_state() == []
    assert "10.99.0.1/24" in ns.ip("address", "show", "dev", driver.interface).stdout
    assert await driver.ensure_running() is False

    await driver.stop()
    assert not driver.running
    assert not driver.socket_path.exists()
    assert driver.interface not in ns.ip("link", "show").stdout


@needs("wireguard-go")
async def test_a_name_in_use_is_refused_and_the_owner_keeps_working(
    lab: Lab, server: tuple[Namespace, WireGuardGoDriver]
) -> None:
    _, driver = server
    intruder = WireGuardGoDriver(driver.interface, netns=lab.namespace().name)
    with pytest.raises(InterfaceInUse):
        await intruder.start()
    assert driver.running
    assert await driver.get_state() == []


@needs("wireguard-go")
async def test_a_refused_change_raises_the_errno_and_asks_for_a_resync(
    server: tuple[Namespace, WireGuardGoDriver],
) -> None:
    _, driver = server
    await driver.get_state()
    assert not driver.needs_resync
    with pytest.raises(UapiErrnoError) as caught:
        await driver.apply([AddPeer(random_key(), ("10.99.0.300/32",))])
    assert caught.value.errno == -22
    assert driver.needs_resync
    assert driver.running  # the daemon survives a bad request


@needs("wireguard-go")
async def test_a_daemon_that_cannot_start_is_reported(lab: Lab) -> None:
    ns = lab.namespace()
    driver = WireGuardGoDriver(unique_name(), netns=ns.name, wireguard_go="/bin/false")
    with pytest.raises(WireGuardStartError, match="exited with status 1"):
        await driver.start()
    assert not driver.running
