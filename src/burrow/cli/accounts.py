"""``burrow admin`` and ``burrow account``: create, promote and demote administrators, get a
locked-out person back in (reset two-factor, a one-time password link), look up and act on
accounts. Every change is in the admin audit trail under the operating system's user name."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.cli.common import console, fail, operator, run, with_session
from burrow.control.accounts.service import AccountSearch
from burrow.control.accounts.service import account as account_service
from burrow.control.models import Account, AccountStatus
from burrow.control.runtime import Runtime

admin_app = typer.Typer(help="Administrators.", no_args_is_help=True)
account_app = typer.Typer(
    help="Customer accounts: list, show, suspend, terminate.", no_args_is_help=True
)

AccountRef = Annotated[str, typer.Argument(help="The account's id or email address.")]


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
    app.add_typer(account_app, name="account")


def _when(value: object) -> str:
    return "-" if value is None else str(value)[:19]


def _show(account: Account) -> None:
    rows = [
        ("id", str(account.id)),
        ("email", account.email),
        ("status", account.status.value),
        ("reason", account.status_reason or "-"),
        ("status changed", _when(account.status_changed_at)),
        ("administrator", "yes" if account.is_admin else "no"),
        ("email verified", _when(account.email_verified_at)),
        ("two-factor", "on" if account.totp_enabled else "off"),
        ("age attestation", account.age_attestation.value if account.age_attestation else "-"),
        ("terms accepted", account.terms_version_accepted or "-"),
        ("created", _when(account.created_at)),
    ]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("no password on standard input")
        return password
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@admin_app.command("create")
def admin_create(
    email: Annotated[str, typer.Argument(help="The administrator's email address.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make an existing account an administrator.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Create an administrator (verified at once). Asks for the password unless piped in."""
    if (
        promote
        and not yes
        and not typer.confirm(f"Make {email} an administrator (full access to every account)?")
    ):
        fail("nothing changed")
    password = _read_password(password_stdin) if (password_stdin or not promote) else None

    async def work(session: AsyncSession, _runtime: Runtime) -> Account:
        return await account_service.create_admin(
            session, operator(), email, password, promote=promote
        )

    created = run(with_session(work))
    console.print(f"administrator {created.email} (id {created.id}) is ready", highlight=False)


Reason = Annotated[str | None, typer.Option("--reason", help="Why, for the admin audit trail.")]


@admin_app.command("demote")
def admin_demote(
    ref: AccountRef,
    reason: Reason = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Take the administrator role away from an account (it stays as a customer's)."""
    if not yes and not typer.confirm(f"Demote administrator {ref}?"):
        fail("nothing changed")

    async def work(session: AsyncSession, _runtime: Runtime) -> Account:
        found = await account_service.find(session, ref)
        return await account_service.demote(session, operator(), found.id, reason)

    done = run(with_session(work))
    console.print(
        f"account {done.id} ({done.email}) is no longer an administrator", highlight=False
    )


@admin_app.command("reset-2fa")
def admin_reset_2fa(ref: AccountRef, reason: Reason = None) -> None:
    """Turn two-factor sign-in off for someone who lost their app and recovery codes."""

    async def work(session: AsyncSession, _runtime: Runtime) -> Account:
        found = await account_service.find(session, ref)
        return await account_service.reset_two_factor(session, operator(), found.id, reason)

    done = run(with_session(work))
    console.print(
        f"two-factor sign-in is off for account {done.id} ({done.email}); its sessions ended. "
        "They sign in with their password and should turn it on again.",
        highlight=False,
    )


@admin_app.command("reset-password")
def admin_reset_password(ref: AccountRef, reason: Reason = None) -> None:
    """Print a one-time link (valid one hour) that sets a new password for the account."""

    async def work(session: AsyncSession, runtime: Runtime) -> tuple[Account, str]:
        found = await account_service.find(session, ref)
        return await account_service.reset_password_link(
            session, runtime, operator(), found.id, reason
        )

    done, link = run(with_session(work))
    console.print(
        f"a one-time link to set a new password for account {done.id} ({done.email}); it works "
        "once, for one hour. Give it to the account's owner only:",
        highlight=False,
    )
    typer.echo(link)


@account_app.command("list")
def account_list(
    status: Annotated[
        AccountStatus | None, typer.Option("--status", help="Only accounts with this status.")
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Part of an email address, or an id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many.")] = 0,
) -> None:
    """List accounts, oldest first."""

    async def work(session: AsyncSession, _runtime: Runtime) -> AccountSearch:
        return await account_service.search(session, query, status, limit, offset)

    found = run(with_session(work))
    table = Table(title=f"{found.total} account(s)")
    for column in ("id", "email", "status", "admin", "verified", "created"):
        table.add_column(column)
    for item in found.items:
        table.add_row(
            str(item.id),
            item.email,
            item.status.value,
            "yes" if item.is_admin else "",
            "yes" if item.email_verified_at else "no",
            _when(item.created_at),
        )
    console.print(table)


@account_app.command("show")
def account_show(ref: AccountRef) -> None:
    """Show one account."""

    async def work(session: AsyncSession, _runtime: Runtime) -> Account:
        return await account_service.find(session, ref)

    _show(run(with_session(work)))


@account_app.command("suspend")
def account_suspend(
    ref: AccountRef,
    reason: Annotated[str, typer.Option("--reason", help="Shown to the customer.")],
) -> None:
    """Suspend an account: it can still sign in, but its VPN access ends at once."""

    async def work(session: AsyncSession, runtime: Runtime) -> Account:
        found = await account_service.find(session, ref)
        return await account_service.suspend(session, runtime, operator(), found.id, reason)

    done = run(with_session(work))
    console.print(f"account {done.id} ({done.email}) is suspended", highlight=False)


@account_app.command("unsuspend")
def account_unsuspend(
    ref: AccountRef,
    reason: Annotated[str | None, typer.Option("--reason", help="A note, if any.")] = None,
) -> None:
    """Reinstate a suspended account."""

    async def work(session: AsyncSession, runtime: Runtime) -> Account:
        found = await account_service.find(session, ref)
        return await account_service.unsuspend(session, runtime, operator(), found.id, reason)

    done = run(with_session(work))
    console.print(f"account {done.id} ({done.email}) is active again", highlight=False)


@account_app.command("terminate")
def account_terminate(
    ref: AccountRef,
    reason: Annotated[str, typer.Option("--reason", help="Why; kept with the account.")],
    clause: Annotated[
        str | None,
        typer.Option(
            "--clause",
            help="The clause of the terms that was broken, as the admin panel lists it "
            "(a termination for a violation); leave out for any other termination.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Terminate an account for good: its sessions and VPN access end at once."""
    if not reason.strip():
        fail("give the reason with --reason")
    if not yes and not typer.confirm(f"Terminate account {ref} for good?"):
        fail("nothing changed")

    async def work(session: AsyncSession, runtime: Runtime) -> Account:
        found = await account_service.find(session, ref)
        return await account_service.terminate(
            session, runtime, operator(), found.id, reason, clause=clause
        )

    done = run(with_session(work))
    console.print(f"account {done.id} ({done.email}) is terminated", highlight=False)
