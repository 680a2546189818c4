"""All-in-one: ``burrow serve`` with a node agent in the same process (``BURROW_EMBEDDED_NODE``).

The control plane starts as usual. Once it answers, this module makes sure a node row named
``BURROW_EMBEDDED_NODE_NAME`` (default ``local``) exists, gives it a fresh one-time enrollment
token through the nodes service, and hands that token to the agent, which enrolls over the
node API on loopback like any other node and then serves. The agent keeps its key pair in its
identity file (``BURROW_NODE_STATE_DIR``), so the node's public key, which every device's
config names, survives restarts.

The wiring lives here, in the CLI, because the agent (``burrow.node``) never imports the
control plane. If the agent cannot run (not root, no wireguard-go), the control plane keeps
serving and the log says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

import typer
import uvicorn
from fastapi import FastAPI

from burrow.control.app import KEEP_ALIVE_SECONDS, create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.models import Node
from burrow.control.nodes.schemas import NodeCreate, NodeUpdate
from burrow.control.nodes.service import NodeNotFound
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.node.agent import AgentError, check_host, enroll, run_agent
from burrow.node.client import NodeApiError
from burrow.node.config import NodeSettings
from burrow.node.identity import IdentityError, load_identity

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 3
# What the agent switches on to route (nodes' ensure_forwarding), and put back on the way out.
FORWARDING_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


def loopback_url(host: str, port: int) -> str:
    """Where the in-process agent reaches the API this process serves."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"http://[{address}]:{port}" if address.version == 6 else f"http://{address}:{port}"


def local_node_data(settings: Settings) -> NodeCreate:
    """The embedded node's row: reachable at the public host, on the WireGuard port, where
    the settings say it is."""
    return NodeCreate(
        name=settings.embedded_node_name,
        country=settings.embedded_node_country,
        city=settings.embedded_node_city,
        endpoint_host=settings.public_endpoint_host,
        endpoint_port=settings.wireguard_port,
        capacity=settings.embedded_node_capacity,
    )


def local_node_update(settings: Settings, node: Node) -> NodeUpdate | None:
    """What the operator set (by environment) that the embedded node's row does not say yet.

    Only settings given explicitly count: a change made since in the admin panel or with
    `burrow node update` stays unless the environment says otherwise.
    """
    given = settings.model_fields_set
    wanted = local_node_data(settings)
    fields = {
        "endpoint_host": settings.public_host is not None or "public_url" in given,
        "endpoint_port": "wireguard_port" in given,
        "country": "embedded_node_country" in given,
        "city": "embedded_node_city" in given,
        "capacity": "embedded_node_capacity" in given,
    }
    changes = {
        field: getattr(wanted, field)
        for field, explicit in fields.items()
        if explicit and getattr(wanted, field) != getattr(node, field)
    }
    return NodeUpdate(**changes) if changes else None


async def local_enrollment_token(runtime: Runtime) -> str:
    """A one-time enrollment token for the embedded node, creating its row the first time."""
    async with unit_of_work(runtime.sessionmaker) as session:
        try:
            node = await node_service.get_by_name(session, runtime.settings.embedded_node_name)
        except NodeNotFound:
            created = await node_service.create(session, runtime, local_node_data(runtime.settings))
            log.info("embedded node %s created (id %s)", created.node.name, created.node.id)
            return created.enrollment.token
        update = local_node_update(runtime.settings, node)
        if update is not None:
            await node_service.update(session, runtime, node.id, update)
            log.info(
                "embedded node %s updated from the settings: %s",
                node.name,
                ", ".join(sorted(update.model_fields_set)),
            )
        issued = await node_service.new_enrollment_token(session, runtime, node)
        return issued.token


async def read_sysctls(names: tuple[str, ...], netns: str | None) -> dict[str, str]:
    """The current values of ``names`` (in ``netns``); a name that cannot be read is left out."""
    argv = ["sysctl", "-n", *names]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    values = out.decode().split()
    if proc.returncode != 0 or len(values) != len(names):
        return {}
    return dict(zip(names, values, strict=True))


async def put_back_sysctls(before: dict[str, str], netns: str | None) -> list[str]:
    """Write back each value of ``before`` that changed since; returns ``name=value`` of each."""
    now = await read_sysctls(tuple(before), netns)
    changed = [f"{name}={value}" for name, value in before.items() if now.get(name) != value]
    if changed:
        argv = ["sysctl", "-q", "-w", *changed]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise OSError(f"sysctl could not put back {', '.join(changed)}: {err.decode().strip()}")
    return changed


def put_back_line(interface: str | None, sysctls: list[str]) -> str | None:
    """What the embedded node put back, in one line; ``interface`` None when it never served
    (then only sysctls it switched on, if any, are named)."""
    parts = []
    if sysctls:
        parts.append(f"IP forwarding as it was before ({', '.join(sysctls)})")
    if interface is not None:
        parts += [f"interface {interface} removed", "burrow's nftables table removed"]
    if not parts:
        return None
    return "the embedded node put back what it changed on this host: " + "; ".join(parts)


async def run_embedded_node(app: FastAPI, control_url: str, node_settings: NodeSettings) -> None:
    """Enroll the local node on loopback and serve it until cancelled; logs and returns on error.

    On the way out the host is as it was: the agent removes its interface and nftables table,
    and the IP forwarding sysctls it switched on are switched off again (one line says so).
    """
    try:
        check_host(node_settings)
    except AgentError as exc:
        log.error("the embedded node does not serve: %s", exc)
        return
    forwarding = await read_sysctls(FORWARDING_SYSCTLS, node_settings.netns)
    interface: str | None = None  # set once the agent runs: then there is one to remove
    try:
        runtime: Runtime = app.state.runtime
        token = await local_enrollment_token(runtime)
        private_key = None
        with contextlib.suppress(IdentityError):
            private_key = load_identity(node_settings.state_dir).private_key
        identity = await enroll(
            control_url, token, node_settings.state_dir, private_key=private_key
        )
        interface = node_settings.interface or identity.interface_name
        await run_agent(node_settings, identity)
    except (AgentError, NodeApiError, IdentityError, OSError) as exc:
        log.error("the embedded node does not serve: %s", exc)
    finally:
        try:
            restored = await put_back_sysctls(forwarding, node_settings.netns)
        except OSError as exc:
            log.error("%s", exc)
        else:
            if (line := put_back_line(interface, restored)) is not None:
                typer.echo(line)


async def serve_with_node(settings: Settings, host: str, port: int) -> None:
    """Serve the control plane and, once it is up, the embedded node beside it."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # Forwarded headers are believed only from BURROW_TRUSTED_PROXIES (in the app).
        proxy_headers=False,
        # Nodes' long polls would each hold a shutdown for up to the poll's timeout.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(), name="burrow-serve")
    node: asyncio.Task[None] | None = None
    try:
        while not server.started:
            if serving.done():
                return await serving
            await asyncio.sleep(0.05)
        node = asyncio.create_task(
            run_embedded_node(app, loopback_url(host, port), NodeSettings()),
            name="burrow-embedded-node",
        )
        # Stop the agent as soon as a shutdown begins: uvicorn would otherwise wait for its
        # long poll to end before it stops.
        while not serving.done() and not server.should_exit:
            await asyncio.wait({serving}, timeout=0.1)
        node.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node
        await serving
    finally:
        if node is not None:
            # The agent's own cleanup stops wireguard-go and removes burrow's nftables table.
            node.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node
        if not serving.done():
            server.should_exit = True
            await serving
