"""``burrow node``: create nodes, make enrollment tokens, list them.

The commands that run on a VPN server (``burrow node enroll``, ``burrow node run``) belong to
the node agent; it adds them to the same group with ``@node_app.command()`` from its own
module, so ``burrow node --help`` lists both sides.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.cli import node_agent
from burrow.cli.common import console, fail, operator, run, with_session
from burrow.control.models import Node
from burrow.control.nodes.schemas import (
    EnrollmentIssued,
    NodeCreate,
    NodeUpdate,
    endpoint_text,
    parse_endpoint,
)
from burrow.control.nodes.service import NodeWithEnrollment
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime

node_app = typer.Typer(
    help="VPN nodes: create them and their enrollment tokens (and, on a node, run the agent).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    node_agent.register(node_app)


def _print_enrollment(name: str, issued: EnrollmentIssued) -> None:
    expires = issued.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    console.print(f"Enroll node {name} by running this on it (once, before {expires}):")
    # Plain echo: the command must stay on one line, whatever the terminal's width.
    typer.echo(f"  {issued.command}")


@node_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A short name: lowercase letters, digits, -.")],
    country: Annotated[str, typer.Option(help="ISO 3166 two-letter country code, e.g. NL.")],
    city: Annotated[str, typer.Option(help="The city the node is in.")],
    endpoint: Annotated[str, typer.Option(help="Where devices reach it: HOST:PORT ([IPv6]:PORT).")],
    egress_ipv4: Annotated[
        str | None,
        typer.Option(
            help="The shared IPv4 address clients leave by; A,B,... for several (deterministic "
            "NAT gives each its own devices' port blocks)."
        ),
    ] = None,
    egress_ipv6: Annotated[
        str | None, typer.Option(help="The shared IPv6 address clients leave by.")
    ] = None,
    capacity: Annotated[int, typer.Option(help="Devices it serves at once at most.")] = 1000,
    uplink_mbit: Annotated[
        int | None, typer.Option(help="Its uplink's bandwidth in Mbit/s, for fair-use shaping.")
    ] = None,
) -> None:
    """Create a node and print the one-time command that enrolls it."""
    try:
        host, port = parse_endpoint(endpoint)
    except ValueError as exc:
        fail(f"--endpoint: {exc}")
    try:
        data = NodeCreate(
            name=name,
            country=country,
            city=city,
            endpoint_host=host,
            endpoint_port=port,
            **_egress_ipv4(egress_ipv4),
            egress_ipv6=egress_ipv6,
            capacity=capacity,
            uplink_mbit=uplink_mbit,
        )
    except ValidationError as exc:
        fail(_input_error(exc))

    async def work(session: AsyncSession, runtime: Runtime) -> NodeWithEnrollment:
        return await node_service.create_by(session, runtime, operator(), data)

    created = run(with_session(work))
    console.print(f"node {created.node.name} created (id {created.node.id})", highlight=False)
    _print_enrollment(created.node.name, created.enrollment)


def _egress_ipv4(text: str | None) -> dict[str, Any]:
    """``--egress-ipv4 A,B,...``: the first address and the further ones."""
    if text is None:
        return {}
    first, *more = [part.strip() for part in text.split(",")] or [""]
    return {"egress_ipv4": first, "egress_ipv4_extra": more}


def _input_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = str(first["loc"][0]).replace("_", "-") if first["loc"] else "input"
    if where in ("endpoint-host", "endpoint-port"):
        where = "endpoint"
    if where == "egress-ipv4-extra":
        where = "egress-ipv4"
    return f"--{where}: {first['msg'].removeprefix('Value error, ')}"


@node_app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The node's name.")],
    endpoint: Annotated[
        str | None, typer.Option(help="Where devices reach it: HOST:PORT ([IPv6]:PORT).")
    ] = None,
    country: Annotated[str | None, typer.Option(help="ISO 3166 two-letter country code.")] = None,
    city: Annotated[str | None, typer.Option(help="The city the node is in.")] = None,
    capacity: Annotated[int | None, typer.Option(help="Devices it serves at once at most.")] = None,
    egress_ipv4: Annotated[
        str | None,
        typer.Option(
            help="Its shared IPv4 egress addresses, A,B,... in order (replaces the ones on "
            "record); deterministic NAT gives each its own devices' port blocks."
        ),
    ] = None,
) -> None:
    """Change a node's endpoint, location, capacity or egress addresses. Customers whose
    configurations name the old endpoint are told on their devices page to download them
    again."""
    changes: dict[str, object] = {}
    if endpoint is not None:
        try:
            changes["endpoint_host"], changes["endpoint_port"] = parse_endpoint(endpoint)
        except ValueError as exc:
            fail(f"--endpoint: {exc}")
    for field, value in (("country", country), ("city", city), ("capacity", capacity)):
        if value is not None:
            changes[field] = value
    changes.update(_egress_ipv4(egress_ipv4))
    if not changes:
        fail("nothing to change: give --endpoint, --country, --city, --capacity or --egress-ipv4")
    try:
        data = NodeUpdate.model_validate(changes)
    except ValidationError as exc:
        fail(_input_error(exc))

    async def work(session: AsyncSession, runtime: Runtime) -> tuple[Node, dict[str, object]]:
        node = await node_service.get_by_name(session, name)
        before = {field: getattr(node, field) for field in changes}
        return await node_service.update_by(session, runtime, operator(), node.id, data), before

    node, before = run(with_session(work))
    for field, old in before.items():
        console.print(f"{field}: {old} -> {getattr(node, field)}", highlight=False, markup=False)
    moved = any(
        before.get(field, getattr(node, field)) != getattr(node, field)
        for field in ("endpoint_host", "endpoint_port")
    )
    if moved and node.wg_public_key:
        console.print(
            "customers with devices are told on their devices page to download the "
            f"configuration for {node.name} again",
            highlight=False,
        )


@node_app.command("token")
def token(name: Annotated[str, typer.Argument(help="The node's name.")]) -> None:
    """Make a new one-time enrollment token (enrolling again replaces the node's token)."""

    async def work(session: AsyncSession, runtime: Runtime) -> EnrollmentIssued:
        node = await node_service.get_by_name(session, name)
        return await node_service.new_enrollment_token_by(session, runtime, operator(), node)

    issued = run(with_session(work))
    _print_enrollment(name.strip().lower(), issued)


@node_app.command("list")
def list_nodes() -> None:
    """List the nodes (live health is on the admin API of the running control plane)."""

    async def work(session: AsyncSession, _runtime: Runtime) -> list[Node]:
        return await node_service.list_all(session)

    nodes = run(with_session(work))
    if not nodes:
        console.print("no nodes yet; create one with `burrow node create`")
        return
    table = Table()
    for column in ("id", "name", "location", "endpoint", "capacity", "status", "enrolled"):
        table.add_column(column, overflow="fold")
    for node in nodes:
        table.add_row(
            str(node.id),
            node.name,
            f"{node.city}, {node.country}",
            endpoint_text(node.endpoint_host, node.endpoint_port),
            str(node.capacity),
            node.status.value,
            "-" if node.enrolled_at is None else node.enrolled_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
