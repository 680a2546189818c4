"""A runtime and client under the metered example policy (the strict one is the default)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from burrow.control.startup import prepare
from tests.conftest import ROOT

METERED_POLICY = ROOT / "examples" / "policies" / "metered.toml"


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(settings.model_copy(update={"policy_path": METERED_POLICY}))
    await prepare(rt)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def metered_client(metered: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime=metered))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
