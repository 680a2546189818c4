"""The OpenVPN driver's management side, against its real code on a socket.

A fake openvpn writes what openvpn's management interface writes (``>CLIENT:CONNECT`` and its
ENV lines, ``>CLIENT:REAUTH``, ``>BYTECOUNT_CLI``, ``>CLIENT:DISCONNECT``) and reads the
agent's answers. Host routes go to a tun device in a namespace of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from burrow.control.devices.service import new_key_pair
from burrow.node.drivers.openvpn import (
    REVOKED_REASON,
    OpenVpnNode,
    OpenVpnProcess,
    PkiFiles,
    Transport,
    redact,
    render_server_config,
)
from burrow.node.pki import make_pki
from burrow.node.reconcile import DesiredPeers
from burrow.wire import (
    CredentialSpec,
    NetworkSpec,
    PeerSpec,
    ProtocolLimit,
    openvpn_verifier,
)
from tests.node.netns import Lab, needs

SECRET = "p" * 43
NETWORK = NetworkSpec(
    tunnel_ipv4="10.64.0.0/10",
    tunnel_ipv6="fd42:b0::/48",
    gateway_ipv4="10.64.0.1",
    gateway_ipv6="fd42:b0::1",
)


def device(n: int, username: str, *, limit: int | None = None) -> PeerSpec:
    return PeerSpec(
        public_key=new_key_pair()[1],
        allowed_ips=(f"10.64.0.{n}/32", f"fd42:b0::{n}/128"),
        credentials=(
            CredentialSpec(
                protocol="openvpn", username=username, verifier=openvpn_verifier(SECRET)
            ),
        ),
        subscription="sub",
        per_server=(ProtocolLimit(protocol="openvpn", per_server=limit),) if limit else (),
    )


@dataclass
class Rig:
    node: OpenVpnNode
    process: OpenVpnProcess
    desired: DesiredPeers
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ns: str

    async def say(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\n" for line in lines).encode())
        await self.writer.drain()

    async def connect(self, cid: str, username: str, password: str = SECRET) -> str:
        await self.say(
            f">CLIENT:CONNECT,{cid},1",
            f">CLIENT:ENV,username={username}",
            f">CLIENT:ENV,password={password}",
            ">CLIENT:ENV,untrusted_ip=198.51.100.77",
            ">CLIENT:ENV,END",
        )
        return await self.answer()

    async def answer(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 5)).decode().rstrip("\n")
            lines.append(line)
            if line == "END" or not line.startswith(("client-auth ", "ifconfig")):
                return "\n".join(lines)


@pytest.fixture
async def rig(lab: Lab, tmp_path: Path) -> AsyncIterator[Rig]:
    ns = lab.namespace()
    desired = DesiredPeers(1, [device(2, "laptop"), device(3, "phone")])
    node = OpenVpnNode(
        make_pki("t", "192.0.2.1"),
        lambda: desired,
        lambda: NETWORK,
        wg_interface="bwtest",
        runtime_dir=tmp_path,
        transports=[Transport("udp", 1194)],
        netns=ns.name,
    )
    process = node.processes[0]
    ns.ip("tuntap", "add", "dev", process.interface, "mode", "tun")
    ns.ip("link", "set", process.interface, "up")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    process._writer = writer
    task = asyncio.create_task(process._read(reader))
    o_reader, o_writer = await asyncio.open_unix_connection(sock=theirs)
    yield Rig(node, process, desired, o_reader, o_writer, ns.name)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await rig_node_settled(node)
    for end in (writer, o_writer):
        end.close()
        with contextlib.suppress(ConnectionError):
            await end.wait_closed()


async def rig_node_settled(node: OpenVpnNode) -> None:
    await node.routes_settled()


def routes(lab_ns: str) -> str:
    import subprocess

    return subprocess.run(
        ["ip", "-n", lab_ns, "route", "show", "10.64.0.0/10", "match", "10.64.0.0/10"],
        capture_output=True, text=True, check=False,
    ).stdout + subprocess.run(
        ["ip", "-n", lab_ns, "route"], capture_output=True, text=True, check=False
    ).stdout  # fmt: skip


@needs("ip")
async def test_admits_with_the_devices_addresses_and_routes_them_to_the_tun(rig: Rig) -> None:
    answer = await rig.connect("7", "laptop")
    assert answer.splitlines() == [
        "client-auth 7 1",
        "ifconfig-push 10.64.0.2 255.192.0.0",
        "ifconfig-ipv6-push fd42:b0::2/64 fd42:b0::1",
        "END",
    ]
    await rig.node.routes_settled()
    assert f"10.64.0.2 dev {rig.process.interface}" in routes(rig.ns)
    # The client's address never reaches the driver's state.
    assert "198.51.100.77" not in repr(rig.process.sessions)

    await rig.say(">BYTECOUNT_CLI:7,1000,5000")
    await rig.say(">CLIENT:REAUTH,7,2", ">CLIENT:ENV,username=laptop", ">CLIENT:ENV,END")
    assert await rig.answer() == "client-auth-nt 7 2"
    (counters,) = await rig.node.read_sessions()
    assert (counters.rx_bytes, counters.tx_bytes, counters.connected) == (1000, 5000, True)

    await rig.say(">CLIENT:DISCONNECT,7", ">CLIENT:ENV,bytes_received=1200", ">CLIENT:ENV,END")
    await asyncio.sleep(0.05)
    await rig.node.routes_settled()
    assert "10.64.0.2" not in routes(rig.ns)
    (counters,) = await rig.node.read_sessions()
    assert (counters.rx_bytes, counters.connected) == (1000, False)


@needs("ip")
async def test_wrong_password_is_denied_with_a_reason_the_client_shows(rig: Rig) -> None:
    answer = await rig.connect("8", "laptop", "wrong")
    assert answer.startswith('client-deny 8 1 "refused" "Wrong username or password')
    assert rig.process.sessions == {}


@needs("ip")
async def test_revocation_kills_the_session_with_halt(
    rig: Rig,
) -> None:
    await rig.connect("9", "phone")
    phone = next(
        k for k, p in rig.desired.peers.items() if p.credential("openvpn").username == "phone"
    )  # type: ignore[union-attr]
    rig.desired.replace(
        __import__("burrow.wire", fromlist=["DesiredState"]).DesiredState(
            revision=2,
            network=NETWORK,
            peers=tuple(p for k, p in rig.desired.peers.items() if k != phone),
        )
    )
    await rig.node.enforce()
    line = (await asyncio.wait_for(rig.reader.readline(), 5)).decode()
    assert line.startswith("client-kill 9 HALT,")
    assert REVOKED_REASON.split(";")[0].replace(",", ";")[:20] in line
    assert rig.process.sessions == {}


@needs("ip")
async def test_the_same_device_again_replaces_its_older_session(rig: Rig) -> None:
    await rig.connect("1", "laptop")
    second = await rig.connect("2", "laptop")
    assert second.startswith("client-kill 1 HALT,")
    assert "client-auth 2 1" in second or (await rig.answer()).startswith("client-auth 2 1")
    assert list(rig.process.sessions) == ["2"]


def test_server_config_and_log_redaction(tmp_path: Path) -> None:
    files = PkiFiles(tmp_path / "ca", tmp_path / "cert", tmp_path / "key", tmp_path / "tc")
    text = render_server_config(
        Transport("tcp", 443),
        interface="bw-ot443",
        network=NETWORK,
        pki=files,
        management=tmp_path / "m.sock",
    )
    lines = text.splitlines()
    for needed in (
        "proto tcp-server",
        "port 443",
        "management-client-auth",
        "verify-client-cert none",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
        "tls-version-min 1.2",
        f"tls-crypt {files.tls_crypt}",
        'push "topology subnet"',
    ):
        assert needed in lines, needed
    assert "198.51.100.7" not in redact("198.51.100.7:4431 TLS: Initial packet")
    assert "2001:db8::7" not in redact("[2001:db8::7]:1194 Peer Connection Initiated")


@needs("ip")
async def test_a_per_server_refusal_is_kept_for_the_report_without_the_clients_address(
    rig: Rig,
) -> None:
    from burrow.wire import ConnectionRefusal, DesiredState

    laptop, phone = device(2, "laptop", limit=1), device(3, "phone", limit=1)
    rig.desired.replace(DesiredState(revision=2, network=NETWORK, peers=(laptop, phone)))
    assert (await rig.connect("1", "laptop")).startswith("client-auth 1 1")
    refused = await rig.connect("2", "phone")
    assert refused.startswith('client-deny 2 1 "refused" "Your plan allows 1 OpenVPN connection')
    # Wrong credentials are not the device's doing: never reported against it.
    await rig.connect("3", "laptop", "wrong")
    (refusal,) = rig.node.refusals()
    assert refusal == ConnectionRefusal(
        public_key=phone.public_key, protocol="openvpn", reason=refusal.reason
    )
    assert refusal.reason in refused
    assert "198.51.100.77" not in repr(rig.node.refusals())
    # Once the device gets in, its refusal is over.
    await rig.say(">CLIENT:DISCONNECT,1", ">CLIENT:ENV,END")
    await asyncio.sleep(0.05)
    assert (await rig.connect("4", "phone")).startswith("client-auth 4 1")
    assert rig.node.refusals() == []
