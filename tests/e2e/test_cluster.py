"""The cluster: three ``burrow serve`` replicas behind HAProxy, on PostgreSQL and Redis.

One lab for the module (``tests/e2e/lab.py``): the control-plane host runs HAProxy (from
``deploy/cluster/haproxy.cfg``) on the API port, three replicas on loopback behind it and a
Redis with nothing on disk; PostgreSQL is the test session's server, reached through its Unix
socket (a socket file crosses network namespaces). Two real nodes and real customer tunnels
talk to HAProxy only.

It shows: a change made on one replica reaches nodes polling another within a second; a
customer's connection limit holds while the nodes' reports land on different replicas; each
scheduled job runs once per interval across the replicas; and ``kill -9`` of a replica that
holds a node's long poll costs no change and no tunnel.
"""

from __future__ import annotations

import itertools
import re
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis

from burrow.control.scheduler import JOB_LEASES
from tests.conftest import ROOT
from tests.node.netns import unique_name
from tests.support import postgres

from .lab import (
    API_PORT,
    BURROW,
    NODES,
    SHORT_IDLE_SECONDS,
    Host,
    NetnsHttp,
    NodeRun,
    Proc,
    Tunnel,
    World,
    build_world,
    run_db,
    tcp_open,
    wait_for,
)

REPLICA_PORTS = (8081, 8082, 8083)
INTERVAL = 1.0


class Cluster:
    def __init__(self, world: World, redis_socket: Path) -> None:
        self.world = world
        self.redis_socket = redis_socket
        self.replicas: dict[int, Proc] = {}
        self.direct: dict[int, NetnsHttp] = {}

    def start_replica(self, port: int) -> None:
        world = self.world
        self.replicas[port] = world.spawn(
            world.ctl.ns,
            f"serve-{port}",
            BURROW, "serve", "--host", "127.0.0.1", "--port", str(port),
            env=world.control_env(),
        )  # fmt: skip
        if port not in self.direct:
            self.direct[port] = NetnsHttp(world.ctl.ns.name, f"http://127.0.0.1:{port}")

        def up() -> bool:
            if not self.replicas[port].alive():
                raise AssertionError(self.replicas[port].output()[-3000:])
            try:
                return self.direct[port].request("GET", "/healthz").status_code == 200
            except Exception:
                return False

        wait_for(up, 60, f"replica {port} to answer")

    def redis(self) -> Redis:
        return Redis(unix_socket_path=str(self.redis_socket))

    def polls_held(self) -> dict[int, int]:
        """Established connections HAProxy holds to each replica (``ss`` in the host)."""
        out = self.world.ctl.ns.run("ss", "-Htn", "state", "established").stdout
        counts = dict.fromkeys(REPLICA_PORTS, 0)
        for line in out.splitlines():
            for port in REPLICA_PORTS:
                if re.search(rf"127\.0\.0\.1:{port}\s", line):
                    counts[port] += 1
        return counts


def _haproxy_config(tmp: Path) -> Path:
    text = (ROOT / "deploy" / "cluster" / "haproxy.cfg").read_text()
    text = text.replace("bind 127.0.0.1:8080", f"bind 0.0.0.0:{API_PORT}")
    servers = "".join(
        f"    server replica{n} 127.0.0.1:{port} check\n"
        for n, port in enumerate(REPLICA_PORTS, start=1)
    )
    text = re.sub(r"(    server replica\d .*\n)+", servers, text)
    path = tmp / "haproxy.cfg"
    path.write_text(text)
    return path


def _prepare(world: World, server: postgres.PostgresServer) -> None:
    """The lab's database on PostgreSQL, an admin, the internet's servers, the API client."""
    from burrow.control.config import Settings
    from burrow.control.policy.service import check_file
    from tests.support.factories import create_account, create_session_token

    from .lab import HERE, PYTHON, SECRET

    name = f"cluster_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {name} TEMPLATE burrow_template")
    policy_path = ROOT / "examples" / "policies" / "strict-no-logs.toml"
    world.settings = Settings(
        environment="test",
        database_url=server.url(name),
        policy_path=policy_path,
        secret_key=SECRET,  # type: ignore[arg-type]
    )
    world.policy, problems = check_file(policy_path)
    assert world.policy is not None, problems

    async def admin(session: Any, _runtime: Any) -> str:
        account = await create_account(session, admin=True)
        return await create_session_token(session, account)

    world.admin_token = run_db(world.settings, admin)
    # The internet: a TCP banner on port 587 that the tunnels' probes reach.
    world.spawn(world.inet.ns, "internet", PYTHON, str(HERE / "internet.py"), "--banner", "587")
    world.api = NetnsHttp(world.ctl.ns.name, f"http://127.0.0.1:{API_PORT}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = postgres.why_unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("cluster")
    with postgres.running_postgres() as server, build_world(tmp, customers=2) as world:
        server.psql("CREATE DATABASE burrow_template")
        from tests.conftest import migrate

        migrate(server.url("burrow_template"))
        _prepare(world, server)
        redis_socket = tmp / "redis.sock"
        world.spawn(
            world.ctl.ns, "redis", "redis-server", "--port", "0",
            "--unixsocket", str(redis_socket), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(tmp),
        )  # fmt: skip
        wait_for(redis_socket.exists, 20, "redis to listen")
        socket_dir = server.datadir.parent
        world.control_extra = {
            "BURROW_DATABASE_URL": server.url(world.settings.database_url.rsplit("/", 1)[1])
            + f"?host={socket_dir}",
            "BURROW_REDIS_URL": f"unix://{redis_socket}",
            "BURROW_SCHEDULER_INTERVAL_SECONDS": str(INTERVAL),
            "BURROW_REVISION_FALLBACK_SECONDS": "30",
            "BURROW_CONNECTION_IDLE_SECONDS": str(SHORT_IDLE_SECONDS),
            "BURROW_CONNECTION_LEASE_TTL_SECONDS": "5",
        }
        world.node_extra = {"BURROW_NODE_IDLE_THRESHOLD_SECONDS": str(SHORT_IDLE_SECONDS)}
        cluster = Cluster(world, redis_socket)
        try:
            for port in REPLICA_PORTS:
                cluster.start_replica(port)
            config = _haproxy_config(tmp)
            world.spawn(world.ctl.ns, "haproxy", "haproxy", "-db", "-f", str(config))
            api = world.api
            assert api is not None
            wait_for(partial(_answers, api), 60, "HAProxy to answer")
            _start_nodes(world)
            yield cluster
        finally:
            for direct in cluster.direct.values():
                direct.close()


def _start_nodes(world: World) -> None:
    """``lab.start_nodes``, with more patience: three replicas share the machine's cores."""
    tokens = []
    for index, (name, country, city) in enumerate(NODES):
        created = world.create_node(index, name, country, city)
        tokens.append((index, created["enrollment"]["token"], created["node"]["id"]))
    world.enroll_and_run(tokens)
    for node in world.nodes:
        wait_for(partial(_has_wireguard, node), 90, f"node {node.index} to serve")


def _has_wireguard(node: NodeRun) -> bool:
    return node.wireguard_go_pid() is not None


def _answers(api: NetnsHttp) -> bool:
    try:
        return api.request("GET", "/healthz").status_code == 200
    except Exception:
        return False


def _customer(world: World, plan_code: str) -> str:
    """A verified customer with a month of ``plan_code``; a session token."""
    from sqlalchemy import select, update

    from burrow.control.models import Account, utcnow
    from tests.support.factories import create_subscription

    assert world.api is not None
    email = f"c{secrets.token_hex(4)}@example.com"
    password = "correct horse battery staple"
    body: dict[str, Any] = {
        "email": email,
        "password": password,
        "accept_terms_version": "2026-11",
    }
    if world.policy is not None and world.policy.age.attestation_required:
        body["age_attestation"] = "adult"
    world.api.call("POST", "/api/v1/accounts", expect=202, json=body)

    async def verify(session: Any, _runtime: Any) -> None:
        await session.execute(
            update(Account).where(Account.email == email).values(email_verified_at=utcnow())
        )
        account = (
            await session.execute(select(Account).where(Account.email == email))
        ).scalar_one()
        await create_subscription(session, account, plan_code=plan_code)

    run_db(world.settings, verify)
    token: str = world.api.call(
        "POST", "/api/v1/sessions", expect=201, json={"email": email, "password": password}
    ).json()["token"]
    return token


def _works(host: Host, world: World) -> bool:
    return tcp_open(host, world.inet.ipv4, 587, timeout=1.0)


def _serves_everywhere(world: World, key: str) -> bool:
    return all(key in node.peers() for node in world.nodes)


def test_a_change_on_one_replica_reaches_nodes_polling_another_within_a_second(
    cluster: Cluster,
) -> None:
    world = cluster.world
    token = _customer(world, "personal-monthly")
    node_id = world.nodes[0].node_id
    for port in REPLICA_PORTS:  # two nodes, three replicas: some node polls another each time
        device = cluster.direct[port].call(
            "POST", "/api/v1/devices", token=token, expect=201,
            json={"name": f"via {port}", "node_id": node_id},
        ).json()  # fmt: skip
        # From the commit (the API's answer) until both nodes' WireGuard serve the peer.
        committed = time.monotonic()
        key = str(device["public_key"])
        wait_for(partial(_serves_everywhere, world, key), 5, "both nodes")
        took = time.monotonic() - committed
        assert took < 1.0, f"the change made on replica {port} took {took:.2f} s"


def test_the_connection_limit_holds_across_replicas(cluster: Cluster) -> None:
    world = cluster.world
    # The personal plan: one WireGuard connection per server. Two devices connect to one node
    # from two places; the node's reports reach whichever replica HAProxy picks each time, and
    # the leases they decide on live in Redis.
    token = _customer(world, "personal-monthly")
    node = world.nodes[0]
    devices = [world.add_device(token, node.node_id, f"d{n}") for n in range(2)]
    for device in devices:
        key = str(device["public_key"])
        wait_for(partial(_serves_everywhere, world, key), 10, "served")
    tunnels = []
    try:
        first = Tunnel(world, world.customers[0], unique_name("bwc"), "")
        tunnels.append(first)
        first.up(devices[0]["config"])
        wait_for(lambda: _works(world.customers[0], world), 20, "the first connection")
        second = Tunnel(world, world.customers[1], unique_name("bwc"), "")
        tunnels.append(second)
        second.up(devices[1]["config"])
        # Refused within seconds of the node's report, as on one replica; then it carries no
        # traffic while the first lasts ...
        wait_for(lambda: not _works(world.customers[1], world), 15, "the second to be refused")
        end = time.monotonic() + 6
        while time.monotonic() < end:
            assert not _works(world.customers[1], world), "two connections on one slot"
        assert _works(world.customers[0], world)
        # ... and it is the limit that held it: once the first ends, the second gets the slot.
        first.down()
        wait_for(lambda: _works(world.customers[1], world), 40, "the second to be admitted")
    finally:
        for tunnel in tunnels:
            tunnel.down()


def _job_takes(cluster: Cluster, seconds: float) -> dict[str, list[tuple[str, float]]]:
    """Each job's runs as seen in Redis over ``seconds``: (holder, taken) per run."""
    seen: dict[str, list[tuple[str, float]]] = {}
    client = cluster.redis()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key in client.scan_iter(match="scheduler:job:*"):
                raw = cast("bytes | None", client.get(key))
                if raw is None:
                    continue
                lease = JOB_LEASES.load(raw.partition(b"\n")[2])
                take = (lease.holder, lease.taken)  # one per run; renewals keep it
                takes = seen.setdefault(key.decode(), [])
                if not takes or takes[-1] != take:
                    takes.append(take)
            time.sleep(0.1)
    finally:
        client.close()
    return seen


def test_each_scheduled_job_runs_once_per_interval_across_the_replicas(
    cluster: Cluster,
) -> None:
    window = 6.0
    seen = _job_takes(cluster, window)
    assert len(seen) >= 10, sorted(seen)  # every job of the scheduler
    holders = set()
    for key, takes in seen.items():
        holders |= {holder for holder, _ in takes}
        # Three replicas each running every job would take it three times an interval.
        assert len(takes) <= window / INTERVAL + 2, (key, takes)
        starts = [taken for _, taken in takes]
        assert all(b - a >= INTERVAL * 0.99 for a, b in itertools.pairwise(starts)), takes
    assert len(holders) >= 2  # the jobs are spread over the replicas, whichever ticks first


def test_kill_9_of_the_replica_holding_a_long_poll_loses_no_change_and_no_tunnel(
    cluster: Cluster,
) -> None:
    world = cluster.world
    token = _customer(world, "personal-monthly")
    node = world.nodes[0]
    device = world.add_device(token, node.node_id, "steady")
    wait_for(lambda: _serves_everywhere(world, device["public_key"]), 10, "served")
    tunnel = Tunnel(world, world.customers[0], unique_name("bwc"), "")
    tunnel.up(device["config"])
    try:
        wait_for(lambda: _works(world.customers[0], world), 10, "the tunnel")
        pids = [n.wireguard_go_pid() for n in world.nodes]
        held = cluster.polls_held()
        victim = max(held, key=lambda port: held[port])
        assert held[victim] > 0, held
        cluster.replicas[victim].stop(signal.SIGKILL, grace=5)

        # A change made right after, through HAProxy: every node gets it.
        added = world.add_device(token, node.node_id, "after the crash")
        wait_for(lambda: _serves_everywhere(world, added["public_key"]), 10, "the new device")
        assert _serves_everywhere(world, device["public_key"])
        assert _works(world.customers[0], world)
        assert [n.wireguard_go_pid() for n in world.nodes] == pids  # no interface restarted
    finally:
        tunnel.down()
        cluster.start_replica(victim)
