"""The lab every end-to-end test shares: control plane, two nodes, the internet, customers.

Built once per module and always torn down (processes stopped by PID, namespaces deleted),
also when a test fails. Skipped, with one line, where it cannot run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.netns import missing_requirements

from .lab import HERE, ROOT, World, build_world, policy_world, prepare_world, wait_for

REASON = missing_requirements("wireguard-go", "wg", "nft", "curl")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.fspath).parent == HERE:
            item.add_marker(pytest.mark.netns)
            if REASON is not None:
                item.add_marker(pytest.mark.skip(reason=REASON))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(tmp_path_factory.mktemp("e2e")) as world:
        prepare_world(world)
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


# Worlds running each example policy, with a short idle threshold (test_limits, test_privacy).
POLICIES = ROOT / "examples" / "policies"


@pytest.fixture(scope="module")
def strict_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with policy_world(tmp_path_factory.mktemp("strict"), POLICIES / "strict-no-logs.toml") as w:
        yield w


@pytest.fixture(scope="module")
def metered_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with policy_world(tmp_path_factory.mktemp("metered"), POLICIES / "metered.toml") as w:
        yield w
