"""A prepared runtime and an httpx client against the app built on it, for fixtures that need
settings other than the suite's defaults (a provider's server, another policy, a token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.policy.schemas import Policy
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare


@asynccontextmanager
async def running_runtime(
    settings: Settings, *, policy: Policy | None = None
) -> AsyncIterator[Runtime]:
    """A runtime built from ``settings`` (and ``policy`` instead of the settings' policy file,
    when given) and prepared the way ``serve`` does; closed after."""
    rt = Runtime.build(settings, policy=policy)
    await prepare(rt)
    try:
        yield rt
    finally:
        await rt.close()


@asynccontextmanager
async def app_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that talks to the app on ``runtime`` in-process (no socket)."""
    transport = httpx.ASGITransport(app=create_app(runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
