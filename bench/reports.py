"""Benchmark: what node status reports cost a real control plane while nodes long-poll.

A real ``burrow serve`` (uvicorn, SQLite in a temporary directory, loopback only) with
``--nodes`` nodes (default 1,000) and ``--devices`` devices per node (default 100: 100,000
devices in all, seeded with bulk inserts). Lightweight async clients speak the real node API:

  idle      every node holds a long poll open (``/state/changes``) and nothing changes: the
            server's CPU over ``--window`` seconds is the baseline of this run;
  reports   the same long polls, and every node also reports its own devices connected every
            ``--interval`` seconds (5), spread evenly, for ``--rounds`` rounds: each report's
            latency (p50, p99) and the server's CPU per 1,000 reports (gross, and net of the
            idle baseline);
  one node  a node reporting 10,000 connected devices (``--big``), after the load: its first
            report (every lease new), the median of the next full ones (one device changed
            each time: every lease renewed and decided) and of steady ones (nothing changed),
            and the same for a 100-device report, so that the per-peer ratio shows the cost
            is linear.

In the reports phase, ``--churn`` (0.15) of the reports change the node's connected set (one
device connects or disconnects): those are full reports; the rest are steady, as most of a
real node's are.

With ``--cluster`` the same runs against what the issue names: PostgreSQL and Redis (started
here on loopback, persistence off) and two ``burrow serve`` replicas sharing them (the
replicas of ``bench/fanout.py``), the nodes spread over both; the CPU is both replicas'.

Goals (issue 19): ``report_p99_ms`` < 250 and ``report_10k_peers_ms`` < 1,000. Every loop is
bounded in count and time; all traffic stays on 127.0.0.1.

    .venv/bin/python bench/reports.py [--nodes 1000] [--devices 100] [--rounds 3] [--cluster]

Progress goes to stderr; the last line on stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
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
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select

from burrow.control.config import Settings
from burrow.control.models import (
    Account,
    Device,
    Node,
    NodeStatus,
    Plan,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.control.startup import prepare
from burrow.wire import API_PREFIX

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fanout import Replica  # noqa: E402
from bench.nodeclient import NodeConnection  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.redis import running_redis  # noqa: E402

POLICY = ROOT / "examples" / "policies" / "strict-no-logs.toml"
BURROW = ROOT / ".venv" / "bin" / "burrow"
SECRET = "bench-" + "x" * 48  # a throwaway server's: nothing signed with it outlives the run
CHUNK = 20_000
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def key_of(index: int) -> str:
    return base64.b64encode(index.to_bytes(32, "big")).decode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class SimNode:
    node_id: int
    token: str
    keys: list[str]
    seq: int = 0
    revision: int = 0
    latencies: list[float] = field(default_factory=list)
    # The share of reports in which one device connects or disconnects (a report that
    # changes nothing is a steady one, which the server answers without the lease work);
    # ``vary``: every report.
    churn: float = 0.0
    vary: bool = False
    idle: set[int] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def body(self, boot: str) -> dict[str, object]:
        self.seq += 1
        if self.vary or (self.churn and self.rng.random() < self.churn):
            self.idle ^= {self.rng.randrange(len(self.keys))}
        peers = [
            {"public_key": k, "connected": i not in self.idle, "rx_bytes": 1500, "tx_bytes": 900}
            for i, k in enumerate(self.keys)
        ]
        return {"boot_id": boot, "seq": self.seq, "revision": self.revision, "peers": peers}


def migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "heads")


async def seed(url: str, nodes: int, per_node: int, big: int) -> list[SimNode]:
    """Accounts (two devices each), served peers, and the nodes with their tokens. Devices
    0..nodes*per_node-1 are the small nodes' (per_node each); the big node reports the first
    ``big`` of them too (a device counts once however many nodes show it)."""
    settings = Settings(
        database_url=url, policy_path=POLICY, environment="development", scheduler_enabled=False
    )
    runtime = Runtime.build(settings)
    await prepare(runtime)  # the plans, from the policy
    engine = runtime.engine
    devices = nodes * per_node
    accounts = max(1, devices // 2)
    pool4 = ipaddress.ip_network("10.64.0.0/10")
    pool6 = ipaddress.ip_network("fd42:b0::/48")
    now = utcnow()
    sims: list[SimNode] = []
    async with engine.begin() as conn:
        plan_id = (
            await conn.execute(select(Plan.id).where(Plan.code == "business-monthly"))
        ).scalar_one()
        for start in range(0, accounts, CHUNK):
            batch = range(start, min(accounts, start + CHUNK))
            await conn.execute(
                insert(Account),
                [{"id": a + 1, "email": f"c{a}@example.com", "password_hash": "-"} for a in batch],
            )
            await conn.execute(
                insert(Subscription),
                [
                    {
                        "account_id": a + 1,
                        "plan_id": plan_id,
                        "status": SubscriptionStatus.active,
                        "current_period_start": now,
                        "current_period_end": now + timedelta(days=30),
                    }
                    for a in batch
                ],
            )
        for start in range(0, devices, CHUNK):
            rows = [
                {
                    "id": i + 1,
                    "account_id": i // 2 + 1,
                    "name": "Laptop",
                    "public_key": key_of(i + 1),
                    "ipv4": str(pool4.network_address + 2 + i),
                    "ipv6": str(pool6.network_address + 2 + i),
                    "address_index": i + 2,
                }
                for i in range(start, min(devices, start + CHUNK))
            ]
            await conn.execute(insert(Device), rows)
            await conn.execute(
                insert(ServedPeer),
                [
                    {
                        "device_id": r["id"],
                        "account_id": r["account_id"],
                        "public_key": r["public_key"],
                        "ipv4": r["ipv4"],
                        "ipv6": r["ipv6"],
                        "revision": 1,
                    }
                    for r in rows
                ],
            )
        tokens = [new_token("bwn_") for _ in range(nodes + 1)]
        await conn.execute(
            insert(Node),
            [
                {
                    "id": n + 1,
                    "name": f"bench-{n}",
                    "country": "NL",
                    "city": "Amsterdam",
                    "endpoint_host": "vpn.example.net",
                    "endpoint_port": 51820,
                    "capacity": 100_000,
                    "status": NodeStatus.active,
                    "wg_public_key": key_of(10**9 + n),
                    "node_token_hash": hash_token(tokens[n]),
                }
                for n in range(nodes + 1)
            ],
        )
    await runtime.close()
    # A node's devices are consecutive pairs (one account each): with one WireGuard connection
    # per server, each report admits one device per account and blocks the other, as a
    # household on one server would see.
    for n in range(nodes):
        keys = [key_of(n * per_node + i + 1) for i in range(per_node)]
        sims.append(SimNode(n + 1, tokens[n], keys))
    sims.append(SimNode(nodes + 1, tokens[nodes], [key_of(i + 1) for i in range(big)]))
    return sims


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(url: str) -> dict[str, str]:
    return {
        "BURROW_ENVIRONMENT": "development",
        "BURROW_DATABASE_URL": url,
        "BURROW_POLICY_PATH": str(POLICY),
        "BURROW_SECRET_KEY": SECRET,
        "BURROW_EMAIL_ENABLED": "false",
        "BURROW_SCHEDULER_ENABLED": "false",
        "BURROW_LONG_POLL_TIMEOUT_SECONDS": "25",
    }


def start_server(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **server_env(url)}
    out = (workdir / "serve.log").open("wb")
    return subprocess.Popen(
        [str(BURROW), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )


async def wait_up(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit("burrow serve exited; see serve.log")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("burrow serve did not answer within 60 s")


async def long_poll(url: str, node: SimNode, stop: asyncio.Event) -> None:
    """Hold a long poll open until ``stop``; answer changes like an agent would."""
    connection = NodeConnection(url, node.token)
    try:
        while not stop.is_set():
            target = f"{API_PREFIX}/state/changes?since={node.revision}&timeout=20"
            try:
                status, _headers, body = await connection.request("GET", target)
            except ConnectionError:
                await asyncio.sleep(1)
                continue
            if status == 200:
                node.revision = int(body.get("revision", body.get("state", {}).get("revision", 0)))
    finally:
        connection.close()


BUSY: list[int] = []  # 503 answers (the database busy): the report is sent again
FAILED: list[int] = []  # reports never answered (connect or read timeout)


async def report(connection: NodeConnection, node: SimNode, boot: str) -> float:
    """One report's latency, from the first send to the accepted answer (retries included)."""
    started = time.perf_counter()
    body = node.body(boot)
    for _attempt in range(5):
        try:
            status, headers, answer = await asyncio.wait_for(
                connection.request("POST", f"{API_PREFIX}/report", body), 60
            )
        except (ConnectionError, TimeoutError):
            # Not answered (an overloaded server's backlog): counted, and the next report goes.
            connection.close()
            FAILED.append(1)
            return time.perf_counter() - started
        if status != 503:
            break
        BUSY.append(1)
        await asyncio.sleep(float(headers.get("retry-after", "1")))
    elapsed = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"report refused: {status} {str(answer)[:300]}")
    return elapsed


async def reporting(url: str, node: SimNode, offset: float, interval: float, rounds: int) -> None:
    await asyncio.sleep(offset)
    connection = NodeConnection(url, node.token)
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            node.latencies.append(await report(connection, node, "bench"))
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        connection.close()


async def load(
    urls: list[str], pids: list[int], sims: list[SimNode], args: argparse.Namespace
) -> dict[str, object]:
    """The measurement against running servers (``pids``, serving ``urls``): nodes spread over
    them in turn; the CPU is theirs together."""

    def server_cpu() -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    nodes, big = sims[:-1], sims[-1]
    # The simulated nodes (100,000 keys) out of the client's full collections: a pause of
    # this process would count in every latency it is measuring, as the server's own.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    polls = [
        asyncio.create_task(long_poll(urls[i % len(urls)], n, stop)) for i, n in enumerate(nodes)
    ]
    await asyncio.sleep(min(10.0, 2 + args.nodes / 200))  # all polls are waiting
    before = server_cpu()
    await asyncio.sleep(args.window)
    idle_cpu = server_cpu() - before
    log(f"idle: {args.nodes} long polls waiting, server CPU "
        f"{100 * idle_cpu / args.window:.1f} % of a core")  # fmt: skip

    for n in nodes:
        n.churn, n.rng = args.churn, random.Random(n.node_id)
    # Warm-up round (every lease starts), not measured.
    spread = args.interval / max(1, len(nodes))
    await asyncio.gather(
        *(reporting(urls[i % len(urls)], n, i * spread, args.interval, 1)
          for i, n in enumerate(nodes))
    )  # fmt: skip
    for n in nodes:
        n.latencies.clear()
    before, t = server_cpu(), time.perf_counter()
    await asyncio.gather(
        *(reporting(urls[i % len(urls)], n, i * spread, args.interval, args.rounds)
          for i, n in enumerate(nodes))
    )  # fmt: skip
    wall = time.perf_counter() - t
    load_cpu = server_cpu() - before
    latencies = [x for n in nodes for x in n.latencies]
    count = len(latencies)
    net_cpu = max(0.0, load_cpu - idle_cpu * wall / args.window)
    log(f"reports: {count} in {wall:.1f} s, p50 "
        f"{1000 * statistics.median(latencies):.1f} ms, p90 "
        f"{1000 * percentile(latencies, 0.90):.1f} ms, p95 "
        f"{1000 * percentile(latencies, 0.95):.1f} ms, max {1000 * max(latencies):.0f} ms, p99 "
        f"{1000 * percentile(latencies, 0.99):.1f} ms; server CPU {load_cpu:.1f} s "
        f"({1000 * load_cpu / count:.2f} s per 1,000 reports; "
        f"{1000 * net_cpu / count:.2f} s net of idle)")  # fmt: skip
    stop.set()
    for task in polls:
        task.cancel()
    await asyncio.gather(*polls, return_exceptions=True)

    # One node with many devices, then the same node with 100, on a quiet server.
    # Besides the wall time, the server's CPU for each report: on a machine shared
    # with other work that is what the report itself costs.
    one = NodeConnection(urls[0], big.token)

    async def timed_report(node: SimNode) -> tuple[float, float]:
        cpu = server_cpu()
        wall = await report(one, node, "big")
        return wall, server_cpu() - cpu

    first_big, _ = await timed_report(big)
    # Full reports: one device connects or disconnects each time, so every lease is renewed
    # and decided. Then steady ones (nothing changed), which renew only the node.
    big.vary = True
    big_runs = [await timed_report(big) for _ in range(args.repeat)]
    big.vary = False
    await timed_report(big)  # the first with this set is full still
    big_steady = [await timed_report(big) for _ in range(args.repeat)]
    small = SimNode(big.node_id, big.token, big.keys[: args.devices], seq=big.seq, vary=True)
    # The kernel counts CPU in ticks of 10 ms: a 100-device report's share is measured over
    # many of them in a row (``--small-repeat``), not one at a time.
    cpu = server_cpu()
    small_runs = [await timed_report(small) for _ in range(args.small_repeat)]
    cpu_ms_small = 1000 * (server_cpu() - cpu) / args.small_repeat
    small.vary = False
    await timed_report(small)
    cpu = server_cpu()
    small_steady = [await timed_report(small) for _ in range(args.small_repeat)]
    cpu_ms_small_steady = 1000 * (server_cpu() - cpu) / args.small_repeat
    ms_big = 1000 * statistics.median(w for w, _c in big_runs)
    ms_big_steady = 1000 * statistics.median(w for w, _c in big_steady)
    ms_small = 1000 * statistics.median(w for w, _c in small_runs)
    ms_small_steady = 1000 * statistics.median(w for w, _c in small_steady)
    cpu_ms_big = 1000 * statistics.median(c for _w, c in big_runs)
    log(
        f"server CPU per full report: {cpu_ms_big:.0f} ms at {args.big:,} devices, "
        f"{cpu_ms_small:.1f} ms at {args.devices} (steady: {cpu_ms_small_steady:.1f} ms)"
    )
    per_big, per_small = ms_big / args.big, ms_small / args.devices
    log(
        f"one node: {args.big:,} devices: first report {1000 * first_big:.0f} ms, "
        f"then {ms_big:.0f} ms full, {ms_big_steady:.0f} ms steady; {args.devices} devices: "
        f"{ms_small:.1f} ms full, {ms_small_steady:.1f} ms steady; "
        f"per peer {per_big:.4f} vs {per_small:.4f} ms"
    )
    return {
        "benchmark": "reports",
        "nodes": args.nodes,
        "devices_per_node": args.devices,
        "reports": count,
        "report_p50_ms": round(1000 * statistics.median(latencies), 2),
        "report_p99_ms": round(1000 * percentile(latencies, 0.99), 2),
        "cpu_s_per_1000_reports": round(1000 * load_cpu / count, 3),
        "cpu_s_per_1000_reports_net_of_idle": round(1000 * net_cpu / count, 3),
        "idle_long_poll_cpu_percent": round(100 * idle_cpu / args.window, 2),
        "report_10k_peers_ms": round(ms_big, 1),
        "report_10k_peers_first_ms": round(1000 * first_big, 1),
        "report_10k_peers_steady_ms": round(ms_big_steady, 1),
        "report_10k_peers_server_cpu_ms": round(cpu_ms_big, 1),
        "report_100_peers_server_cpu_ms": round(cpu_ms_small, 2),
        "report_100_peers_steady_server_cpu_ms": round(cpu_ms_small_steady, 2),
        "report_100_peers_ms": round(ms_small, 2),
        "churn": args.churn,
        "ratio_per_peer_10k_vs_100": round((ms_big / args.big) / (ms_small / args.devices), 3),
        "busy_answers": len(BUSY),
        "unanswered_reports": len(FAILED),
    }


async def on_sqlite(args: argparse.Namespace) -> dict[str, object]:
    """One ``burrow serve`` on SQLite and the in-process live store."""
    with tempfile.TemporaryDirectory(prefix="burrow-bench-reports-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'burrow.db'}"
        t = time.perf_counter()
        await asyncio.to_thread(migrate, url)
        sims = await seed(url, args.nodes, args.devices, args.big)
        log(f"seeded {args.nodes * args.devices:,} devices, {args.nodes + 1} nodes "
            f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
        port = free_port()
        server = start_server(url, port, workdir)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                await wait_up(client, server)
            return {"setup": "sqlite, one replica", **await load([base], [server.pid], sims, args)}
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def postgres_cpu(datadir: Path) -> float:
    """CPU seconds of a PostgreSQL server: its postmaster and every backend it started, those
    still running and those that ended."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(entry.name) == postmaster:
            # Its own, and that of every backend that has ended (a closed connection's).
            total += sum(int(f) for f in fields[11:15]) / TICK
        elif int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


async def on_cluster(args: argparse.Namespace) -> dict[str, object]:
    """The cluster the issue names: PostgreSQL and Redis (started here, persistence off) and
    ``--replicas`` ``burrow serve`` sharing them (``bench/fanout.py``'s replicas), nodes spread
    over the replicas in turn. The CPU figures are the replicas' together; PostgreSQL's and
    Redis's own are reported beside them."""
    workdir = Path(tempfile.mkdtemp(prefix="burrow-bench-reports-"))
    with postgres.running_postgres() as pg, running_redis() as redis:
        pg.psql("CREATE DATABASE reports")
        url = pg.url("reports")
        t = time.perf_counter()
        await asyncio.to_thread(migrate, url)
        sims = await seed(url, args.nodes, args.devices, args.big)
        # Statistics, as a database in service has them: autovacuum would analyze the tables
        # a minute after the bulk load, and until then the planner scans whole tables for
        # every report's owner query (PostgreSQL's CPU over a run: 27 s without, 2 s with).
        pg.psql("ANALYZE", "reports")
        log(f"seeded {args.nodes * args.devices:,} devices, {args.nodes + 1} nodes "
            f"in {time.perf_counter() - t:.1f} s")  # fmt: skip
        env = {**server_env(url), "BURROW_REDIS_URL": redis.url()}
        replicas = [Replica(env, workdir / f"replica{n}.log") for n in range(args.replicas)]
        try:
            for replica in replicas:
                await replica.wait_up()

            def stores_cpu() -> float:
                return postgres_cpu(pg.datadir) + cpu_seconds(redis.process.pid)

            before = stores_cpu()
            figures = await load(
                [r.url for r in replicas], [r.proc.pid for r in replicas], sims, args
            )
            stores = stores_cpu() - before
        finally:
            for replica in replicas:
                replica.stop()
    return {
        "setup": f"postgresql + redis, {args.replicas} replicas",
        **figures,
        # PostgreSQL's and Redis's CPU over the whole run (idle, reports, one node).
        "postgres_redis_cpu_s": round(stores, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    figures = await (on_cluster(args) if args.cluster else on_sqlite(args))
    return {**figures, "load_average": round(os.getloadavg()[0], 2)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100, help="connected devices per node")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reports")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of reports")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.15,
        help="share of reports in which one of the node's devices connects or disconnects",
    )
    parser.add_argument("--window", type=float, default=5.0, help="idle CPU window, seconds")
    parser.add_argument("--big", type=int, default=10_000, help="devices of the one big node")
    parser.add_argument("--repeat", type=int, default=5, help="big-node reports after the first")
    parser.add_argument(
        "--small-repeat", type=int, default=200, help="100-device reports timed one by one"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="PostgreSQL + Redis + --replicas `burrow serve` (default: one, on SQLite)",
    )
    parser.add_argument("--replicas", type=int, default=2, help="replicas with --cluster")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args(sys.argv[1:])))))
