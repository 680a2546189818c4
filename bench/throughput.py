"""Benchmark: does the burrow agent cost the data path anything?

Three paths from a client namespace to a server namespace, each measured with ``iperf3 -t 5``
(TCP, client to server), in one run:

  raw   the client's veth to a router namespace and on to the server: no tunnel.
  hand  a wireguard-go tunnel configured by hand (``wg set``, one nft masquerade rule) in a
        router namespace of its own.
  node  a real ``burrow node run`` in a third router namespace, serving the client among
        10,000 other peers (its whole desired state), with burrow's own nftables table, and
        reporting status at its default interval (5 s; ``--report-interval``). Its control
        plane is a small fake of the node API (the agent cannot tell): the control plane
        plays no part in the data path.

The agent is paused (SIGSTOP) while the other paths are measured, so it does not steal their
CPU. hand and node alternate over ``--rounds`` rounds; the figures are medians. The agent's
own CPU use during the node runs is printed too (``agent_cpu_percent`` of one core). Then, with
``--rss``, the agent's resident memory and its CPU with nothing changing (status reads every
``--report-interval``) serving 65,000 peers and 100,000 (over two interfaces: wireguard-go
holds at most 65,536 per interface).

Run as root: ``.venv/bin/python bench/throughput.py [--rounds 3] [--others 10000] [--rss]``.
Progress goes to stderr; the last line on stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node.netns import Lab, Namespace, unique_name  # noqa: E402

from burrow.node.identity import NodeIdentity, new_private_key, public_key_of, save_identity  # noqa: E402
from burrow.wire import (  # noqa: E402
    DeltaState,
    DesiredState,
    FullState,
    NetworkSpec,
    PeerSpec,
    ReportAck,
)

BURROW = str(Path(sys.executable).with_name("burrow"))
POOL4 = ipaddress.IPv4Address("10.64.0.0")
POOL6 = ipaddress.IPv6Address("fd42:b0::")
CLONE_NEWNET = 0x40000000
MTU = 1320
MAX_PEERS = 1 << 16  # wireguard-go's limit per interface


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def peer_spec(index: int, key: str | None = None) -> PeerSpec:
    return PeerSpec.model_construct(
        public_key=key or random_key(),
        allowed_ips=(f"{POOL4 + index}/32", f"{POOL6 + index}/128"),
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- a fake node API, served from inside a namespace ------------------------------------------


class FakeControlPlane:
    """Serves one desired state; the long poll just waits. Counts the reports it gets."""

    def __init__(self, ns: Namespace, network: NetworkSpec) -> None:
        self.ns = ns
        self.network = network
        self.state = b""
        self.reports = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def set_peers(self, peers: list[PeerSpec], revision: int) -> None:
        state = DesiredState.model_construct(
            revision=revision, network=self.network, peers=tuple(peers)
        )
        self.state = FullState.model_construct(kind="full", state=state).model_dump_json().encode()

    def start(self) -> None:
        fake = self
        ready = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body: bytes) -> None:
                # The agent may be gone (stopped mid long poll): nobody to answer.
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.endswith("/state"):
                    self._send(fake.state)
                    return
                query = parse_qs(url.query)
                since = int(query["since"][0])
                time.sleep(min(float(query.get("timeout", ["25"])[0]), 25))
                delta = DeltaState(from_revision=since, revision=since, network=fake.network)
                self._send(delta.model_dump_json().encode())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.reports += 1
                ack = ReportAck(accepted=True, last_seq=fake.reports)
                self._send(ack.model_dump_json().encode())

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


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


# --- the lab ----------------------------------------------------------------------------------


def wg_go(lab: Lab, ns: Namespace, interface: str) -> subprocess.Popen[str]:
    proc = ns.spawn("wireguard-go", "-f", interface)
    sock = Path(f"/var/run/wireguard/{interface}.sock")
    deadline = time.monotonic() + 5
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go {interface} gave no socket")
        time.sleep(0.01)
    return proc


def wg_set(ns: Namespace, interface: str, *args: str, private_key: str | None = None) -> None:
    argv = ["wg", "set", interface, *args]
    if private_key is not None:
        argv[3:3] = ["private-key", "/dev/stdin"]
    ns.run(*argv, input=(private_key + "\n") if private_key else None)


def iperf(client: Namespace, server_address: str, seconds: int) -> float:
    out = client.run(
        "iperf3", "-c", server_address, "-t", str(seconds), "-J", timeout=seconds + 30,
    ).stdout  # fmt: skip
    result = json.loads(out)
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6


class Bench:
    def __init__(
        self,
        lab: Lab,
        tmp: Path,
        others: int,
        report_interval: float = 5.0,
        hand_others: int = 0,
    ) -> None:
        self.report_interval = report_interval
        self.hand_others = hand_others
        self.lab = lab
        self.tmp = tmp
        self.others = others
        # client --+-- raw router ---+
        #          +-- hand node  ---+-- server
        #          +-- burrow node --+
        self.client = lab.namespace()
        self.server = lab.namespace()
        self.routers: dict[str, Namespace] = {}
        self.server_addresses: dict[str, str] = {}
        self.endpoints: dict[str, str] = {}
        self.egress: dict[str, str] = {}
        for i, name in enumerate(("raw", "hand", "node")):
            router = lab.namespace()
            self.routers[name] = router
            c4, r4 = f"198.51.100.{4 * i + 1}", f"198.51.100.{4 * i + 2}"
            s4, t4 = f"203.0.113.{4 * i + 1}", f"203.0.113.{4 * i + 2}"
            lab.link(self.client, router, [f"{c4}/30"], [f"{r4}/30"])
            _, egress = lab.link(self.server, router, [f"{s4}/30"], [f"{t4}/30"])
            router.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            self.endpoints[name] = r4
            self.server_addresses[name] = s4
            self.egress[name] = egress
            # The server answers through the router it was reached by (its addresses differ).
            self.server.ip("route", "add", f"{c4}/32", "via", t4)
        self.client.ip("route", "add", f"{self.server_addresses['raw']}/32", "via",
                       self.endpoints["raw"])  # fmt: skip
        self.iperf_server = self.server.spawn("iperf3", "-s")
        self.client_key = new_private_key()
        self.client_pub = public_key_of(self.client_key)
        self.agent: subprocess.Popen[str] | None = None

    def client_tunnel(self, name: str, server_key: str) -> None:
        """The client's own wireguard-go towards ``name``'s router, routing its server there."""
        interface = unique_name("bwc")
        wg_go(self.lab, self.client, interface)
        wg_set(
            self.client, interface,
            "peer", server_key, "endpoint", f"{self.endpoints[name]}:51820",
            "allowed-ips", "0.0.0.0/0",
            private_key=self.client_key,
        )  # fmt: skip
        self.client.ip("address", "add", "10.64.0.2/32", "dev", interface)
        self.client.ip("link", "set", interface, "mtu", str(MTU), "up")
        self.client.ip("route", "add", f"{self.server_addresses[name]}/32", "dev", interface)

    def setup_hand(self) -> None:
        router = self.routers["hand"]
        interface = unique_name("bwh")
        server_key = new_private_key()
        wg_go(self.lab, router, interface)
        wg_set(
            router, interface, "listen-port", "51820",
            "peer", self.client_pub, "allowed-ips", "10.64.0.2/32",
            private_key=server_key,
        )  # fmt: skip
        if self.hand_others:
            # The same crowd of idle peers the node serves, set by hand: what wireguard-go
            # itself pays for them, apart from anything burrow does.
            specs = (peer_spec(i) for i in range(3, self.hand_others + 3))
            conf = "".join(
                f"[Peer]\nPublicKey = {s.public_key}\nAllowedIPs = {', '.join(s.allowed_ips)}\n"
                for s in specs
            )
            router.run("wg", "addconf", interface, "/dev/stdin", input=conf)
        router.ip("address", "add", "10.64.0.1/10", "dev", interface)
        router.ip("link", "set", interface, "mtu", str(MTU), "up")
        egress = self.egress["hand"]
        router.run(
            "nft", "-f", "-",
            input=(
                "table ip handnat {\n chain post {\n"
                "  type nat hook postrouting priority srcnat; policy accept;\n"
                f'  oifname "{egress}" ip saddr 10.64.0.0/10 masquerade\n }}\n}}\n'
            ),
        )  # fmt: skip
        self.client_tunnel("hand", public_key_of(server_key))

    def setup_node(self, rss: bool) -> None:
        router = self.routers["node"]
        network = NetworkSpec(
            listen_port=51820,
            tunnel_ipv4="10.64.0.0/10",
            tunnel_ipv6="fd42:b0::/48",
            gateway_ipv4="10.64.0.1",
            gateway_ipv6="fd42:b0::1",
        )
        self.fake = FakeControlPlane(router, network)
        peers = [peer_spec(2, self.client_pub)]
        peers += [peer_spec(i) for i in range(3, self.others + 3)]
        self.fake.set_peers(peers, revision=1)
        self.fake.start()
        node_key = new_private_key()
        self.interface = unique_name("bwn")
        self.state_dir = self.tmp / "node"
        save_identity(
            self.state_dir,
            NodeIdentity(
                control_url=f"http://127.0.0.1:{self.fake.port}",
                node_id=1,
                node_name="bench",
                interface_name=self.interface,
                private_key=node_key,
                node_token="bwn_bench",  # noqa: S106 - the fake checks nothing
            ),
        )
        self.start_agent()
        self.client_tunnel("node", public_key_of(node_key))

    def start_agent(self) -> None:
        env = {
            **os.environ,
            "BURROW_NODE_INTERFACE": self.interface,
            "BURROW_NODE_REPORT_INTERVAL_SECONDS": str(self.report_interval),
            "BURROW_NODE_EGRESS_INTERFACE": self.egress["node"],
        }
        router = self.routers["node"]
        self.agent_log = (self.tmp / "agent.log").open("ab")
        self.agent = subprocess.Popen(
            router.argv(BURROW, "node", "run", "--state-dir", str(self.state_dir)),
            stdout=self.agent_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.lab.track(self.agent.pid)

    def served(self) -> int:
        """Peers on the node's interfaces (past 65,536 the agent runs a second one)."""
        total = 0
        for name in (self.interface, *(f"{self.interface}-{n}" for n in range(1, 4))):
            out = subprocess.run(
                ["wg", "show", name, "peers"], capture_output=True, text=True, check=False
            ).stdout
            total += len(out.split())
        return total

    def wait_served(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.served() == count:
                return
            if self.agent is not None and self.agent.poll() is not None:
                raise RuntimeError("the agent exited; see its log")
            time.sleep(0.2)
        raise RuntimeError(f"the node did not come to serve {count} peers")

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
        self.agent = None


def agent_at(bench: Bench, size: int, window: float) -> tuple[float, float]:
    """The agent's RSS and its CPU (percent of one core, over ``window`` seconds of status
    reports with nothing changing) once it serves ``size`` peers; past 65,536 over a second
    interface."""
    bench.stop_agent()
    peers = [peer_spec(i) for i in range(2, size + 2)]
    bench.fake.set_peers(peers, revision=2)
    bench.start_agent()
    bench.wait_served(size, timeout=600)
    time.sleep(2 * bench.report_interval)  # the first reads (every peer new) are behind us
    assert bench.agent is not None
    before = cpu_seconds(bench.agent.pid)
    time.sleep(window)
    cpu = 100 * (cpu_seconds(bench.agent.pid) - before) / window
    rss = rss_mb(bench.agent.pid)
    log(f"agent serving {size} peers: {rss} MB RSS, {cpu:.2f} % of a core with nothing changing")
    return rss, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--report-interval", type=float, default=5.0, help="the agent's status interval (s)"
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--others", type=int, default=10_000)
    parser.add_argument(
        "--hand-others",
        type=int,
        default=0,
        help="idle peers the hand-configured tunnel serves too (0: the client alone)",
    )
    parser.add_argument(
        "--rss", action="store_true", help="also the agent's memory and idle CPU at 65k/100k"
    )
    parser.add_argument("--cpu-window", type=float, default=30.0, help="seconds, with --rss")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")

    import tempfile

    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="burrow-bench-") as tmp, Lab(prefix="bwb") as lab:
        bench = Bench(lab, Path(tmp), args.others, args.report_interval, args.hand_others)
        try:
            bench.setup_hand()
            log(f"starting the agent with {args.others + 1} peers")
            bench.setup_node(args.rss)
            bench.wait_served(args.others + 1)
            time.sleep(1)
            raw, hand, node = [], [], []
            reports = bench.fake.reports
            agent_cpu = 0.0
            for round_ in range(args.rounds):
                bench.pause_agent(True)
                raw.append(iperf(bench.client, bench.server_addresses["raw"], args.seconds))
                hand.append(iperf(bench.client, bench.server_addresses["hand"], args.seconds))
                bench.pause_agent(False)
                assert bench.agent is not None
                cpu_before = cpu_seconds(bench.agent.pid)
                node.append(iperf(bench.client, bench.server_addresses["node"], args.seconds))
                agent_cpu += cpu_seconds(bench.agent.pid) - cpu_before
                log(
                    f"round {round_ + 1}: raw {raw[-1]:.0f}, hand {hand[-1]:.0f}, "
                    f"node {node[-1]:.0f} Mbit/s"
                )
            assert bench.fake.reports > reports, "the agent did not report during the runs"
            assert bench.agent is not None
            rss_10k = rss_mb(bench.agent.pid)
            figures = {
                "raw_mbit": round(statistics.median(raw), 1),
                "hand_mbit": round(statistics.median(hand), 1),
                "node_mbit": round(statistics.median(node), 1),
                "ratio_node_vs_hand": round(statistics.median(node) / statistics.median(hand), 3),
                # Each round's node run against the hand run just before it: less exposed to
                # load that comes and goes on the machine.
                "ratio_paired_median": round(
                    statistics.median(n / h for n, h in zip(node, hand, strict=True)), 3
                ),
                "other_peers": args.others,
                "hand_other_peers": args.hand_others,
                "agent_cpu_percent": round(100 * agent_cpu / (args.rounds * args.seconds), 2),
                "report_interval_s": args.report_interval,
                "agent_rss_mb": rss_10k,
                "rounds": args.rounds,
            }
            if args.rss:
                for size, tag in ((65_000, "65k"), (100_000, "100k")):
                    rss, cpu = agent_at(bench, size, args.cpu_window)
                    figures[f"agent_rss_mb_{tag}"] = rss
                    figures[f"agent_cpu_percent_{tag}"] = round(cpu, 2)
        finally:
            bench.stop_agent()
            with suppress(Exception):
                bench.fake.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
