"""Benchmark: OpenVPN through a burrow node against a hand-configured OpenVPN server.

Two figures, both measured in this run:

  throughput   ``iperf3 -t N`` (TCP, client to server) through two OpenVPN servers that differ
               only in who runs them, alternating over ``--rounds`` rounds (the agent paused
               while the hand server is measured, as in ``throughput.py``):
                 hand  ``openvpn`` started by hand in a router namespace with the same PKI,
                       tls-crypt key and ciphers (AES-256-GCM), a username/password check by
                       a trivial script and one nft masquerade rule;
                 node  a real ``burrow node run`` in another router namespace, serving the
                       client's device among ``--others`` other devices (1,000) with OpenVPN
                       credentials, burrow's nftables table, status reports every 5 s. Its
                       control plane is a small fake of the node API.
               The client's profile for the node is the control plane's own ``.ovpn``
               (``render_ovpn``); it is run with ``--route-nopull`` so that both tunnels can be
               up at once, each routing only its own server's address.
  decision     the management hook's connect-to-decision time: ``>CLIENT:CONNECT`` and its
               ENV lines written to the agent's real management code (``OpenVpnProcess``) on a
               socket, until its ``client-auth ... END`` answer (credential check, per-server
               count, host routes to the tun added with ``ip``), with ``--devices`` (10,000)
               devices in the desired state; ``--decisions`` connects of random devices, each
               disconnected again. p50 and p99.

Run as root: ``.venv/bin/python bench/openvpn.py [--rounds 3] [--seconds 5]``. Everything runs
in namespaces named ``bwo…``, removed at the end, also on failure. Progress goes to stderr;
the last line on stdout is one line of JSON (``ratio_node_vs_hand``, ``decision_p99_ms``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node.netns import Lab, Namespace, unique_name  # noqa: E402

from burrow.control.credentials.service import render_ovpn  # noqa: E402
from burrow.control.models import Device, Node  # noqa: E402
from burrow.node.drivers.openvpn import OpenVpnNode, Transport  # noqa: E402
from burrow.node.identity import NodeIdentity, new_private_key, save_identity  # noqa: E402
from burrow.node.pki import NodePki, ensure_pki  # noqa: E402
from burrow.node.reconcile import DesiredPeers  # noqa: E402
from burrow.wire import (  # noqa: E402
    CredentialSpec,
    DeltaState,
    DesiredState,
    FullState,
    NetworkSpec,
    PeerSpec,
    ReportAck,
    openvpn_verifier,
)

BURROW = str(Path(sys.executable).with_name("burrow"))
POOL4 = ipaddress.IPv4Address("10.64.0.0")
POOL6 = ipaddress.IPv6Address("fd42:b0::")
CLONE_NEWNET = 0x40000000
NETWORK = NetworkSpec(
    listen_port=51820,
    tunnel_ipv4="10.64.0.0/10",
    tunnel_ipv6="fd42:b0::/48",
    gateway_ipv4="10.64.0.1",
    gateway_ipv6="fd42:b0::1",
)
SECRET = "bench-secret-" + "x" * 30


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def device_spec(index: int, verifier: str) -> PeerSpec:
    return PeerSpec.model_construct(
        public_key=random_key(),
        allowed_ips=(f"{POOL4 + index}/32", f"{POOL6 + index}/128"),
        credentials=(
            CredentialSpec.model_construct(
                protocol="openvpn", username=f"dev{index}", verifier=verifier
            ),
        ),
        subscription=f"sub{index // 3}",
        per_server=(),
    )


def devices(count: int) -> list[PeerSpec]:
    # One verifier for all (each with its own would only slow the set-up): same check cost.
    verifier = openvpn_verifier(SECRET)
    return [device_spec(i, verifier) for i in range(2, count + 2)]


def enter_netns(name: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class FakeControlPlane:
    """Serves one desired state; the long poll waits; reports and OpenVPN offers are taken."""

    def __init__(self, ns: Namespace, peers: list[PeerSpec]) -> None:
        self.ns = ns
        state = DesiredState.model_construct(revision=1, network=NETWORK, peers=tuple(peers))
        self.state = FullState.model_construct(kind="full", state=state).model_dump_json().encode()
        self.reports = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        fake = self
        ready = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body: bytes, status: int = 200) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.endswith("/state"):
                    self._send(fake.state)
                    return
                since = int(parse_qs(url.query)["since"][0])
                time.sleep(20)
                delta = DeltaState(from_revision=since, revision=since, network=NETWORK)
                self._send(delta.model_dump_json().encode())

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._send(b"", 204)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.reports += 1
                self._send(
                    ReportAck(accepted=True, last_seq=fake.reports).model_dump_json().encode()
                )

            def log_message(self, format: str, *args: object) -> None:
                pass

        def serve() -> None:
            enter_netns(fake.ns.name)
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            fake._server = server
            fake.port = server.server_address[1]
            ready.set()
            server.serve_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def iperf(client: Namespace, server_address: str, seconds: int) -> float:
    out = client.run(
        "iperf3", "-c", server_address, "-t", str(seconds), "-J", timeout=seconds + 30,
    ).stdout  # fmt: skip
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


def wait_log(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
    raise RuntimeError(f"{path.name}: no {text!r} after {timeout} s\n{tail}")


class Throughput:
    """client --+-- hand router --+-- server (iperf3)
    +-- node router --+"""

    def __init__(self, lab: Lab, tmp: Path, others: int) -> None:
        self.lab, self.tmp, self.others = lab, tmp, others
        self.client = lab.namespace()
        self.server = lab.namespace()
        self.routers: dict[str, Namespace] = {}
        self.endpoint: dict[str, str] = {}
        self.target: dict[str, str] = {}
        self.egress: dict[str, str] = {}
        for i, name in enumerate(("hand", "node")):
            router = lab.namespace()
            self.routers[name] = router
            c4, r4 = f"198.51.100.{4 * i + 1}", f"198.51.100.{4 * i + 2}"
            s4, t4 = f"203.0.113.{4 * i + 1}", f"203.0.113.{4 * i + 2}"
            lab.link(self.client, router, [f"{c4}/30"], [f"{r4}/30"])
            _, egress = lab.link(self.server, router, [f"{s4}/30"], [f"{t4}/30"])
            router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            self.endpoint[name], self.target[name], self.egress[name] = r4, s4, egress
            self.server.ip("route", "add", f"{t4}/32", "via", t4)
        self.server.spawn("iperf3", "-s")
        self.pki = ensure_pki(tmp / "node", "bench", self.endpoint["node"])
        self.agent: subprocess.Popen[bytes] | None = None

    def _pki_files(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(mode=0o700, exist_ok=True)
        files = {}
        for name, text in (
            ("ca", self.pki.ca_certificate),
            ("cert", self.pki.server_certificate),
            ("key", self.pki.server_key),
            ("tc", self.pki.tls_crypt_key),
        ):
            files[name] = directory / name
            files[name].write_text(text)
            files[name].chmod(0o600)
        return files

    def setup_hand(self) -> None:
        router = self.routers["hand"]
        files = self._pki_files(self.tmp / "hand")
        config = self.tmp / "hand" / "server.conf"
        config.write_text(
            "\n".join(
                [
                    "port 1194", "proto udp", "dev tun", "topology subnet",
                    "server 10.99.0.0 255.255.255.0",
                    f"ca {files['ca']}", f"cert {files['cert']}", f"key {files['key']}",
                    f"tls-crypt {files['tc']}", "dh none", "verify-client-cert none",
                    "username-as-common-name", "script-security 2",
                    "auth-user-pass-verify /bin/true via-env",
                    "data-ciphers AES-256-GCM:CHACHA20-POLY1305", "tls-version-min 1.2",
                    "disable-dco", "keepalive 10 60", f"tun-mtu {NETWORK.mtu}", "verb 1",
                ]
            )
            + "\n"
        )  # fmt: skip
        router.spawn("openvpn", "--config", str(config), "--log", str(self.tmp / "hand.log"))
        router.run(
            "nft", "-f", "-",
            input=(
                "table ip handnat {\n chain post {\n"
                "  type nat hook postrouting priority srcnat; policy accept;\n"
                f'  oifname "{self.egress["hand"]}" ip saddr 10.99.0.0/24 masquerade\n }}\n}}\n'
            ),
        )  # fmt: skip
        wait_log(self.tmp / "hand.log", "Initialization Sequence Completed")

    def setup_node(self) -> None:
        router = self.routers["node"]
        mine = device_spec(2, openvpn_verifier(SECRET))
        mine = mine.model_copy(
            update={
                "credentials": (
                    CredentialSpec.model_construct(
                        protocol="openvpn",
                        username="bench-client",
                        verifier=openvpn_verifier(SECRET),
                    ),
                )
            }
        )
        others = [device_spec(i, openvpn_verifier(SECRET)) for i in range(3, self.others + 3)]
        self.fake = FakeControlPlane(router, [mine, *others])
        self.fake.start()
        interface = unique_name("bwn")
        save_identity(
            self.tmp / "node",
            NodeIdentity(
                control_url=f"http://127.0.0.1:{self.fake.port}",
                node_id=1,
                node_name="bench",
                interface_name=interface,
                private_key=new_private_key(),
                node_token="bwn_bench",  # noqa: S106 - the fake checks nothing
            ),
        )
        env = {
            **os.environ,
            "BURROW_NODE_INTERFACE": interface,
            "BURROW_NODE_EGRESS_INTERFACE": self.egress["node"],
            "BURROW_NODE_RUNTIME_DIR": str(self.tmp / "run"),
            "BURROW_NODE_OPENVPN_TRANSPORTS": '["udp:1194"]',
        }
        self.agent_log = self.tmp / "agent.log"
        with self.agent_log.open("ab") as out:
            self.agent = subprocess.Popen(
                router.argv(BURROW, "node", "run", "--state-dir", str(self.tmp / "node")),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.lab.track(self.agent.pid)
        wait_log(self.agent_log, "openvpn serves udp:1194", timeout=120)

    def connect(self, name: str, profile: str, username: str) -> None:
        path = self.tmp / f"{name}.ovpn"
        path.write_text(profile)
        creds = self.tmp / f"{name}.creds"
        creds.write_text(f"{username}\n{SECRET}\n")
        creds.chmod(0o600)
        log_path = self.tmp / f"client-{name}.log"
        self.client.spawn(
            "openvpn", "--config", str(path), "--auth-user-pass", str(creds),
            "--route-nopull", "--log", str(log_path),
        )  # fmt: skip
        wait_log(log_path, "Initialization Sequence Completed")
        device = Path(log_path).read_text()
        found = [
            line for line in device.splitlines() if "TUN/TAP device" in line and "opened" in line
        ]
        tun = found[-1].split("TUN/TAP device ")[1].split()[0]
        self.client.ip("route", "add", f"{self.target[name]}/32", "dev", tun)

    def node_profile(self) -> str:
        node = Node(
            name="bench",
            endpoint_host=self.endpoint["node"],
            openvpn_ca=self.pki.ca_certificate,
            openvpn_tls_crypt=self.pki.tls_crypt_key,
            openvpn_transports="udp:1194",
        )
        return render_ovpn(node, Device(id=1, name="bench"), "bench-client")

    def hand_profile(self) -> str:
        text = self.node_profile().replace(self.endpoint["node"], self.endpoint["hand"])
        return text

    def pause_agent(self, paused: bool) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGCONT)
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()


# --- the decision -------------------------------------------------------------------------------


async def measure_decisions(lab: Lab, tmp: Path, count: int, decisions: int) -> dict[str, float]:
    ns = lab.namespace()
    peers = devices(count)
    desired = DesiredPeers(1, peers)
    pki: NodePki = ensure_pki(tmp / "decide", "bench", "192.0.2.1")
    node = OpenVpnNode(
        pki,
        lambda: desired,
        lambda: NETWORK,
        wg_interface=unique_name("bwd"),
        runtime_dir=tmp / "decide-run",
        transports=[Transport("udp", 1194)],
        netns=ns.name,
    )
    process = node.processes[0]
    ns.ip("tuntap", "add", "dev", process.interface, "mode", "tun")
    ns.ip("link", "set", process.interface, "up")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    process._writer = writer  # the management socket, as openvpn would hold its other end
    loop_task = asyncio.create_task(process._read(reader))
    o_reader, o_writer = await asyncio.open_unix_connection(sock=theirs)

    started = time.perf_counter()
    node.index()
    index_ms = (time.perf_counter() - started) * 1000

    async def answer() -> str:
        lines = []
        while True:
            line = (await o_reader.readline()).decode().rstrip("\n")
            lines.append(line)
            if line in ("END",) or line.startswith("client-deny"):
                return "\n".join(lines)

    rng = random.Random(7)
    times = []
    for n in range(decisions):
        pick = rng.randrange(count) + 2
        cid = str(n)
        block = (
            f">CLIENT:CONNECT,{cid},1\n>CLIENT:ENV,username=dev{pick}\n"
            f">CLIENT:ENV,password={SECRET}\n>CLIENT:ENV,untrusted_ip=192.0.2.55\n"
            ">CLIENT:ENV,END\n"
        )
        start = time.perf_counter()
        o_writer.write(block.encode())
        await o_writer.drain()
        text = await answer()
        times.append((time.perf_counter() - start) * 1000)
        assert text.startswith(f"client-auth {cid} 1"), text
        o_writer.write(f">CLIENT:DISCONNECT,{cid}\n>CLIENT:ENV,END\n".encode())
        await o_writer.drain()
    loop_task.cancel()
    with suppress(asyncio.CancelledError):
        await loop_task
    o_writer.close()
    times.sort()
    return {
        "decision_p50_ms": round(statistics.median(times), 2),
        "decision_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "decision_index_build_ms": round(index_ms, 2),
        "decision_devices": count,
        "decisions": decisions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--others", type=int, default=1_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=500)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="burrow-bench-") as tmp_name, Lab(prefix="bwo") as lab:
        tmp = Path(tmp_name)
        log(f"decisions: {args.decisions} connects with {args.devices} devices in the state")
        figures.update(asyncio.run(measure_decisions(lab, tmp, args.devices, args.decisions)))
        log(f"  p50 {figures['decision_p50_ms']} ms, p99 {figures['decision_p99_ms']} ms")
        bench = Throughput(lab, tmp, args.others)
        try:
            bench.setup_hand()
            log(f"starting the agent with {args.others + 1} devices")
            bench.setup_node()
            bench.connect("hand", bench.hand_profile(), "anyone")
            bench.connect("node", bench.node_profile(), "bench-client")
            hand, node = [], []
            for round_ in range(args.rounds):
                # Alternate which goes first; the agent is paused while the hand server runs,
                # so that its own CPU counts against the node path only.
                for name in ("hand", "node") if round_ % 2 == 0 else ("node", "hand"):
                    bench.pause_agent(name == "hand")
                    figure = iperf(bench.client, bench.target[name], args.seconds)
                    (hand if name == "hand" else node).append(figure)
                bench.pause_agent(False)
                log(f"round {round_ + 1}: hand {hand[-1]:.0f}, node {node[-1]:.0f} Mbit/s")
            assert bench.fake.reports > 0, "the agent did not report"
            figures.update(
                {
                    "hand_mbit": round(statistics.median(hand), 1),
                    "node_mbit": round(statistics.median(node), 1),
                    "ratio_node_vs_hand": round(
                        statistics.median(node) / statistics.median(hand), 3
                    ),
                    "ratio_paired_median": round(
                        statistics.median(n / h for n, h in zip(node, hand, strict=True)), 3
                    ),
                    "other_devices": args.others,
                    "rounds": args.rounds,
                }
            )
        finally:
            bench.stop_agent()
            with suppress(Exception):
                bench.fake.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
