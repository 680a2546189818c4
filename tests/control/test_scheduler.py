"""Scheduled jobs run on one replica at a time, once per interval, and another takes over.

Replicas are runtimes sharing one database and one Redis (as ``burrow serve`` processes
would); each runs its own ``Scheduler`` over the same counting job.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from burrow.control.scheduler import Job, Scheduler
from tests.support.app import running_runtime

INTERVAL = 0.4


class Runs:
    def __init__(self) -> None:
        self.at: list[tuple[float, int]] = []

    def job(self, replica: int) -> Job:
        async def count(_runtime: Runtime) -> None:
            self.at.append((time.monotonic(), replica))
            await asyncio.sleep(0.05)

        return count

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.at]
        return [b - a for a, b in itertools.pairwise(times)]


@pytest.fixture
async def replicas(settings: Settings, redis_url: str) -> AsyncIterator[list[Runtime]]:
    shared = settings.model_copy(
        update={"redis_url": redis_url, "scheduler_interval_seconds": INTERVAL}
    )
    async with (
        running_runtime(shared) as a,
        running_runtime(shared) as b,
        running_runtime(shared) as c,
    ):
        yield [a, b, c]


async def test_each_job_runs_once_per_interval_across_replicas_and_is_taken_over(
    replicas: list[Runtime],
) -> None:
    runs = Runs()
    schedulers = [Scheduler(rt, jobs=(("count", runs.job(n)),)) for n, rt in enumerate(replicas)]
    started = time.monotonic()
    for scheduler in schedulers:
        scheduler.start()
    try:
        await asyncio.sleep(INTERVAL * 6)
        # At most one run per interval, whichever replica ran it (three replicas would make
        # eighteen); none skipped for long. The gaps allow for a busy machine's jitter.
        elapsed = time.monotonic() - started
        assert 4 <= len(runs.at) <= elapsed / INTERVAL + 1, runs.at
        assert all(gap >= INTERVAL * 0.5 for gap in runs.gaps()), runs.gaps()
        assert max(runs.gaps()) < INTERVAL * 3.5, runs.gaps()

        # The replica that ran last dies; another takes the job over within an interval.
        last = runs.at[-1][1]
        await schedulers[last].stop()
        died = time.monotonic()
        await asyncio.sleep(INTERVAL * 4)
        after = [(t, n) for t, n in runs.at if t > died]
        assert after, runs.at
        assert all(n != last for _, n in after), runs.at
        assert after[0][0] - died < INTERVAL * 3.5
        assert len(after) <= (time.monotonic() - died) / INTERVAL + 1, runs.at
    finally:
        for scheduler in schedulers:
            await scheduler.stop()


async def test_without_shared_leases_every_replica_would_run_every_job(
    settings: Settings,
) -> None:
    """The baseline the leases fix: separate live stores (RAM each) do not coordinate."""
    alone = settings.model_copy(update={"scheduler_interval_seconds": INTERVAL})
    runs = Runs()
    async with running_runtime(alone) as a, running_runtime(alone) as b:
        await asyncio.gather(
            Scheduler(a, jobs=(("count", runs.job(0)),)).run_once(),
            Scheduler(b, jobs=(("count", runs.job(1)),)).run_once(),
        )
        assert len(runs.at) == 2
        # One runtime's replicas (one store) do coordinate.
        await Scheduler(a, jobs=(("count", runs.job(2)),)).run_once()
        assert len(runs.at) == 2
