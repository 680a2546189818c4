"""``burrow``: serve the control plane, run a node, manage accounts, nodes and the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

from burrow.cli.common import (
    ALEMBIC_INI,
    EXIT_SETUP,
    console,
    err_console,
    fail,
    fail_with,
    load_settings,
    refuse_policy,
    require_database,
    settings_or_none,
)
from burrow.control.config import PLACEHOLDER_SECRET, Settings
from burrow.control.logfilter import filter_for_policy, install
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import check_file, summary

app = typer.Typer(
    name="burrow",
    help="burrow: the platform a VPN provider runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"burrow {metadata.version('burrow')}")
        except metadata.PackageNotFoundError:
            fail("burrow is not installed as a package (pip install -e .)", EXIT_SETUP)
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print burrow's version and exit.",
            callback=_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """burrow: the platform a VPN provider runs."""


app.add_typer(db_app, name="db")


def alembic_config(database_url: str) -> Config:
    ini = ALEMBIC_INI
    if not ini.exists():
        fail(f"alembic.ini not found at {ini}; run burrow from its source checkout", EXIT_SETUP)
    cfg = Config(str(ini))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["skip_logging"] = True
    return cfg


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the database migrations (creates the SQLite file if needed)."""
    settings = load_settings()
    # Reachable and writable first (the SQLite file and its directory are made here).
    require_database(settings, schema=False)
    try:
        command.upgrade(alembic_config(settings.database_url), revision)
    except Exception as exc:  # alembic raises many kinds; one line is what the operator needs
        fail(f"migration failed: {str(exc).splitlines()[0]}", EXIT_SETUP)
    console.print(f"database at revision {revision}")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging(settings: Settings, policy: Policy) -> Callable[[], None]:
    """Log to stderr (and BURROW_LOG_FILE), with IP addresses removed as the policy says.

    Returns a function that undoes it (for tests; `serve` keeps it for the process's life).
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    root = logging.getLogger()
    handler: logging.Handler | None = None
    if settings.log_file is not None:
        try:
            settings.log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(settings.log_file, encoding="utf-8")
        except OSError as exc:
            fail(f"BURROW_LOG_FILE {settings.log_file}: {exc.strerror or exc}", EXIT_SETUP)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    uninstall = install(filter_for_policy(policy, settings))

    def undo() -> None:
        uninstall()
        if handler is not None:
            root.removeHandler(handler)
            handler.close()

    return undo


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (BURROW_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (BURROW_PORT).")] = None,
) -> None:
    """Serve the control plane (API, node API and scheduler)."""
    import uvicorn

    from burrow.control.app import KEEP_ALIVE_SECONDS, create_app

    settings = load_settings()
    policy, problems = check_file(settings.policy_path)
    if policy is None:
        # The same lines as `burrow policy check`.
        refuse_policy(settings.policy_path, problems, "burrow will not start on it")
    # Everything that would stop the server is checked before it says it is serving.
    require_database(settings)
    if settings.inbound_smtp and (busy := _port_taken(settings.inbound_smtp)):
        fail(
            f"BURROW_INBOUND_SMTP={settings.inbound_smtp}: cannot listen there ({busy}); "
            "choose a free port or unset it",
            EXIT_SETUP,
        )
    if settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET:
        err_console.print(
            "[bold yellow]warning:[/] BURROW_SECRET_KEY is the development placeholder: anyone "
            "can forge this server's signed cookies. Set it to a random value before real use.",
            highlight=False,
            soft_wrap=True,
        )
    host = host or settings.host
    port = port or settings.port
    _configure_logging(settings, policy)
    console.print(f"policy OK: {summary(policy)}", highlight=False, markup=False)
    console.print(f"burrow serving on http://{host}:{port}  (API docs: /api/docs)")
    if notice := settings.loopback_notice():
        typer.echo(notice)
    if settings.inbound_smtp:
        console.print(f"support desk email accepted on {settings.inbound_smtp}", markup=False)
    console.print(
        "No admin yet? Create the first one with: [bold]burrow admin create EMAIL[/]",
        highlight=False,
    )
    if settings.embedded_node:
        from burrow.cli.embedded import serve_with_node

        asyncio.run(serve_with_node(settings, host, port))
        return
    # Node long polls wait up to 25 s; do not make a restart wait for them.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=3,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # Forwarded headers are believed only from BURROW_TRUSTED_PROXIES (in the app).
        proxy_headers=False,
    )


def _port_taken(where: str) -> str | None:
    """Why ``host:port`` cannot be listened on now (taken, no such address), or None."""
    import socket

    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _register_subcommands() -> None:
    # Each room adds its own group; imported here so that `burrow --help` lists them all.
    from burrow.cli import accounts, audit, nodes, policy

    accounts.register(app)
    nodes.register(app)
    policy.register(app)
    audit.register(app)


_register_subcommands()


def main() -> None:
    try:
        app()
    except Exception as exc:  # anything a command did not turn into a line itself
        try:
            fail_with(exc, settings_or_none())
        except typer.Exit as done:  # outside Typer now: exit by hand
            raise SystemExit(done.exit_code) from None
