"""Schemathesis over the whole OpenAPI schema: no input gets a 500, every refusal is problem+json.

A real server runs on a loopback port with a seeded database; customer endpoints are called as
an administrator (who is also a customer), node endpoints with a node token. The run is bounded
(a fixed number of examples per operation) and derandomised, so it is the same every time.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import NodeStatus
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.control.startup import prepare
from tests.conftest import STRICT_POLICY, TEST_SECRET, _backends
from tests.support import factories
from tests.support.server import RunningServer, serving

# Operations that end the session they are called with: each example gets a session of its own,
# of an account that is not the administrator's.
SELF_ENDING = {
    ("DELETE", "/api/v1/sessions"),
    ("DELETE", "/api/v1/sessions/current"),
    # May end any session of the caller's, its own included (the admin's is the first one).
    ("DELETE", "/api/v1/sessions/{session_id}"),
    ("POST", "/api/v1/accounts/me/password"),
}


@dataclass
class FuzzTarget:
    server: RunningServer
    admin_token: str
    node_token: str
    spare_tokens: list[str]

    def token_for(self, method: str, path: str) -> str:
        if path.startswith("/node-api/"):
            return self.node_token
        if (method.upper(), path) in SELF_ENDING and len(self.spare_tokens) > 1:
            return self.spare_tokens.pop()
        return self.admin_token


async def _seed(settings: Settings) -> tuple[str, str, list[str]]:
    runtime = Runtime.build(settings)
    try:
        await prepare(runtime)
        async with unit_of_work(runtime.sessionmaker) as session:
            # Other accounts first, so that small ids the fuzzer tries are not the admin's own.
            for _ in range(20):
                account = await factories.create_account(session)
                await factories.create_subscription(session, account)
                await factories.create_device(session, account)
            admin = await factories.create_account(session, admin=True)
            await factories.create_subscription(session, admin)
            await factories.create_device(session, admin)
            admin_token = await factories.create_session_token(session, admin)
            node = await factories.create_node(session, status=NodeStatus.active)
            node_token = new_token()
            node.node_token_hash = hash_token(node_token)
            await session.flush()
            spare = await factories.create_account(session)
            spare_tokens = [
                await factories.create_session_token(session, spare) for _ in range(300)
            ]
        return admin_token, node_token, spare_tokens
    finally:
        await runtime.close()


@pytest.fixture(scope="module", params=_backends())
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    cleanup = None
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path_factory.mktemp("fuzz") / "burrow.db"
        shutil.copyfile(template, path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"fuzz_{uuid.uuid4().hex[:12]}"
        server.psql(f"CREATE DATABASE {name} TEMPLATE burrow_template")
        url = server.url(name)

        def cleanup() -> None:
            server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    settings_ = Settings(
        environment="test",
        database_url=url,
        policy_path=STRICT_POLICY,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        scheduler_enabled=False,
        email_enabled=False,
        long_poll_timeout_seconds=0.5,
    )
    admin_token, node_token, spare_tokens = asyncio.run(_seed(settings_))
    try:
        with serving(settings_) as running:
            yield FuzzTarget(running, admin_token, node_token, spare_tokens)
    finally:
        if cleanup is not None:
            cleanup()


def _operations() -> list[object]:
    # The schema does not depend on the database, so it can be built at collection time.
    document = create_app(Settings(environment="test")).openapi()
    return [
        pytest.param(result.ok(), id=f"{result.ok().method.upper()} {result.ok().path}")
        for result in schemathesis.openapi.from_dict(document).get_all_operations()
    ]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", _operations())
def test_no_input_gets_a_server_error(
    operation: APIOperation, mode: GenerationMode, fuzz_target: FuzzTarget
) -> None:

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=10,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case) -> None:
        response = case.call(
            base_url=fuzz_target.server.url,
            headers={"Authorization": f"Bearer {fuzz_target.token_for(case.method, case.path)}"},
            timeout=30,
        )
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, (
            f"{where} -> {response.status_code}: {response.text[:500]}"
        )
        if response.status_code >= 400:
            content_type = "".join(response.headers.get("content-type", []))
            assert content_type.startswith("application/problem+json"), (
                f"{where} -> {response.status_code} is not problem+json"
            )
            assert response.json().get("detail"), f"{where}: no message"

    try:
        check()
    except Unsatisfiable:
        pytest.skip("this operation takes no input that could be made invalid")
