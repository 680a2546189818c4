"""Devices: add (a key made on the server, or in the browser), name, the config to scan or
download for any server, a new key, removal; the plan's device and connection limits, and
why a device is blocked when it is.

A private key made on the server is shown once, on the page that answers the add or the new
key, and never stored. A key made in the browser (WebCrypto X25519, ``static/devices.js``)
never leaves it: the page gets only the public key, and the script fills the private key into
the config the browser downloads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Query, Request, Response

from burrow.control.connections.service import connection as connection_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.devices.schemas import (
    DeviceCreate,
    DeviceDnsFilters,
    DeviceRotate,
    DeviceUpdate,
)
from burrow.control.devices.service import IssuedDevice, NoNodeAvailable, render_qr
from burrow.control.devices.service import device as device_service
from burrow.control.models import Account, Device
from burrow.control.nodes.schemas import ServerRead
from burrow.control.nodes.service import node as node_service
from burrow.control.params import MAX_ID
from burrow.control.policy.schemas import PROTOCOL_NAMES
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.web.auth import WebAccount
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render, trusted_svg

router = page_router()

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID)]
NodeChoice = Annotated[int | None, Query(ge=1, le=MAX_ID)]


def inline_svg(svg: bytes) -> Any:
    """segno's SVG without its XML declaration, to sit inside the page."""
    text = svg.decode()
    if text.startswith("<?xml"):
        text = text.split("?>", 1)[1]
    text = text.strip()
    # segno gives a fixed width and height and no viewBox: shrunk by the stylesheet to fit a
    # card, the browser would crop the code instead of scaling it, and no phone could scan it.
    size = re.match(r'<svg [^>]*?width="(\d+)" height="(\d+)"', text)
    if size is not None and "viewBox" not in text[: size.end()]:
        text = text.replace("<svg ", f'<svg viewBox="0 0 {size[1]} {size[2]}" ', 1)
    return trusted_svg(text)


async def _servers(session: SessionDep, runtime: Runtime) -> list[ServerRead]:
    # Only servers a config can be written for: enrolled, with a public key.
    return [s for s in await node_service.server_list(session, runtime) if s.public_key]


def _per_server(
    runtime: Runtime, plan_code: str | None, servers: list[ServerRead]
) -> dict[str, int | None]:
    """Per protocol the fleet's servers serve, the plan's per-server limit (None: no limit).

    A policy may limit protocols no server serves; those limits promise nothing and are not
    shown. Empty when the plan limits none of the served protocols.
    """
    section = runtime.policy.plans.get(plan_code) if plan_code else None
    if section is None:
        return {}
    served = [p for p in PROTOCOL_NAMES if any(p in s.protocols for s in servers)]
    limits = {p: section.connections_per_server.get(p) for p in served}
    return limits if any(n is not None for n in limits.values()) else {}


def _recommended(servers: list[ServerRead]) -> ServerRead | None:
    return next((s for s in servers if s.recommended), servers[0] if servers else None)


async def _devices_page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    devices = await device_service.list(session, account)
    statuses = await connection_service.device_statuses(runtime, account.id)
    plan = await subscription_service.access_plan(session, account.id)
    servers = await _servers(session, runtime)
    connected = sum(1 for s in statuses.values() if s.state == "connected")
    at_limit = (
        plan is not None and plan.device_limit is not None and len(devices) >= plan.device_limit
    )
    return render(
        request,
        "devices/list.html",
        {
            "devices": devices,
            "statuses": statuses,
            "plan": plan,
            "servers": servers,
            "connected": connected,
            "at_limit": at_limit,
            "per_server": _per_server(runtime, plan.code if plan else None, servers),
            "protocol_names": PROTOCOL_NAMES,
            "idle_minutes": max(1, round(runtime.settings.connection_idle_seconds / 60)),
            "form": form or Form.empty(),
            "config_notices": await device_service.config_notices(session, account),
        },
        status_code=status_code,
    )


@router.get("/devices")
async def devices_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await _devices_page(request, session, runtime, account)


async def _issued_page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    issued: IssuedDevice,
    *,
    rotated: bool,
    browser_key: bool,
) -> Response:
    servers = await _servers(session, runtime)
    recommended = _recommended(servers)
    device = issued.device
    context: dict[str, Any] = {
        "device": device,
        "issued": issued,
        "rotated": rotated,
        "browser_key": browser_key,
        "servers": servers,
        "qr_svg": None,
        "template": None,
        "filename": None,
    }
    if issued.config is not None and issued.config_node is not None:
        context["qr_svg"] = inline_svg(render_qr(issued.config, "svg"))
        context["filename"] = issued.config_filename
    elif browser_key and recommended is not None:
        # The script puts the browser's private key into this config, in the browser.
        config = await device_service.config(session, runtime, account, device.id, recommended.id)
        context["template"] = config.text
        context["filename"] = config.filename
    return render(request, "devices/issued.html", context, status_code=201 if not rotated else 200)


@router.post("/devices")
async def add_device(
    request: Request, session: SessionDep, runtime: RuntimeDep, account: WebAccount
) -> Response:
    return await submit(
        request,
        session,
        DeviceCreate,
        lambda body: device_service.create(session, runtime, account, body),
        page=lambda form, status: _devices_page(request, session, runtime, account, form, status),
        done=lambda body, issued: _issued_page(
            request,
            session,
            runtime,
            account,
            issued,
            rotated=False,
            browser_key=body.public_key is not None,
        ),
        fields=("name", "public_key", "node_id"),
    )


async def _device_page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    device: Device,
    *,
    rename_form: Form | None = None,
    rotate_form: Form | None = None,
    dns_form: Form | None = None,
    status_code: int = 200,
) -> Response:
    servers = await _servers(session, runtime)
    section = runtime.policy.dns
    dns_choices = [("", "No filtering")] + [
        (",".join(c), " + ".join(section.filters[name].title for name in c))
        for c in section.offered
    ]
    status = await connection_service.device_status(runtime, account.id, device.id)
    plan = await subscription_service.access_plan(session, account.id)
    return render(
        request,
        "devices/detail.html",
        {
            "device": device,
            "status": status,
            "plan": plan,
            "servers": servers,
            "rename_form": rename_form or Form.empty(name=device.name),
            "rotate_form": rotate_form or Form.empty(),
            "dns_choices": dns_choices if section.filters else [],
            "dns_form": dns_form or Form.empty(filters=device.dns_filters),
        },
        status_code=status_code,
    )


async def _device_page_again(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    device_id: int,
    **forms: Any,
) -> Response:
    """The device's page read afresh: a refused change's savepoint expired the row it held."""
    device = await device_service.get(session, account, device_id)
    return await _device_page(request, session, runtime, account, device, **forms)


@router.get("/devices/{device_id}")
async def device_page(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    device = await device_service.get(session, account, device_id)
    return await _device_page(request, session, runtime, account, device)


@router.get("/devices/{device_id}/config")
async def download_config(
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
    node_id: NodeChoice = None,
) -> Response:
    """The device's config for one server; its PrivateKey line waits for the customer's key."""
    if node_id is None:
        recommended = _recommended(await _servers(session, runtime))
        if recommended is None:
            raise NoNodeAvailable()
        node_id = recommended.id
    config = await device_service.config(session, runtime, account, device_id, node_id)
    return Response(
        config.text,
        media_type="text/plain; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{config.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/devices/{device_id}/rename")
async def rename_device(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    await device_service.get(session, account, device_id)
    return await submit(
        request,
        session,
        DeviceUpdate,
        lambda body: device_service.rename(session, account, device_id, body),
        page=lambda form, status: _device_page_again(
            request, session, runtime, account, device_id, rename_form=form, status_code=status
        ),
        done=lambda body, _: redirect(
            request, f"/devices/{device_id}", flash=f"Renamed to {body.name}."
        ),
        fields=("name",),
    )


@router.post("/devices/{device_id}/dns-filters")
async def set_dns_filters(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    await device_service.get(session, account, device_id)

    def chosen(form: Form) -> dict[str, Any]:
        names = (form.raw("filters") or "").split(",")
        return {"filters": [name for name in names if name][:16]}

    return await submit(
        request,
        session,
        DeviceDnsFilters,
        lambda body: device_service.set_dns_filters(session, runtime, account, device_id, body),
        page=lambda form, status: _device_page_again(
            request, session, runtime, account, device_id, dns_form=form, status_code=status
        ),
        done=lambda _body, _: redirect(
            request,
            f"/devices/{device_id}",
            flash="DNS filters changed. Download the configuration again (or scan a new QR "
            "code): it names the resolver of your choice.",
        ),
        fields=("filters",),
        fixed=chosen,
    )


@router.post("/devices/{device_id}/rotate")
async def rotate_key(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    await device_service.get(session, account, device_id)
    return await submit(
        request,
        session,
        DeviceRotate,
        lambda body: device_service.rotate(session, runtime, account, device_id, body),
        page=lambda form, status: _device_page_again(
            request, session, runtime, account, device_id, rotate_form=form, status_code=status
        ),
        done=lambda body, issued: _issued_page(
            request,
            session,
            runtime,
            account,
            issued,
            rotated=True,
            browser_key=body.public_key is not None,
        ),
        fields=("public_key", "node_id"),
    )


@router.post("/devices/{device_id}/remove")
async def remove_device(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    device = await device_service.get(session, account, device_id)
    name = device.name
    await device_service.remove(session, runtime, account, device_id)
    return redirect(
        request, "/devices", flash=f"{name} is removed; its key stops working on every server."
    )
