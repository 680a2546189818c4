"""OpenVPN on burrow nodes, end to end, with the real ``openvpn`` 2.6 client.

One lab for the module (strict example policy, short idle threshold): a control plane, two
nodes whose agents run one OpenVPN process for UDP and one for TCP 443 beside WireGuard, the
lab's internet host, and four customer hosts. A customer makes OpenVPN credentials for a
device, downloads the node's ``.ovpn`` from the API and runs ``openvpn --config FILE
--auth-user-pass CREDS`` with the file exactly as downloaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.node.netns import missing_requirements, unique_name
from tests.support.nsd import write_nsd

from .conftest import POLICIES
from .lab import (
    SHORT_IDLE_SECONDS,
    Host,
    NodeRun,
    Proc,
    Tunnel,
    World,
    build_world,
    fetch,
    prepare_world,
    sha256,
    start_nodes,
    tcp_open,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    missing_requirements("openvpn") is not None, reason=missing_requirements("openvpn") or ""
)

KILL_SECONDS = 5.0


@pytest.fixture(scope="module")
def ovpn_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """``policy_world``'s strict lab, plus NSD for ``lab.test`` on the internet host, which
    the nodes' resolvers ask for that zone (as in ``test_dns``)."""
    tmp = tmp_path_factory.mktemp("openvpn")
    with build_world(tmp, customers=4) as world:
        world.control_extra = {
            "BURROW_LOG_FILE": str(tmp / "logs" / "control.log"),
            "BURROW_CONNECTION_IDLE_SECONDS": str(SHORT_IDLE_SECONDS),
            "BURROW_CONNECTION_LEASE_TTL_SECONDS": "5",
        }
        world.node_extra = {
            "BURROW_NODE_IDLE_THRESHOLD_SECONDS": str(SHORT_IDLE_SECONDS),
            "BURROW_NODE_RESOLVER_STUB_ZONES": json.dumps({"lab.test.": [world.inet.ipv4]}),
            "BURROW_NODE_RUNTIME_DIR": str(tmp / "run"),
        }
        prepare_world(world, POLICIES / "strict-no-logs.toml")
        world.spawn(
            world.inet.ns, "nsd", *write_nsd(tmp / "nsd", [world.inet.ipv4, world.inet.ipv6])
        )
        world.start_control_plane()
        start_nodes(world)
        for node in world.nodes:
            wait_for(lambda node=node: offered(world, node), 30, "the node to offer OpenVPN")  # type: ignore[misc]
        yield world


def offered(world: World, node: NodeRun) -> bool:
    from sqlalchemy import select

    from burrow.control.models import Node

    from .lab import run_db

    async def look(session: Any, _runtime: Any) -> bool:
        row = (await session.execute(select(Node).where(Node.id == node.node_id))).scalar_one()
        return bool(row.openvpn_ca and row.openvpn_transports)

    return run_db(world.settings, look)


@dataclass
class OpenVpnClient:
    """A real openvpn client in a customer's namespace, from the downloaded profile."""

    world: World
    host: Host
    profile: Path
    credentials: Path
    log: Path
    proc: Proc | None = None

    def start(self) -> None:
        self.log.unlink(missing_ok=True)
        self.proc = self.world.spawn(
            self.host.ns,
            self.log.stem,
            "openvpn", "--config", str(self.profile), "--auth-user-pass", str(self.credentials),
        )  # fmt: skip
        self.log = self.proc.log

    def up(self, timeout: float = 30) -> None:
        wait_for(
            lambda: "Initialization Sequence Completed" in self.output() or not self.alive(),
            timeout,
            "the openvpn client to connect",
            interval=0.1,
        )
        assert self.alive(), self.output()[-3000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        # The client's routes go with its tun device.


@dataclass
class Device:
    token: str
    device: dict[str, Any]
    username: str = ""
    password: str = ""

    @property
    def id(self) -> int:
        return int(self.device["id"])


@pytest.fixture
def clients(ovpn_world: World) -> Iterator[list[OpenVpnClient]]:
    made: list[OpenVpnClient] = []
    yield made
    for client in made:
        client.stop()


def new_device(world: World, token: str, node: NodeRun, name: str) -> Device:
    device = world.add_device(token, node.node_id, name=name)
    return Device(token, device)


def node_caught_up(world: World, node: NodeRun) -> None:
    """Wait until ``node``'s agent applied the control plane's newest revision."""
    assert world.api is not None
    token = json.loads((node.state_dir / "identity.json").read_text())["node_token"]
    revision = world.api.call("GET", "/node-api/v1/state", token=token).json()["state"]["revision"]
    wait_for(
        lambda: (
            re.search(rf"revision {revision} applied", agent_log(node)) is not None
            or any(
                int(m) >= revision for m in re.findall(r"revision (\d+) applied", agent_log(node))
            )
        ),
        10,
        f"{node.host.ns.name} to apply revision {revision}",
    )


def credentials(world: World, device: Device, username: str | None = None) -> Device:
    assert world.api is not None
    body: dict[str, Any] = {"protocol": "openvpn"}
    if username:
        body["username"] = username
    issued = world.api.call(
        "POST",
        f"/api/v1/devices/{device.id}/credentials",
        token=device.token,
        expect=201,
        json=body,
    ).json()
    device.username, device.password = issued["username"], issued["password"]
    return device


def download_profile(world: World, device: Device, node: NodeRun) -> tuple[Path, bytes]:
    assert world.api is not None
    response = world.api.call(
        "GET",
        f"/api/v1/devices/{device.id}/openvpn-config",
        token=device.token,
        params={"node_id": node.node_id},
    )
    found = re.search(r'filename="([^"]+)"', response.headers["content-disposition"])
    assert found is not None
    path = world.tmp / f"{unique_name('p')}-{found.group(1)}"
    path.write_bytes(response.content)
    return path, response.content


def client_for(
    world: World,
    clients: list[OpenVpnClient],
    host: Host,
    device: Device,
    node: NodeRun,
    *,
    password: str | None = None,
) -> OpenVpnClient:
    node_caught_up(world, node)
    profile, _ = download_profile(world, device, node)
    creds = world.tmp / f"{unique_name('c')}.txt"
    creds.write_text(
        f"{device.username}\n{password if password is not None else device.password}\n"
    )
    creds.chmod(0o600)
    client = OpenVpnClient(world, host, profile, creds, world.tmp / f"{unique_name('ovpn')}.log")
    clients.append(client)
    client.start()
    return client


def reaches_internet(world: World, host: Host, port: int = 587) -> bool:
    return tcp_open(host, world.inet.ipv4, port, timeout=1.0)


@contextlib.contextmanager
def udp_blocked(host: Host) -> Iterator[None]:
    """A network that lets only TCP out: the client must fall back to TCP 443."""
    table = unique_name("blk")
    host.ns.run(
        "nft", "-f", "-",
        input=f"table inet {table} {{\n chain out {{\n type filter hook output priority 0;\n"
        f"  udp dport 1194 reject\n }}\n}}\n",
    )  # fmt: skip
    try:
        yield
    finally:
        host.ns.run("nft", "delete", "table", "inet", table, check=False)


def agent_log(node: NodeRun) -> str:
    assert node.proc is not None
    return node.proc.output()


# --- 1. the profile works over UDP and over TCP 443 --------------------------------------------


def test_the_downloaded_profile_carries_traffic_over_udp_and_tcp_443(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[0]
    host = world.customers[0]
    token = world.new_customer()
    device = credentials(world, new_device(world, token, node, "laptop"))
    _path, text = download_profile(world, device, node)
    profile = text.decode()
    for needed in (
        "<ca>", "<tls-crypt>", "auth-user-pass", "remote-cert-tls server",
        f"remote {node.host.ipv4} 1194 udp", f"remote {node.host.ipv4} 443 tcp",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
    ):  # fmt: skip
        assert needed in profile, needed
    assert device.password not in profile

    before = len(world.web_clients())
    for transport in ("udp", "tcp"):
        with udp_blocked(host) if transport == "tcp" else contextlib.nullcontext():
            client = client_for(world, clients, host, device, node)
            client.up(timeout=40)
            proto = "UDPv4" if transport == "udp" else "TCP"
            assert re.search(rf"{proto}.*link remote", client.output()), client.output()[-2000:]
            wait_for(lambda: reaches_internet(world, host), 10, f"traffic over {transport}")
            got = fetch(host, f"http://{world.inet.ipv4}/file")
            assert got is not None, f"no download over {transport}"
            assert sha256(got) == sha256(world.web_file)
            # Port 25 is blocked for OpenVPN as for WireGuard; 587 works.
            assert not reaches_internet(world, host, 25)
            client.stop()
            clients.remove(client)
    seen = set(world.web_clients()[before:])
    assert seen == {node.host.ipv4}, seen
    # The agent logged nothing of the client's address.
    assert host.ipv4 not in agent_log(node)


def dig(host: Host, server: str, name: str) -> str:
    out = host.ns.run(
        "dig", "+time=2", "+tries=1", "+noall", "+answer", "+comments", f"@{server}", name,
        check=False,
    ).stdout  # fmt: skip
    status = re.search(r"status: (\w+)", out)
    answers = [line.split()[-1] for line in out.splitlines() if line and not line.startswith(";")]
    return " ".join([status.group(1) if status else "NO-ANSWER", *answers])


def test_names_resolve_through_the_nodes_resolver_over_openvpn(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[0]
    host = world.customers[3]
    token = world.new_customer()
    device = credentials(world, new_device(world, token, node, "dns"))
    client = client_for(world, clients, host, device, node)
    client.up()
    # The profile's server pushes the node's resolver; the lab's zone resolves through it.
    assert "dhcp-option DNS 10.64.0.1" in client.output()
    wait_for(
        lambda: dig(host, "10.64.0.1", "www.lab.test") == "NOERROR 192.0.2.80",
        20,
        "the node's resolver to answer through OpenVPN",
    )
    # Nothing else of the node itself is reachable through the tunnel.
    assert not tcp_open(host, "10.64.0.1", 22, timeout=1.0)


# --- 2. strict policy: OpenVPN may be used twice on one server, WireGuard once -------------------


def test_two_openvpn_connections_share_a_node_while_a_second_wireguard_device_is_blocked(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[0]
    token = world.new_customer()
    first = credentials(world, new_device(world, token, node, "one"))
    second = credentials(world, new_device(world, token, node, "two"))
    wg_a = new_device(world, token, node, "wg-a")
    wg_b = new_device(world, token, node, "wg-b")
    host0, host1, host2, host3 = world.customers

    a = client_for(world, clients, host0, first, node)
    b = client_for(world, clients, host1, second, node)
    a.up()
    b.up()
    tunnels = []
    try:
        for host, dev in ((host2, wg_a), (host3, wg_b)):
            tunnel = Tunnel(world, host, unique_name("bwc"), "")
            tunnels.append(tunnel)
            tunnel.up(dev.device["config"])
            wait_for(lambda host=host: reaches_internet(world, host), 10, "WireGuard traffic")  # type: ignore[misc]
            if dev is wg_a:
                time.sleep(2.5)  # reported before the second comes
        # The second WireGuard device on this node is refused within seconds...
        wait_for(lambda: not reaches_internet(world, host3), 10, "the second WireGuard blocked")
        # ...while both OpenVPN connections and the first WireGuard device keep working.
        for host in (host0, host1, host2):
            assert reaches_internet(world, host)
        assert a.alive()
        assert b.alive()
        assert world.api is not None
        listed = world.api.call("GET", "/api/v1/devices", token=token).json()
        states = {d["name"]: d["connection"]["state"] for d in listed}
        assert states == {
            "one": "connected",
            "two": "connected",
            "wg-a": "connected",
            "wg-b": "blocked",
        }
    finally:
        for tunnel in tunnels:
            tunnel.down()


# --- 3. revocation cuts a live session within 5 s ---------------------------------------------


def test_a_revoked_devices_openvpn_session_is_killed_within_five_seconds(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[0]
    host = world.customers[0]
    token = world.new_customer()
    device = credentials(world, new_device(world, token, node, "revoked"))
    client = client_for(world, clients, host, device, node)
    client.up()
    wait_for(lambda: reaches_internet(world, host), 10, "traffic")

    assert world.api is not None
    start = time.monotonic()
    world.api.call(
        "DELETE", f"/api/v1/devices/{device.id}/credentials/openvpn", token=token, expect=204
    )
    wait_for(lambda: not client.alive(), KILL_SECONDS + 5, "the client to be halted")
    took = time.monotonic() - start
    assert took < KILL_SECONDS, f"killed {took:.1f} s after revocation"
    # HALT: the client stopped instead of reconnecting, and the node routes nothing to it.
    assert "server-pushed-halt" in client.output()
    routes = node.host.ns.ip("route", "show", f"{device.device['ipv4']}/32").stdout
    assert routes.strip() == ""
    print(f"\nOpenVPN session killed {took:.2f} s after revocation")


# --- 4. fail-static: the node decides alone -----------------------------------------------------


def test_with_the_control_plane_stopped_a_valid_device_connects_and_a_revoked_one_does_not(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[1]
    token = world.new_customer()
    valid = credentials(world, new_device(world, token, node, "valid"))
    revoked = credentials(world, new_device(world, token, node, "gone"))
    profile_valid = client_for(world, [], world.customers[0], valid, node)
    profile_valid.stop()  # only the profile was wanted while the API answered
    revoked_profile, _ = download_profile(world, revoked, node)
    assert world.api is not None
    world.api.call(
        "DELETE", f"/api/v1/devices/{revoked.id}/credentials/openvpn", token=token, expect=204
    )
    node_caught_up(world, node)  # the node's long poll brought the revocation
    world.stop_control_plane()
    try:
        good = OpenVpnClient(
            world, world.customers[0], profile_valid.profile, profile_valid.credentials,
            world.tmp / f"{unique_name('ovpn')}.log",
        )  # fmt: skip
        clients.append(good)
        good.start()
        good.up()
        wait_for(lambda: reaches_internet(world, world.customers[0]), 10, "traffic")

        creds = world.tmp / f"{unique_name('c')}.txt"
        creds.write_text(f"{revoked.username}\n{revoked.password}\n")
        creds.chmod(0o600)
        bad = OpenVpnClient(
            world, world.customers[1], revoked_profile, creds,
            world.tmp / f"{unique_name('ovpn')}.log",
        )  # fmt: skip
        clients.append(bad)
        bad.start()
        wait_for(lambda: "AUTH_FAILED" in bad.output(), 30, "the revoked device to be refused")
        assert "Initialization Sequence Completed" not in bad.output()
    finally:
        world.start_control_plane()


# --- 5. clear errors ---------------------------------------------------------------------------


def test_wrong_credentials_reused_usernames_and_bad_requests_get_clear_errors(
    ovpn_world: World, clients: list[OpenVpnClient]
) -> None:
    world = ovpn_world
    node = world.nodes[0]
    host = world.customers[2]
    token = world.new_customer()
    device = credentials(world, new_device(world, token, node, "typo"), username=unique_name("u"))
    client = client_for(world, clients, host, device, node, password="not-the-password")
    wait_for(lambda: "AUTH_FAILED" in client.output(), 30, "the wrong password to be refused")
    assert "Initialization Sequence Completed" not in client.output()

    assert world.api is not None
    other = new_device(world, token, node, "other")
    taken = world.api.request(
        "POST",
        f"/api/v1/devices/{other.id}/credentials",
        headers={"Authorization": f"Bearer {token}"},
        json={"protocol": "openvpn", "username": device.username},
    )
    assert taken.status_code == 409
    assert taken.headers["content-type"].startswith("application/problem+json")
    assert "already in use" in taken.json()["detail"]
    for params in ({}, {"node_id": "ams"}, {"node_id": 999999}):
        bad = world.api.request(
            "GET",
            f"/api/v1/devices/{device.id}/openvpn-config",
            headers={"Authorization": f"Bearer {token}"},
            params=params,
        )
        assert bad.status_code in (404, 422), bad.text
        assert bad.headers["content-type"].startswith("application/problem+json")
        assert bad.json()["detail"]
    # Strict mode: neither the agent nor the control plane logged the client's addresses.
    for text in (agent_log(node), (world.tmp / "logs" / "control.log").read_text()):
        assert host.ipv4 not in text
        assert device.password not in text
