"""``burrow node enroll`` and ``burrow node run``: the commands that run on a VPN server.

They join the operator's ``burrow node`` group (``nodes.py`` calls ``register``) but drive only
the node agent (``burrow.node``), which never imports the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from burrow.cli.common import EXIT_SETUP, console, fail
from burrow.node.agent import AgentError, check_host, enroll, run_agent
from burrow.node.client import ControlPlaneUnavailable, NodeApiRefused
from burrow.node.config import NodeSettings
from burrow.node.identity import IdentityError, identity_path, load_identity

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the identity file lives (BURROW_NODE_STATE_DIR; default /var/lib/burrow-node).",
    ),
]


def register(node_app: typer.Typer) -> None:
    node_app.command("enroll")(enroll_command)
    node_app.command("run")(run_command)


def _settings(**overrides: object) -> NodeSettings:
    try:
        settings = NodeSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"BURROW_NODE_{where.upper()}: {first['msg']}", EXIT_SETUP)
    given = {key: value for key, value in overrides.items() if value is not None}
    return settings.model_copy(update=given)


def enroll_command(
    control: Annotated[str, typer.Option("--control", help="The control plane's URL.")],
    token: Annotated[str, typer.Option("--token", help="The one-time enrollment token.")],
    state_dir: StateDir = None,
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key",
            help="Make a new key pair even if the node has one (devices then need new configs).",
        ),
    ] = False,
) -> None:
    """Make this node's key pair, enroll it and keep its identity (the one file it keeps)."""
    settings = _settings(state_dir=state_dir)
    if not control.startswith(("http://", "https://")):
        fail("--control must be the control plane's URL, such as https://vpn.example.net")
    private_key = None
    if not new_key and identity_path(settings.state_dir).exists():
        # Enrolling again keeps the key: the devices' configs name the node's public key.
        with contextlib.suppress(IdentityError):
            private_key = load_identity(settings.state_dir).private_key
    try:
        identity = asyncio.run(
            enroll(control, token.strip(), settings.state_dir, private_key=private_key)
        )
    except NodeApiRefused as exc:
        fail(exc.detail)
    except ControlPlaneUnavailable as exc:
        fail(f"could not reach the control plane at {control} ({exc})", EXIT_SETUP)
    except OSError as exc:
        fail(f"could not write {identity_path(settings.state_dir)}: {exc.strerror}", EXIT_SETUP)
    console.print(
        f"node {identity.node_name} (id {identity.node_id}) enrolled; its identity is in "
        f"{identity_path(settings.state_dir)}. Start it with: burrow node run",
        highlight=False,
    )


def run_command(
    state_dir: StateDir = None,
    netns: Annotated[
        str | None,
        typer.Option("--netns", help="Serve inside this network namespace (BURROW_NODE_NETNS)."),
    ] = None,
    egress_interface: Annotated[
        str | None,
        typer.Option(
            "--egress-interface",
            help="Where customers' traffic leaves (default: the default route's device).",
        ),
    ] = None,
) -> None:
    """Serve the peers the control plane says, until stopped (SIGTERM or Ctrl-C)."""
    settings = _settings(state_dir=state_dir, netns=netns, egress_interface=egress_interface)
    try:
        identity = load_identity(settings.state_dir)
        check_host(settings)
    except (IdentityError, AgentError) as exc:
        fail(str(exc), EXIT_SETUP)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # SIGTERM (systemd, kill) ends the agent like Ctrl-C: cleanly, table and interface gone.
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        await run_agent(settings, identity)

    try:
        asyncio.run(main())
    except AgentError as exc:
        fail(str(exc))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
