"""The lab every end-to-end test shares: control plane, two nodes, the internet, customers.

Built once per module and always torn down (processes stopped by PID, namespaces deleted),
also when a test fails. Skipped, with one line, where it cannot run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from tests.node.netns import missing_requirements

from .lab import HERE, PYTHON, ROOT, SECRET, World, build_world, run_db, wait_for

REASON = missing_requirements("wireguard-go", "wg", "nft", "curl")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.fspath).parent == HERE:
            item.add_marker(pytest.mark.netns)
            if REASON is not None:
                item.add_marker(pytest.mark.skip(reason=REASON))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from burrow.control.config import Settings
    from tests.support.factories import create_account, create_session_token

    tmp = tmp_path_factory.mktemp("e2e")
    os.chmod(tmp, 0o755)
    with build_world(tmp) as world:
        database = tmp / "burrow.db"
        settings = Settings(
            environment="test",
            database_url=f"sqlite+aiosqlite:///{database}",
            policy_path=ROOT / "examples" / "policies" / "strict-no-logs.toml",
            secret_key=SECRET,  # type: ignore[arg-type]
        )
        world.settings = settings
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["database_url"] = settings.database_url
        cfg.attributes["skip_logging"] = True
        command.upgrade(cfg, "head")

        async def admin(session: Any, _runtime: Any) -> str:
            account = await create_account(session, admin=True)
            return await create_session_token(session, account)

        world.admin_token = run_db(settings, admin)

        world.web_file = os.urandom(3 * 1024 * 1024 + 17)
        (tmp / "file").write_bytes(world.web_file)
        world.web_log = tmp / "web.log"
        world.spawn(
            world.inet.ns,
            "internet",
            PYTHON, str(HERE / "internet.py"), "--file", str(tmp / "file"),
            "--log", str(world.web_log), "--http", "80", "--banner", "25", "587",
        )  # fmt: skip
        for customer in world.customers:
            world.spawn(
                customer.ns, "listener", PYTHON, str(HERE / "internet.py"), "--banner", "8000"
            )

        from .lab import NetnsHttp

        world.api = NetnsHttp(world.ctl.ns.name, f"http://127.0.0.1:{8080}")
        world.start_control_plane()
        tokens = []
        for index, (name, country, city) in enumerate(
            [("ams-1", "NL", "Amsterdam"), ("fra-1", "DE", "Frankfurt")]
        ):
            created = world.create_node(index, name, country, city)
            tokens.append((index, created["enrollment"]["token"], created["node"]["id"]))
        world.enroll_and_run(tokens)
        for node in world.nodes:
            wait_for(
                lambda node=node: node.wireguard_go_pid() is not None,  # type: ignore[misc]
                30,
                f"node {node.index} to serve",
            )
        yield world
