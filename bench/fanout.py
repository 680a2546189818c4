"""Benchmark: one device change, a thousand nodes long-polling two replicas.

A PostgreSQL and a Redis (Debian's, started here on loopback, persistence off), two real
``burrow serve`` replicas sharing them, and ``--nodes`` simulated nodes: lightweight async
clients in this process speaking the real node API (their own node tokens, ``GET
/node-api/v1/state/changes?since=R`` over a keep-alive HTTP/1.1 connection each, written by
hand so that the clients' own CPU stays small beside the replicas'), half on each replica.

- idle: with every node waiting and nothing changing, the replicas' CPU (user + system, from
  /proc) over ``--idle-seconds``, as a percentage of one core for both together (goal < 5 %);
- fan-out: a customer adds a device through replica A; the time from that request until each
  node has a delta with the new peer: p50 and p99 (goal p99 < 1 s), over ``--rounds`` rounds.
  The baseline, measured in the same run, is the same change reaching one node alone.

Run: ``.venv/bin/python bench/fanout.py [--nodes 1000] [--rounds 3]``. Progress goes to stderr;
the last line on stdout is one line of JSON with ``fanout_p99_s`` and ``idle_cpu_percent``.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.nodeclient import NodeConnection  # noqa: E402
from tests.conftest import STRICT_POLICY, TEST_SECRET, migrate  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.factories import (  # noqa: E402
    create_account,
    create_node,
    create_session_token,
    create_subscription,
)
from tests.support.redis import running_redis  # noqa: E402
from tests.support.server import free_port  # noqa: E402

from burrow.control.config import Settings  # noqa: E402
from burrow.control.db import unit_of_work  # noqa: E402
from burrow.control.runtime import Runtime  # noqa: E402
from burrow.control.security import hash_token, new_token  # noqa: E402
from burrow.control.startup import prepare  # noqa: E402
from burrow.wire import API_PREFIX  # noqa: E402

BURROW = str(Path(sys.executable).with_name("burrow"))
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def seed(settings: Settings, nodes: int) -> tuple[list[str], str]:
    runtime = Runtime.build(settings)
    await prepare(runtime)  # the policy's plans, as `burrow serve` does at start
    tokens = []
    try:
        async with unit_of_work(runtime.sessionmaker) as session:
            for n in range(nodes):
                token = new_token("bwn_")
                row = await create_node(session, name=f"sim-{n}")
                row.node_token_hash = hash_token(token)
                tokens.append(token)
            account = await create_account(session)
            await create_subscription(session, account, plan_code="business-monthly")
            customer = await create_session_token(session, account)
    finally:
        await runtime.close()
    return tokens, customer


class Replica:
    def __init__(self, env: dict[str, str], out: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [BURROW, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with out.open("ab") as sink:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
            )

    async def wait_up(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(1200):  # a busy machine starts a replica slowly
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError("burrow serve exited")
                await asyncio.sleep(0.1)
        raise RuntimeError("burrow serve did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SimulatedNode:
    """Long-polls from ``revision``; records when it first sees a delta past it."""

    def __init__(self, url: str, token: str, revision: int, poll_seconds: float) -> None:
        self.connection = NodeConnection(url, token)
        self.poll_seconds = poll_seconds
        self.revision = revision
        self.waiting = asyncio.Event()
        self.moved_at: float | None = None
        self.got: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.waiting.set()
                target = (
                    f"{API_PREFIX}/state/changes?since={self.revision}&timeout={self.poll_seconds}"
                )
                try:
                    status, _headers, body = await self.connection.request("GET", target)
                except ConnectionError:
                    await asyncio.sleep(0.2)
                    continue
                if status != 200:
                    raise RuntimeError(f"node API answered {status}: {body}")
                state = body.get("state") or body
                if state["revision"] != self.revision:
                    self.moved_at = time.monotonic()
                    peers = state.get("upserts", state.get("peers", []))
                    self.got |= {p["public_key"] for p in peers}
                    self.revision = state["revision"]
        finally:
            self.connection.close()


async def current_revision(client: httpx.AsyncClient, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.get(f"{API_PREFIX}/state", headers=headers)
    return int(response.json()["state"]["revision"])


async def fan_out(
    replicas: list[Replica],
    tokens: list[str],
    customer: str,
    rounds: int,
    idle_seconds: float,
    poll_seconds: float,
) -> tuple[list[float], float | None]:
    """Per round, the delay of each node; and the idle CPU % (when ``idle_seconds``)."""
    # httpx for the customer's requests; the nodes speak over their own connections.
    clients = [httpx.AsyncClient(base_url=r.url, timeout=httpx.Timeout(30)) for r in replicas]
    try:
        revision = await current_revision(clients[0], tokens[0])
        nodes = [
            SimulatedNode(replicas[n % len(replicas)].url, token, revision, poll_seconds)
            for n, token in enumerate(tokens)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(node.run(stop)) for node in nodes]
        await asyncio.gather(*(node.waiting.wait() for node in nodes))
        await asyncio.sleep(2.0)  # every poll has reached its replica and waits
        idle = None
        if idle_seconds:
            before = sum(cpu_seconds(r.proc.pid) for r in replicas)
            started = time.monotonic()
            await asyncio.sleep(idle_seconds)
            used = sum(cpu_seconds(r.proc.pid) for r in replicas) - before
            idle = 100 * used / (time.monotonic() - started)
            log(f"  idle: {len(nodes)} polls waiting, replicas' CPU {idle:.2f} % of one core")
        delays: list[float] = []
        headers = {"Authorization": f"Bearer {customer}"}
        for n in range(rounds):
            key = None
            for node in nodes:
                node.moved_at = None
            started = time.monotonic()
            response = await clients[0].post(
                "/api/v1/devices", json={"name": f"bench {secrets.token_hex(3)}"}, headers=headers
            )
            if response.status_code != 201:
                raise RuntimeError(f"adding a device: {response.status_code} {response.text}")
            key = response.json()["public_key"]
            log(f"  round {n + 1}: the change committed after {time.monotonic() - started:.3f} s")
            for _ in range(3000):  # at most 30 s
                if all(key in node.got for node in nodes):
                    break
                await asyncio.sleep(0.01)
            missing = sum(1 for node in nodes if key not in node.got)
            if missing:
                raise RuntimeError(f"{missing} nodes never got the change")
            round_delays = [node.moved_at - started for node in nodes if node.moved_at]
            own = resource.getrusage(resource.RUSAGE_SELF)
            log(
                f"  round {n + 1}: this process (the simulated nodes) has used "
                f"{own.ru_utime + own.ru_stime:.1f} s of CPU so far"
            )
            delays.extend(round_delays)
            log(f"  round {n + 1}: last node after {max(round_delays):.3f} s")
            # The device leaves again (another change), so the plan's device limit never binds.
            await clients[0].delete(f"/api/v1/devices/{response.json()['id']}", headers=headers)
            await asyncio.sleep(2.0)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return delays, idle
    finally:
        for client in clients:
            await client.aclose()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=25.0,
        help="each long poll's wait (the agent's default is 25 s; the server caps it at 120 s)",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"burrow-fanout-{secrets.token_hex(3)}"
    tmp.mkdir()
    with postgres.running_postgres() as pg, running_redis() as redis:
        pg.psql("CREATE DATABASE fanout")
        await asyncio.to_thread(migrate, pg.url("fanout"))  # alembic runs its own loop
        settings = Settings(
            environment="test",
            database_url=pg.url("fanout"),
            policy_path=STRICT_POLICY,
            secret_key=TEST_SECRET,  # type: ignore[arg-type]
        )
        log(f"seeding {args.nodes} nodes")
        tokens, customer = await seed(settings, args.nodes)
        env = {
            "BURROW_ENVIRONMENT": "test",
            "BURROW_DATABASE_URL": settings.database_url,
            "BURROW_POLICY_PATH": str(STRICT_POLICY),
            "BURROW_SECRET_KEY": TEST_SECRET,
            "BURROW_EMAIL_ENABLED": "false",
            "BURROW_REDIS_URL": redis.url(),
            "BURROW_LONG_POLL_TIMEOUT_SECONDS": str(args.poll_seconds),
        }
        replicas = [Replica(env, tmp / f"replica{n}.log") for n in range(2)]
        try:
            for replica in replicas:
                await replica.wait_up()
            log("baseline: one node")
            baseline, _ = await fan_out(
                replicas, tokens[:1], customer, args.rounds, 0, args.poll_seconds
            )
            log(f"{args.nodes} nodes on two replicas")
            delays, idle = await fan_out(
                replicas, tokens, customer, args.rounds, args.idle_seconds, args.poll_seconds
            )
        finally:
            for replica in replicas:
                replica.stop()
    p50, p99 = quantile(delays, 0.5), quantile(delays, 0.99)
    one = statistics.median(baseline)
    print(f"one node alone: {one:.3f} s (median)")
    print(f"{args.nodes} nodes: p50 {p50:.3f} s, p99 {p99:.3f} s (goal p99 < 1 s)")
    print(f"ratio p99 / one node: {p99 / one:.1f}")
    print(f"idle: {idle:.2f} % of one core for both replicas (goal < 5 %)")
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "fanout_p50_s": round(p50, 4),
                "fanout_p99_s": round(p99, 4),
                "baseline_one_node_s": round(one, 4),
                "ratio_p99_vs_one_node": round(p99 / one, 2),
                "idle_cpu_percent": round(idle or 0.0, 2),
                "poll_seconds": args.poll_seconds,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
