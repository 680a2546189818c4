"""Fixtures of the control-plane tests: a runtime and client under the metered example policy
(the strict one is the default)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from burrow.control.config import Settings
from burrow.control.runtime import Runtime
from tests.conftest import METERED_POLICY
from tests.support.app import app_client, running_runtime


@pytest.fixture
async def metered(settings: Settings) -> AsyncIterator[Runtime]:
    async with running_runtime(settings.model_copy(update={"policy_path": METERED_POLICY})) as rt:
        yield rt


@pytest.fixture
async def metered_client(metered: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(metered) as client:
        yield client
