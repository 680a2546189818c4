"""Connection limits enforced on real tunnels: the newest connection is refused on its node.

Each example policy runs in a lab of its own (``conftest.metered_world`` / ``strict_world``)
whose agents and control plane count a device as disconnected ``SHORT_IDLE_SECONDS`` after
its last handshake instead of 180 s. A live WireGuard client shakes hands again every
2 minutes, safely inside the production threshold; with the threshold shortened, the clients
here do it every ``SHAKE_SECONDS`` instead (``Tunnel.handshake_again``), so that a device
that is up keeps counting as connected and one whose interface stopped does not.

Every device of an account sits on a customer host of its own (a tunnel takes the host's
default route), and the test probes the internet through each one many times a second.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pytest

from burrow.control.connections.limits import per_server_reason, simultaneous_reason
from tests.node.netns import unique_name

from .lab import (
    SHORT_IDLE_SECONDS,
    Host,
    NetnsSockets,
    NodeRun,
    Tunnel,
    World,
    fetch,
    wait_for,
)

# The promise under test: blocked, and admitted again, within this many seconds.
PROMISE_SECONDS = 5.0
SHAKE_SECONDS = 2.0


@dataclass
class Client:
    """One device of the account, on its own customer host."""

    world: World
    host: Host
    device: dict[str, Any]
    sockets: NetnsSockets
    tunnel: Tunnel | None = None

    @property
    def key(self) -> str:
        return str(self.device["public_key"])

    @property
    def name(self) -> str:
        return str(self.device["name"])

    def connect(self, config: str, private_key: str | None = None) -> None:
        self.tunnel = Tunnel(self.world, self.host, unique_name("bwc"), "")
        self.tunnel.up(config, private_key)

    def disconnect(self) -> None:
        """The interface stops: no more handshakes, as when a device is switched off."""
        if self.tunnel is not None:
            self.tunnel.down()

    def works(self, timeout: float = 1.0) -> bool:
        """Whether the internet (a TCP banner on the lab's internet host) answers."""
        return self.sockets.banner(self.world.inet.ipv4, 587, timeout)

    def poke(self) -> None:
        """One packet into the tunnel: makes a client with no session shake hands."""
        self.sockets.datagram(self.world.inet.ipv4)

    def shake_hands(self) -> None:
        if self.tunnel is not None and self.tunnel.up_now:
            self.tunnel.handshake_again()
            self.poke()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(world: World, host: Host, device: dict[str, Any]) -> Client:
        client = Client(world, host, device, NetnsSockets(host))
        made.append(client)
        return client

    yield make
    for client in made:
        client.disconnect()
        client.sockets.close()


class _Background(threading.Thread):
    """A thread that repeats ``step`` until the ``with`` block ends; re-raises its failure."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.every):
                self.step()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_event.set()
        self.join(10)
        if self.error is not None and exc is None:
            raise self.error


class Handshakes(_Background):
    """Keeps the clients that are up shaking hands every ``SHAKE_SECONDS``."""

    def __init__(self) -> None:
        super().__init__(SHAKE_SECONDS)
        self.clients: list[Client] = []

    def step(self) -> None:
        for client in list(self.clients):
            # A client stopped meanwhile has no socket any more; that is fine.
            with contextlib.suppress(OSError, AssertionError):
                client.shake_hands()


class Watch(_Background):
    """Probes the clients through their tunnels every 0.2 s; keeps every failed probe."""

    def __init__(self, watched: list[Client]) -> None:
        super().__init__(0.2)
        self.watched = watched
        self.probes = 0
        self.failures: list[tuple[float, str]] = []

    def step(self) -> None:
        for client in self.watched:
            self.probes += 1
            if not client.works(timeout=1.5):
                self.failures.append((time.time(), client.name))

    def assert_never_failed(self, minimum_probes: int) -> None:
        assert self.failures == [], f"an older connection lost traffic: {self.failures}"
        assert self.probes >= minimum_probes, f"only {self.probes} probes were made"


def serves(node: NodeRun, device: dict[str, Any]) -> bool:
    return device["public_key"] in node.peers()


def first_handshake(node: NodeRun, client: Client) -> int:
    """The node's record of the client's first handshake (Unix seconds, rounded down)."""
    found: dict[str, int] = {}

    def shaken() -> bool:
        client.poke()
        found["at"] = node.handshakes().get(client.key, 0)
        return found["at"] > 0

    wait_for(shaken, 5, f"{client.name} to shake hands with the node", interval=0.1)
    return found["at"]


def blocked_within(node: NodeRun, client: Client) -> float:
    """Seconds from the client's first handshake to its traffic stopping; checks it stays so."""
    handshake = first_handshake(node, client)
    wait_for(
        lambda: not client.works(timeout=0.5),
        PROMISE_SECONDS + 5,
        f"{client.name} to be blocked",
        interval=0.1,
    )
    took = time.time() - handshake
    for _ in range(5):
        assert not client.works(timeout=0.5), f"{client.name} got traffic while blocked"
        time.sleep(0.2)
    return took


def connection_of(world: World, token: str, client: Client) -> dict[str, Any]:
    assert world.api is not None
    device = world.api.call("GET", f"/api/v1/devices/{client.device['id']}", token=token).json()
    connection: dict[str, Any] = device["connection"]
    return connection


def connections(world: World, token: str) -> list[dict[str, Any]]:
    assert world.api is not None
    listed: list[dict[str, Any]] = world.api.call("GET", "/api/v1/connections", token=token).json()[
        "connections"
    ]
    return listed


def states(world: World, token: str) -> set[tuple[int, str, str, str | None]]:
    return {
        (c["device_id"], c["node_name"], c["state"], c["reason"]) for c in connections(world, token)
    }


# --- metered: two simultaneous connections across the fleet -------------------------------------


def test_a_third_connection_is_blocked_and_admitted_once_an_older_one_counts_as_gone(
    metered_world: World, clients: Callable[..., Client]
) -> None:
    world = metered_world
    node = world.nodes[0]
    token = world.new_customer()
    devices = [world.add_device(token, node.node_id, name=f"device {n}") for n in (1, 2, 3)]
    wait_for(lambda: all(serves(node, d) for d in devices), 5, "the node to serve all three")
    first, second, third = (
        clients(world, host, device) for host, device in zip(world.customers, devices, strict=True)
    )
    reason = simultaneous_reason(2)

    with Handshakes() as shaking:
        for client in (first, second):
            client.connect(client.device["config"])
            shaking.clients.append(client)
            wait_for(client.works, 10, f"{client.name} to get traffic")
        # Connections are ordered by the report that first shows them: the control plane must
        # have seen the first two before the third comes.
        wait_for(
            lambda: (
                {c["state"] for c in connections(world, token)} == {"connected"}
                and len(connections(world, token)) == 2
            ),
            5,
            "the control plane to count the first two as connected",
        )

        with Watch([first, second]) as watch:
            third.connect(third.device["config"])
            shaking.clients.append(third)
            took = blocked_within(node, third)
            assert took < PROMISE_SECONDS, f"blocked {took:.1f} s after its first handshake"
            assert connection_of(world, token, third) == {
                "state": "blocked",
                "reason": reason,
                "node_name": "ams-1",
            }
            assert connection_of(world, token, first)["state"] == "connected"
            assert states(world, token) == {
                (first.device["id"], "ams-1", "connected", None),
                (second.device["id"], "ams-1", "connected", None),
                (third.device["id"], "ams-1", "blocked", reason),
            }
            # Metered mode shows since when each connection is up.
            assert all(c["connected_since"] for c in connections(world, token))
            # Several rounds of handshakes, and the third is still refused.
            time.sleep(2 * SHAKE_SECONDS)
            assert not third.works(timeout=0.5)
        watch.assert_never_failed(minimum_probes=10)
        print(f"\nthird device blocked {took:.2f} s after its first handshake")

        # The first device goes away: its last handshake ages past the idle threshold.
        shaking.clients.remove(first)
        first.disconnect()
        time.sleep(0.3)  # a handshake that was under way lands
        gone_at = node.handshakes()[first.key] + SHORT_IDLE_SECONDS
        with Watch([second]) as watch:
            while not third.works(timeout=0.5):
                assert time.time() < gone_at + PROMISE_SECONDS + 5, "the third was never admitted"
                time.sleep(0.1)
            admitted = time.time()
        watch.assert_never_failed(minimum_probes=5)
        assert admitted > gone_at, (
            f"admitted {gone_at - admitted:.1f} s before the first counted as disconnected"
        )
        waited = admitted - gone_at
        assert waited < PROMISE_SECONDS, f"admitted {waited:.1f} s after the slot freed"
        print(f"third device admitted {waited:.2f} s after the first counted as disconnected")
        assert connection_of(world, token, third) == {
            "state": "connected",
            "reason": None,
            "node_name": "ams-1",
        }
        assert states(world, token) == {
            (second.device["id"], "ams-1", "connected", None),
            (third.device["id"], "ams-1", "connected", None),
        }
        assert connection_of(world, token, first)["state"] == "idle"
        assert second.works()


# --- strict: one WireGuard connection per server and subscription -------------------------------


def test_a_second_device_on_the_same_server_is_blocked_and_works_through_another(
    strict_world: World, clients: Callable[..., Client]
) -> None:
    world = strict_world
    near, far = world.nodes
    token = world.new_customer()
    laptop = world.add_device(token, near.node_id, name="laptop")
    phone = world.add_device(token, near.node_id, name="phone")
    wait_for(lambda: serves(near, laptop) and serves(near, phone), 5, "the node to serve both")
    first = clients(world, world.customers[0], laptop)
    second = clients(world, world.customers[1], phone)
    reason = per_server_reason(1, "wireguard", "ams-1")

    with Handshakes() as shaking, Watch([first]) as watch:
        first.connect(laptop["config"])
        shaking.clients.append(first)
        wait_for(first.works, 10, "the first device to get traffic")
        wait_for(
            lambda: connection_of(world, token, first)["state"] == "connected",
            5,
            "the control plane to count the first device as connected",
        )

        second.connect(phone["config"])
        shaking.clients.append(second)
        took = blocked_within(near, second)
        assert took < PROMISE_SECONDS, f"blocked {took:.1f} s after its first handshake"
        print(f"\nsecond device on ams-1 blocked {took:.2f} s after its first handshake")
        assert connection_of(world, token, second) == {
            "state": "blocked",
            "reason": reason,
            "node_name": "ams-1",
        }
        listed = connections(world, token)
        assert {(c["device_name"], c["state"], c["reason"]) for c in listed} == {
            ("laptop", "connected", None),
            ("phone", "blocked", reason),
        }
        # Strict mode shows no times.
        assert all(c["connected_since"] is None for c in listed)

        # The customer does what the reason says: the same device, through the other server.
        second.disconnect()
        config = world.config(token, phone["id"], far.node_id)
        second.connect(config, private_key=phone["private_key"])
        started = time.monotonic()
        wait_for(second.works, 10, "the second device to get traffic through fra-1")
        print(f"second device through fra-1 works after {time.monotonic() - started:.2f} s")
        # The traffic may pass before fra-1's next report says it is connected there.
        wait_for(
            lambda: (
                connection_of(world, token, second)
                == {"state": "connected", "reason": None, "node_name": "fra-1"}
            ),
            3,
            "the control plane to count the second device as connected through fra-1",
        )
        assert (phone["id"], "fra-1", "connected", None) in states(world, token)
        before = len(world.web_clients())
        assert fetch(second.host, f"http://{world.inet.ipv4}/file") == world.web_file
        assert world.web_clients()[before:] == [far.host.ipv4]
        time.sleep(SHAKE_SECONDS)
        assert second.works()
    watch.assert_never_failed(minimum_probes=10)
