"""Benchmark: how fast does a decision on the control plane reach the tunnel?

The lab of the end-to-end tests (tests/e2e/lab.py): a real ``burrow serve``, a real
``burrow node run``, a customer with its own wireguard-go and an "internet" host. Each round:

  grant   the customer adds a device (its own public key) through the API; the clock runs
          from the API call until a TCP connection through the tunnel to the internet host
          first succeeds. The client keeps re-arming its handshake (WireGuard itself would only
          retry after 5 s), so what is measured is the control plane, the long poll and the
          agent, not WireGuard's retry timer.
  revoke  the device is removed through the API; the clock runs from the API call until the
          last TCP connection through the tunnel that still succeeded. Probes run back to back
          and stop after a second of silence.

p50 and p99 over ``--rounds`` rounds (default 50). Goal: p99 under 1 s for both.

Run as root: ``.venv/bin/python bench/reaction.py [--rounds 50]``. Progress goes to stderr;
the last line on stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.lab import (  # noqa: E402
    World,
    _enter_netns,
    build_world,
    prepare_world,
    wait_for,
)
from tests.node.netns import unique_name  # noqa: E402

from burrow.node.identity import new_private_key, public_key_of  # noqa: E402

PROBE_TIMEOUT = 0.05
SILENCE = 1.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def hexkey(key: str) -> str:
    return base64.b64decode(key).hex()


def uapi_set(interface: str, lines: list[str]) -> None:
    """One raw ``set=1`` on the client's socket (the client side needs endpoint lines)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(f"/var/run/wireguard/{interface}.sock")
        sock.sendall(("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n").encode())
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if b"errno=0" not in answer:
        raise RuntimeError(f"client UAPI refused: {answer!r}")


class Client:
    """The customer's WireGuard and a prober that lives in the customer's namespace."""

    def __init__(self, world: World, node_public_key: str, endpoint: str) -> None:
        self.world = world
        self.host = world.customers[0]
        self.interface = unique_name("bwc")
        self.node_key = hexkey(node_public_key)
        self.endpoint = endpoint
        self.address: str | None = None
        world.spawn(self.host.ns, "client", "wireguard-go", "-f", self.interface)
        sock = Path(f"/var/run/wireguard/{self.interface}.sock")
        wait_for(sock.exists, 5, "the client's socket")
        self.host.ns.ip("link", "set", self.interface, "mtu", "1320", "up")
        self.host.ns.ip("route", "replace", f"{endpoint.split(':')[0]}/32", "via",
                        self.host.gateway4)  # fmt: skip
        self.host.ns.ip("route", "replace", f"{world.inet.ipv4}/32", "dev", self.interface)
        self.probes = ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(self.host.ns.name,))

    def use_key(self, private_key: str) -> None:
        uapi_set(self.interface, [f"private_key={hexkey(private_key)}", "replace_peers=true"])
        self.rearm()

    def rearm(self) -> None:
        """Forget the session and add the server again: the next packet starts a handshake."""
        uapi_set(
            self.interface,
            [
                f"public_key={self.node_key}",
                "remove=true",
                f"public_key={self.node_key}",
                f"endpoint={self.endpoint}",
                "replace_allowed_ips=true",
                "allowed_ip=0.0.0.0/0",
            ],
        )

    def set_address(self, ipv4: str) -> None:
        if ipv4 != self.address:
            if self.address is not None:
                self.host.ns.ip("address", "del", f"{self.address}/32", "dev", self.interface)
            self.host.ns.ip("address", "add", f"{ipv4}/32", "dev", self.interface)
            self.address = ipv4

    def probe(self) -> bool:
        def connect() -> bool:
            try:
                with socket.create_connection(
                    (self.world.inet.ipv4, 587), timeout=PROBE_TIMEOUT
                ) as conn:
                    return conn.recv(3) == b"220"
            except OSError:
                return False

        return self.probes.submit(connect).result()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the benchmark builds network namespaces")

    grants: list[float] = []
    revokes: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="burrow-reaction-") as tmp,
        build_world(Path(tmp)) as world,
    ):
        log("building the lab: control plane, one node, a customer")
        prepare_world(world)
        world.start_control_plane()
        created = world.create_node(0, "ams-1", "NL", "Amsterdam")
        world.enroll_and_run([(0, created["enrollment"]["token"], created["node"]["id"])])
        node = world.nodes[0]
        wait_for(lambda: node.wireguard_go_pid() is not None, 30, "the node to serve")
        assert world.api is not None
        servers = world.api.call("GET", "/api/v1/servers").json()
        server = next(s for s in servers if s["id"] == node.node_id)
        wait_for(lambda: bool(server["public_key"]), 1, "the node's key")
        token = world.new_customer()
        client = Client(world, server["public_key"], server["endpoint"])
        for round_ in range(args.rounds):
            private_key = new_private_key()
            client.use_key(private_key)
            start = time.monotonic()
            device = world.api.call(
                "POST",
                "/api/v1/devices",
                token=token,
                expect=201,
                json={"name": f"r{round_}", "public_key": public_key_of(private_key)},
            ).json()
            client.set_address(device["ipv4"])
            while not client.probe():
                if time.monotonic() - start > 30:
                    raise RuntimeError("no traffic 30 s after the grant")
                client.rearm()
            grants.append(time.monotonic() - start)

            for _ in range(5):
                assert client.probe(), "the tunnel is not steady"
            start = time.monotonic()
            world.api.call("DELETE", f"/api/v1/devices/{device['id']}", token=token, expect=204)
            last_ok = start
            while time.monotonic() - last_ok < SILENCE:
                if client.probe():
                    last_ok = time.monotonic()
                if time.monotonic() - start > 30:
                    raise RuntimeError("traffic still flows 30 s after the revoke")
            revokes.append(last_ok - start)
            log(f"round {round_ + 1}: grant {grants[-1]:.3f} s, revoke {revokes[-1]:.3f} s")
        client.probes.shutdown()

    figures = {
        "grant_p50_s": round(statistics.median(grants), 3),
        "grant_p99_s": round(percentile(grants, 99), 3),
        "revoke_p50_s": round(statistics.median(revokes), 3),
        "revoke_p99_s": round(percentile(revokes, 99), 3),
        "rounds": args.rounds,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
