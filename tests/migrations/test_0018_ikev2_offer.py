"""Migration 0018: the nodes' IKEv2 host and CA, empty for the nodes there were, which serve
IKEv2 (as far as customers are told) only once their agent announces it."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from burrow.control.db import unit_of_work
from burrow.control.models import Node
from burrow.control.nodes.service import served_protocols
from burrow.control.runtime import Runtime
from tests.conftest import ROOT
from tests.support.factories import create_node


def _config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["skip_logging"] = True
    return cfg


async def _node_columns(runtime: Runtime) -> set[str]:
    async with unit_of_work(runtime.sessionmaker, writes=False) as session:
        connection = await session.connection()
        names = await connection.run_sync(
            lambda sync: {c["name"] for c in inspect(sync).get_columns("nodes")}
        )
    return set(names)


async def test_existing_nodes_keep_their_rows_and_announce_no_ikev2_yet(
    runtime: Runtime, database_url: str
) -> None:
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await create_node(session, name="ams-1")
    cfg = _config(database_url)
    await asyncio.to_thread(command.downgrade, cfg, "0017")
    assert not {"ikev2_host", "ikev2_ca"} & await _node_columns(runtime)

    await asyncio.to_thread(command.upgrade, cfg, "0018")
    assert {"ikev2_host", "ikev2_ca"} <= await _node_columns(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        query = text("SELECT name, ikev2_host, ikev2_ca FROM nodes WHERE id = :id")
        row = (await session.execute(query, {"id": node.id})).one()
        assert tuple(row) == ("ams-1", None, None)
        stored = await session.get(Node, node.id)
        assert stored is not None
        assert served_protocols(stored) == ["wireguard"]
