"""Benchmark: does a one-device change cost the same with 1,000,000 devices as with 1,000?

For each size N it builds a fresh SQLite database with the migrations, seeds N devices (N/2
paying accounts with two devices each, their served peers and change log) with bulk inserts,
then measures through the real service code, over several rounds:

- the delta as the long poll sees it: one device added (refresh_account, commit), the long
  poll's answer from the previous revision, the device removed (refresh_account, commit), the
  long poll's answer again;
- the full state at N devices (built, and serialised as the node API sends it).

It prints the median per size, the ratio of the largest size to the smallest (goal: at most 2)
and ends with one line of JSON.

    .venv/bin/python bench/desired_state.py [--rounds 20] [--sizes 1000,1000000]

The JSON names sizes 1k, 100k and 1m (``ratio_1m_vs_1k``, ``full_state_s_1m``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, insert, select

from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.models import (
    Account,
    Device,
    Node,
    NodeStatus,
    PeerChange,
    PeerChangeOp,
    Plan,
    ServedPeer,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from burrow.wire import DeltaState, FullState

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "examples" / "policies" / "strict-no-logs.toml"
CHUNK = 20_000
WARMUP_ROUNDS = 3


def key_of(index: int) -> str:
    """A valid WireGuard public key (32 bytes in base64), unique per index."""
    return base64.b64encode(index.to_bytes(32, "big")).decode()


def migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")


@dataclass
class Seeded:
    node: Node
    account_id: int  # an account that gets the measured device
    next_index: int  # the next free key/address index


async def seed(runtime: Runtime, devices: int) -> Seeded:
    pool4 = ipaddress.ip_network(runtime.settings.tunnel_ipv4_pool)
    pool6 = ipaddress.ip_network(runtime.settings.tunnel_ipv6_pool)
    now = utcnow()
    accounts = max(1, devices // 2)
    async with runtime.engine.begin() as conn:
        plan_id = (await conn.execute(select(Plan.id).limit(1))).scalar_one()
        await conn.execute(
            insert(Account),
            [
                {"id": a + 1, "email": f"c{a}@example.com", "password_hash": "-"}
                for a in range(accounts)
            ],
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
                for a in range(accounts)
            ],
        )
        for start in range(0, devices, CHUNK):
            batch = range(start, min(devices, start + CHUNK))
            rows = [
                {
                    "id": i + 1,
                    "account_id": i % accounts + 1,
                    "name": "Laptop",
                    "public_key": key_of(i + 1),
                    "ipv4": str(pool4.network_address + 2 + i),
                    "ipv6": str(pool6.network_address + 2 + i),
                    "address_index": i + 2,
                }
                for i in batch
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
                        "revision": r["id"],
                    }
                    for r in rows
                ],
            )
            await conn.execute(
                insert(PeerChange),
                [
                    {
                        "revision": r["id"],
                        "op": PeerChangeOp.upsert,
                        "public_key": r["public_key"],
                        "ipv4": r["ipv4"],
                        "ipv6": r["ipv6"],
                        "device_id": r["id"],
                        "created_at": now,
                    }
                    for r in rows
                ],
            )
    async with unit_of_work(runtime.sessionmaker) as session:
        node = Node(
            name="bench-1",
            country="NL",
            city="Amsterdam",
            endpoint_host="vpn.example.net",
            endpoint_port=51820,
            status=NodeStatus.active,
            wg_public_key=key_of(10**9),
        )
        session.add(node)
    return Seeded(node=node, account_id=accounts // 2 + 1, next_index=devices + 1)


async def one_round(runtime: Runtime, seeded: Seeded) -> tuple[float, float]:
    """One device added then removed, each read back by the long poll.

    Returns (seconds for the whole round, seconds spent in the two long-poll answers).
    """
    index = seeded.next_index
    seeded.next_index += 1
    pool4 = ipaddress.ip_network(runtime.settings.tunnel_ipv4_pool)
    pool6 = ipaddress.ip_network(runtime.settings.tunnel_ipv6_pool)
    polling = 0.0
    started = time.perf_counter()

    async with unit_of_work(runtime.sessionmaker) as session:
        before = await desired_state_service.current_revision(session)
        device = Device(
            account_id=seeded.account_id,
            name="Phone",
            public_key=key_of(index),
            ipv4=str(pool4.network_address + 1 + index),
            ipv6=str(pool6.network_address + 1 + index),
            address_index=index + 1,
        )
        session.add(device)
        await session.flush()
        await desired_state_service.refresh_account(session, runtime, seeded.account_id)
    t = time.perf_counter()
    added = await desired_state_service.wait_for_changes(runtime, seeded.node, before, 0)
    polling += time.perf_counter() - t
    assert isinstance(added, DeltaState), "expected a delta"
    # The account's other devices may come along (their per-account fields moved with it).
    assert key_of(index) in [p.public_key for p in added.upserts], added

    async with unit_of_work(runtime.sessionmaker) as session:
        await session.execute(delete(Device).where(Device.id == device.id))
        await desired_state_service.refresh_account(session, runtime, seeded.account_id)
    t = time.perf_counter()
    removed = await desired_state_service.wait_for_changes(runtime, seeded.node, added.revision, 0)
    polling += time.perf_counter() - t
    assert isinstance(removed, DeltaState), "expected a delta"
    assert key_of(index) in removed.removals, removed

    return time.perf_counter() - started, polling


@dataclass
class Figures:
    devices: int
    seed_s: float
    delta_ms: float
    poll_ms: float
    full_state_s: float
    full_state_json_s: float
    full_state_bytes: int


@dataclass
class Subject:
    """One seeded database and what was measured on it."""

    devices: int
    runtime: Runtime
    seeded: Seeded
    seed_s: float
    totals: list[float]
    polls: list[float]


async def prepare_subject(devices: int, workdir: Path) -> Subject:
    url = f"sqlite+aiosqlite:///{workdir / f'bench-{devices}.db'}"
    await asyncio.to_thread(migrate, url)  # alembic runs its own event loop
    settings = Settings(
        database_url=url, policy_path=POLICY, environment="development", scheduler_enabled=False
    )
    runtime = Runtime.build(settings)
    await prepare(runtime)
    t = time.perf_counter()
    seeded = await seed(runtime, devices)
    return Subject(devices, runtime, seeded, time.perf_counter() - t, [], [])


async def full_state_figures(subject: Subject) -> Figures:
    runtime, seeded = subject.runtime, subject.seeded
    async with unit_of_work(runtime.sessionmaker) as session:
        t = time.perf_counter()
        state = await desired_state_service.full_state(session, runtime, seeded.node)
        full_state_s = time.perf_counter() - t
    assert len(state.peers) == subject.devices, len(state.peers)
    t = time.perf_counter()
    body = FullState(state=state).model_dump_json()
    full_state_json_s = time.perf_counter() - t
    return Figures(
        devices=subject.devices,
        seed_s=subject.seed_s,
        delta_ms=statistics.median(subject.totals) * 1000,
        poll_ms=statistics.median(subject.polls) * 1000,
        full_state_s=full_state_s,
        full_state_json_s=full_state_json_s,
        full_state_bytes=len(body),
    )


async def main(sizes: list[int], rounds: int) -> dict[str, object]:
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="burrow-bench-") as tmp:
        subjects = [await prepare_subject(size, Path(tmp)) for size in sizes]
        try:
            for _ in range(WARMUP_ROUNDS):
                for subject in subjects:
                    await one_round(subject.runtime, subject.seeded)
            # Rounds alternate between the sizes, so that a busy moment of the machine
            # falls on both alike and the ratio stays fair.
            for _ in range(rounds):
                for subject in subjects:
                    total, poll = await one_round(subject.runtime, subject.seeded)
                    subject.totals.append(total)
                    subject.polls.append(poll)
            for subject in subjects:
                figures = await full_state_figures(subject)
                results.append(figures)
                print(
                    f"N={figures.devices:>7,}: seeded in {figures.seed_s:5.1f} s; one-device "
                    f"delta round {figures.delta_ms:7.2f} ms (long-poll answers "
                    f"{figures.poll_ms:6.2f} ms); full state {figures.full_state_s:6.3f} s "
                    f"+ JSON {figures.full_state_json_s:6.3f} s "
                    f"({figures.full_state_bytes / 1e6:.1f} MB)",
                    flush=True,
                )
        finally:
            for subject in subjects:
                await subject.runtime.close()
    small, large = results[0], results[-1]
    ratio = large.delta_ms / small.delta_ms
    poll_ratio = large.poll_ms / small.poll_ms
    print(
        f"delta cost ratio {large.devices:,} vs {small.devices:,} devices: {ratio:.2f} "
        f"(long-poll answers alone: {poll_ratio:.2f}); goal <= 2: "
        f"{'met' if ratio <= 2 else 'NOT met'}"
    )
    figures: dict[str, object] = {"benchmark": "desired_state", "rounds": rounds}
    names = {1_000: "1k", 100_000: "100k", 1_000_000: "1m"}
    for r in results:
        label = names.get(r.devices, str(r.devices))
        figures[f"delta_ms_{label}"] = round(r.delta_ms, 3)
        figures[f"poll_ms_{label}"] = round(r.poll_ms, 3)
        figures[f"full_state_s_{label}"] = round(r.full_state_s, 3)
        figures[f"full_state_json_s_{label}"] = round(r.full_state_json_s, 3)
    small_label = names.get(small.devices, str(small.devices))
    large_label = names.get(large.devices, str(large.devices))
    figures[f"ratio_{large_label}_vs_{small_label}"] = round(ratio, 3)
    figures[f"poll_ratio_{large_label}_vs_{small_label}"] = round(poll_ratio, 3)
    return figures


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per size")
    parser.add_argument(
        "--sizes",
        default="1000,1000000",
        help="comma-separated device counts; the first is the baseline",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(asyncio.run(main(sizes, args.rounds))))
