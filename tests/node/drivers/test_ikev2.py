"""The IKEv2 driver against real charon processes: a node and a strongSwan client in namespaces.

One lab for the module (two namespaces joined by veth); each test starts its own node and
client charon, each with its own /run.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import vici

from burrow.node.agent import fair_use_shaper, fair_use_traffic
from burrow.node.config import NodeSettings
from burrow.node.drivers.ikev2 import (
    GATE,
    CharonDriver,
    IkeV2Device,
    IkeV2Error,
    IkeV2Server,
    IkeV2Session,
    conn_message,
    gate_message,
    over_limit,
    render_strongswan_conf,
)
from burrow.node.drivers.tc import ShaperSet
from burrow.node.ikev2 import IkeV2Service
from burrow.node.reconcile import DesiredPeers
from burrow.wire import CredentialSpec, PeerSpec, ProtocolLimit, ikev2_nt_hash, ikev2_verifier
from tests.node.drivers.ikev2_lab import CharonCmd, IkeV2Client, LabPki, make_pki, virtual_ips
from tests.node.netns import Lab, Namespace, needs


def nt_hash(secret: str) -> str:
    digest = ikev2_nt_hash(ikev2_verifier(secret))
    assert digest is not None
    return digest


NODE_ADDRESS = "192.0.2.1"
HOST = "vpn.ikev2.test"
ALICE = IkeV2Device(
    key="A" * 43 + "=",
    username="dev-alice",
    nt_hash=nt_hash("alice's server-made secret"),
    addresses=("10.64.0.77/32", "fd42:b0::77/128"),
    subscription="sub-1",
    per_server=1,
)
BOB = IkeV2Device(
    key="B" * 43 + "=",
    username="dev-bob",
    nt_hash=nt_hash("bob's server-made secret"),
    addresses=("10.64.0.88/32", "fd42:b0::88/128"),
    subscription="sub-1",
    per_server=1,
)


def test_the_config_loads_only_named_plugins_and_logs_nothing() -> None:
    text = render_strongswan_conf("/run/charon.vici")
    assert "load_modular = no" in text
    assert "eap-mschapv2" in text
    assert "kernel-libipsec" in text
    assert "filelog" not in text
    assert text.count("default = -1") == 2


def test_a_device_conn_binds_its_eap_name_any_ike_identity_and_its_own_pools() -> None:
    server = IkeV2Server(HOST, "cert", "key", dns=("10.64.0.1", "fd42:b0::1"))
    conn = conn_message(server, ALICE)["d-dev-alice"]
    assert conn["remote"] == {"auth": "eap-mschapv2", "id": "%any", "eap_id": "dev-alice"}
    assert conn["pools"] == ["d4-dev-alice", "d6-dev-alice"]
    proposals = " ".join(conn["proposals"] + conn["children"]["net"]["esp_proposals"])
    assert "3des" not in proposals
    assert "modp1024" not in proposals


def test_the_gate_asks_for_the_eap_name_and_cannot_be_an_sas_last_connection() -> None:
    server = IkeV2Server(HOST, "cert", "key")
    gate = gate_message(server)[GATE]
    conn = conn_message(server, ALICE)["d-dev-alice"]
    assert gate["remote"]["id"] == gate["remote"]["eap_id"] == "%any"
    assert gate["remote"]["groups"]
    # Nothing to hand out: no pools, no children; the IKE side is the devices' own.
    assert "pools" not in gate
    assert "children" not in gate
    for key in ("proposals", "local", "send_cert", "fragmentation", "mobike", "version"):
        assert gate[key] == conn[key], key


def test_over_limit_refuses_the_newest_of_a_subscription() -> None:
    sessions = [
        IkeV2Session("dev-bob", ike_id=9, established=True, rx_bytes=0, tx_bytes=0),
        IkeV2Session("dev-alice", ike_id=4, established=True, rx_bytes=0, tx_bytes=0),
    ]
    devices = {"dev-alice": ALICE, "dev-bob": BOB}
    assert [s.ike_id for s in over_limit(sessions, devices)] == [9]
    two = {name: d for name, d in devices.items()}
    two["dev-bob"] = IkeV2Device(**{**_fields(BOB), "per_server": 2})
    two["dev-alice"] = IkeV2Device(**{**_fields(ALICE), "per_server": 2})
    assert over_limit(sessions, two) == []


def _fields(device: IkeV2Device) -> dict[str, object]:
    return {name: getattr(device, name) for name in device.__slots__}


@pytest.fixture(scope="module")
def ike_lab() -> Iterator[tuple[Lab, Namespace, Namespace]]:
    with Lab() as lab:
        node = lab.namespace()
        client = lab.namespace()
        lab.link(node, client, [f"{NODE_ADDRESS}/24"], ["192.0.2.2/24"])
        # The node's own address inside the pool, for traffic through the tunnel.
        node.add_address("lo", "10.64.0.1/32")
        yield lab, node, client


@pytest.fixture(scope="module")
def pki() -> LabPki:
    return make_pki(HOST)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A runtime directory with a short path: a unix socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bwt-ike-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def node(
    ike_lab: tuple[Lab, Namespace, Namespace], pki: LabPki, short_dir: Path
) -> AsyncIterator[CharonDriver]:
    lab, node_ns, _ = ike_lab
    driver = CharonDriver(short_dir / "node", netns=node_ns.name)
    await driver.start(
        IkeV2Server(HOST, pki.certificate_pem, pki.private_key_pem, dns=("10.64.0.1",))
    )
    assert driver.pid is not None
    lab.track(driver.pid)
    try:
        yield driver
    finally:
        await driver.stop()


@pytest.fixture
async def client(
    ike_lab: tuple[Lab, Namespace, Namespace], short_dir: Path
) -> AsyncIterator[IkeV2Client]:
    lab, _, client_ns = ike_lab
    customer = IkeV2Client(short_dir / "client", client_ns.name)
    await customer.start()
    assert customer.charon.pid is not None
    lab.track(customer.charon.pid)
    try:
        yield customer
    finally:
        await customer.stop()


async def _connect(client: IkeV2Client, pki: LabPki, username: str, secret: str) -> list[str]:
    sa = await client.connect(
        name=username,
        server_address=NODE_ADDRESS,
        server_identity=HOST,
        ca_pem=pki.ca_pem,
        username=username,
        secret=secret,
    )
    return virtual_ips(sa)


@needs("unshare")
async def test_a_device_connects_with_its_secret_and_gets_its_fleet_addresses(
    node: CharonDriver, client: IkeV2Client, pki: LabPki
) -> None:
    await node.apply([ALICE, BOB])
    assert await _connect(client, pki, "dev-alice", "alice's server-made secret") == [
        "10.64.0.77",
        "fd42:b0::77",
    ]
    sessions = await node.sessions()
    assert [(s.username, s.established) for s in sessions] == [("dev-alice", True)]
    # The node holds only NT hashes: what charon has loaded are NTLM secrets.
    shared = await node.call(lambda s: s.get_shared())
    assert {k.decode() if isinstance(k, bytes) else k for k in shared["keys"]} == {
        "d-dev-alice",
        "d-dev-bob",
    }


@pytest.fixture
async def windows(
    ike_lab: tuple[Lab, Namespace, Namespace], short_dir: Path, pki: LabPki
) -> AsyncIterator[Callable[..., Awaitable[CharonCmd]]]:
    """charon-cmd as Windows' built-in client: its own address (or any name) as IKE identity,
    no IDr, the EAP name only when asked. Each call connects a new charon-cmd (``address``:
    the virtual IPv4 the node assigned, None when refused)."""
    lab, _, client_ns = ike_lab
    running: list[CharonCmd] = []

    async def connect(identity: str, username: str, secret: str) -> CharonCmd:
        cmd = CharonCmd(short_dir / f"cmd{len(running)}", client_ns.name, track=lab.track)
        running.append(cmd)
        await cmd.connect(
            server_address=NODE_ADDRESS,
            server_identity=HOST,
            ca_pem=pki.ca_pem,
            identity=identity,
            eap_identity=username,
            secret=secret,
        )
        return cmd

    try:
        yield connect
    finally:
        for cmd in running:
            await cmd.stop()


@needs("unshare", "charon-cmd", "script")
async def test_a_client_sending_its_ip_address_as_ike_identity_gets_its_devices_connection(
    node: CharonDriver, windows: Callable[..., Awaitable[CharonCmd]]
) -> None:
    """Windows' built-in client: its own address as IKE identity, the username only in EAP."""
    await node.apply([ALICE, BOB])
    bob = await windows("192.0.2.2", "dev-bob", "bob's server-made secret")
    assert bob.address == "10.64.0.88"
    # The SA is the device's own connection: reported under its name, ended by its removal.
    assert [(s.username, s.established) for s in await node.sessions()] == [("dev-bob", True)]
    await node.apply([ALICE])
    assert await node.sessions() == []
    assert await bob.closed(5.0), "the removed device's client still has its SA"


@needs("unshare", "charon-cmd", "script")
async def test_an_eap_name_other_than_the_ike_identity_gets_only_its_own_device(
    node: CharonDriver, windows: Callable[..., Awaitable[CharonCmd]]
) -> None:
    """Alice's name as IKE identity opens nothing of Alice's without Alice's secret."""
    await node.apply([ALICE, BOB])
    # Alice's name, inside EAP too, with Bob's secret: refused.
    refused = await windows("dev-alice", "dev-alice", "bob's server-made secret")
    assert refused.address is None
    assert [s for s in await node.sessions() if s.established] == []
    # Alice's name as IKE identity, Bob's EAP name and secret: Bob's connection and address.
    bob = await windows("dev-alice", "dev-bob", "bob's server-made secret")
    assert bob.address == "10.64.0.88"
    assert [(s.username, s.established) for s in await node.sessions()] == [("dev-bob", True)]


@needs("unshare")
async def test_a_wrong_secret_is_refused(
    node: CharonDriver, client: IkeV2Client, pki: LabPki
) -> None:
    await node.apply([ALICE])
    with pytest.raises(IkeV2Error):
        await _connect(client, pki, "dev-alice", "a guess")
    assert [s for s in await node.sessions() if s.established] == []


@needs("unshare")
async def test_bytes_through_the_tunnel_are_counted(
    node: CharonDriver,
    client: IkeV2Client,
    pki: LabPki,
    ike_lab: tuple[Lab, Namespace, Namespace],
) -> None:
    _, node_ns, client_ns = ike_lab
    await node.apply([ALICE])
    await _connect(client, pki, "dev-alice", "alice's server-made secret")
    listener = node_ns.spawn(
        "python3", "-c",
        "import socket; s=socket.socket(); s.bind(('10.64.0.1', 7777)); s.listen();"
        "c,_=s.accept(); c.sendall(b'x'*200000); c.close()",
    )  # fmt: skip
    try:
        for _ in range(50):
            got = client_ns.run(
                "python3", "-c",
                "import socket; c=socket.create_connection(('10.64.0.1', 7777), timeout=5);"
                "n=0\nwhile (b:=c.recv(65536)): n+=len(b)\nprint(n)",
                check=False, timeout=20,
            )  # fmt: skip
            if got.returncode == 0:
                break
            await asyncio.sleep(0.1)
        assert got.stdout.strip() == "200000"
    finally:
        listener.kill()
        listener.wait()
    (session,) = await node.sessions()
    assert session.tx_bytes >= 200000
    assert session.rx_bytes > 0


@needs("unshare")
async def test_removing_a_device_ends_its_sa_within_5_seconds_and_leaves_others(
    node: CharonDriver, client: IkeV2Client, pki: LabPki
) -> None:
    await node.apply([ALICE, BOB])
    await _connect(client, pki, "dev-alice", "alice's server-made secret")
    await _connect(client, pki, "dev-bob", "bob's server-made secret")
    started = time.monotonic()
    loaded, unloaded = await node.apply([BOB])
    assert (loaded, unloaded) == (0, 1)
    assert [s.username for s in await node.sessions()] == ["dev-bob"]
    # The client learns it too (charon sent a DELETE): its SA is gone.
    while await client.sa("dev-alice") is not None:
        assert time.monotonic() - started < 5.0
        await asyncio.sleep(0.05)
    # And it cannot come back.
    await client.disconnect("dev-alice")
    with pytest.raises(IkeV2Error):
        await _connect(client, pki, "dev-alice", "alice's server-made secret")
    assert [s.username for s in await node.sessions()] == ["dev-bob"]


@needs("unshare")
async def test_a_killed_charon_comes_back_with_every_device_loaded(
    node: CharonDriver,
    client: IkeV2Client,
    pki: LabPki,
    ike_lab: tuple[Lab, Namespace, Namespace],
) -> None:
    await node.apply([ALICE])
    old = node.pid
    assert old is not None
    os.kill(old, 9)
    for _ in range(100):
        if not node.running:
            break
        await asyncio.sleep(0.02)
    assert await node.ensure_running()
    assert node.pid is not None
    ike_lab[0].track(node.pid)
    assert await _connect(client, pki, "dev-alice", "alice's server-made secret")
    # Stopped, it leaves nothing behind in its runtime directory.
    await node.stop()
    assert not node.runtime_dir.exists()


@needs("unshare")
async def test_a_device_removed_and_added_again_connects_again(
    node: CharonDriver, client: IkeV2Client, pki: LabPki
) -> None:
    await node.apply([ALICE])
    for attempt in range(3):
        await _connect(client, pki, "dev-alice", "alice's server-made secret")
        await node.apply([])
        for _ in range(100):
            if await client.sa("dev-alice") is None:
                break
            await asyncio.sleep(0.02)
        assert await client.sa("dev-alice") is None, attempt
        await node.apply([ALICE])
    assert await _connect(client, pki, "dev-alice", "alice's server-made secret") == [
        "10.64.0.77",
        "fd42:b0::77",
    ]


@needs("unshare")
async def test_twenty_connections_of_one_subscription_at_once_leave_exactly_one(
    node: CharonDriver, client: IkeV2Client, pki: LabPki
) -> None:
    """The per-server limit is decided on the node; 20 racing connections leave one up."""
    devices = [
        IkeV2Device(
            key=f"{n:043d}=",
            username=f"dev-{n}",
            nt_hash=nt_hash(f"secret {n}"),
            addresses=(f"10.64.1.{n + 10}/32", f"fd42:b0::1:{n + 10:x}/128"),
            subscription="sub-race",
            per_server=1,
        )
        for n in range(20)
    ]
    desired = DesiredPeers(
        1,
        [
            PeerSpec(
                public_key=base64.b64encode(n.to_bytes(32, "big")).decode(),
                allowed_ips=d.addresses,
                credentials=(
                    CredentialSpec(
                        protocol="ikev2", username=d.username, verifier=f"nt${d.nt_hash}"
                    ),
                ),
                subscription="sub-race",
                per_server=(ProtocolLimit(protocol="ikev2", per_server=1),),
            )
            for n, d in enumerate(devices)
        ],
    )
    server = node._require_server()
    service = IkeV2Service(node, server, lambda: desired, tick_seconds=0.1)
    await service.step()
    assert len(node.applied) == 20

    def initiate(n: int) -> bool:
        session = vici.Session(_unix(client.charon.socket_path))
        try:
            conn = f"race{n}"
            session.load_conn(
                {
                    conn: {
                        "version": "2",
                        "remote_addrs": [NODE_ADDRESS],
                        "vips": ["0.0.0.0"],
                        "proposals": ["aes256gcm16-prfsha384-ecp384"],
                        "local": {"auth": "eap-mschapv2", "id": f"dev-{n}", "eap_id": f"dev-{n}"},
                        "remote": {"auth": "pubkey", "id": HOST, "cacerts": [pki.ca_pem]},
                        "children": {conn: {"remote_ts": ["0.0.0.0/0"]}},
                    }
                }
            )
            session.load_shared(
                {"id": conn, "type": "EAP", "data": f"secret {n}", "owners": [f"dev-{n}"]}
            )
            try:
                for _ in session.initiate({"child": conn, "timeout": "15000"}):
                    pass
            except vici.exception.CommandException:
                return False
            return True
        finally:
            session.transport.socket.close()

    async def enforce() -> None:
        for _ in range(60):
            await service.step()
            await asyncio.sleep(0.1)

    results, _ = await asyncio.gather(
        asyncio.gather(*(asyncio.to_thread(initiate, n) for n in range(20))), enforce()
    )
    assert any(results)
    for _ in range(30):
        await service.step()
        await asyncio.sleep(0.1)
    established = [s for s in await node.sessions() if s.established]
    assert len(established) == 1
    assert service.refused >= sum(results) - 1


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def _download(node_ns: Namespace, client_ns: Namespace, size: int) -> float:
    """Seconds the client takes to receive ``size`` bytes from the node, through the tunnel."""
    listener = node_ns.spawn(
        "python3", "-c",
        "import socket; s=socket.socket(); s.bind(('10.64.0.1', 7778)); s.listen();"
        f"c,_=s.accept(); c.sendall(b'x'*{size}); c.close()",
    )  # fmt: skip
    try:
        for _ in range(50):
            got = client_ns.run(
                "python3", "-c",
                "import socket, time; c=socket.create_connection(('10.64.0.1', 7778), timeout=5);"
                "t=time.monotonic(); n=0\nwhile (b:=c.recv(65536)): n+=len(b)\n"
                "print(n, time.monotonic()-t)",
                check=False, timeout=20,
            )  # fmt: skip
            if got.returncode == 0:
                break
            time.sleep(0.1)
        received, seconds = got.stdout.split()
        assert int(received) == size
        return float(seconds)
    finally:
        listener.kill()
        listener.wait()


def _class_bytes(node_ns: Namespace, dev: str) -> dict[str, int]:
    """Bytes sent by each of burrow's HTB classes on ``dev``."""
    shown = node_ns.run("tc", "-s", "class", "show", "dev", dev, check=False).stdout
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"class htb (\S+) .*?\n\s*Sent (\d+) bytes", shown)
    }


@needs("unshare", "tc")
async def test_fair_use_counts_and_slows_a_device_on_the_ikev2_tunnel_across_charon_restarts(
    node: CharonDriver,
    client: IkeV2Client,
    pki: LabPki,
    ike_lab: tuple[Lab, Namespace, Namespace],
) -> None:
    lab, node_ns, client_ns = ike_lab
    service = IkeV2Service(
        node, IkeV2Server(HOST, pki.certificate_pem, pki.private_key_pem), lambda: None
    )
    await node.apply([ALICE])
    await _connect(client, pki, "dev-alice", "alice's server-made secret")
    # The agent's shapers, as it makes them for a node serving IKEv2 (the WireGuard interface
    # is not under test here: a bare TUN device stands in for it).
    node_ns.ip("tuntap", "add", "dev", "bwsike", "mode", "tun")
    node_ns.ip("link", "set", "bwsike", "up")
    shaper = fair_use_shaper(NodeSettings(netns=node_ns.name), "bwsike", None, node)
    assert isinstance(shaper, ShaperSet)
    peers = {ALICE.key: ALICE.addresses}
    size = 200_000  # 1.6 Mbit: at least 1.6 s at 1 Mbit/s
    try:
        assert await shaper.apply(peers, 1)
        assert shaper.failures == 0
        assert "rate 1Mbit" in node_ns.run("tc", "class", "show", "dev", "ipsec0").stdout
        seconds = await asyncio.to_thread(_download, node_ns, client_ns, size)
        assert seconds > 1.0, f"{size} bytes in {seconds:.2f} s: not shaped to 1 Mbit/s"
        # The device's own class carried them, not the unshaped direct queue.
        assert max(_class_bytes(node_ns, "ipsec0").values()) >= size
        # And they count toward its use, as its WireGuard bytes would.
        await service.step()
        (counted,) = fair_use_traffic(None, service)
        assert counted.public_key == ALICE.key
        assert counted.tx_bytes >= size

        # charon dies; restarted, its ipsec0 is new and bare: the next round shapes it again.
        old = node.pid
        assert old is not None
        os.kill(old, 9)
        for _ in range(100):
            if not node.running:
                break
            await asyncio.sleep(0.02)
        await service.step()  # restarts charon, as the agent's service does every tick
        assert node.restarts == 1
        assert node.pid is not None
        lab.track(node.pid)
        # The SA is gone with the old charon; what it moved stays counted.
        (after,) = fair_use_traffic(None, service)
        assert after.tx_bytes >= counted.tx_bytes
        assert "rate 1Mbit" not in node_ns.run("tc", "class", "show", "dev", "ipsec0").stdout
        await shaper.apply(peers, 1)
        assert "rate 1Mbit" in node_ns.run("tc", "class", "show", "dev", "ipsec0").stdout

        # Nobody shaped: nothing of burrow's stays on the tunnel.
        await shaper.apply({}, 1)
        assert "rate 1Mbit" not in node_ns.run("tc", "class", "show", "dev", "ipsec0").stdout
    finally:
        await shaper.close()
        node_ns.ip("link", "del", "bwsike", check=False)
