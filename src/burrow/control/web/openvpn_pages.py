"""A device's OpenVPN in the panel: its credentials (made, rotated, revoked) and the .ovpn
profile for each server that offers OpenVPN. The password is shown once, on the page that
made it, never stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response

from burrow.control.credentials.schemas import CredentialCreate
from burrow.control.credentials.service import IssuedCredential
from burrow.control.credentials.service import credential as credential_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.devices.service import device as device_service
from burrow.control.models import Account, Device
from burrow.control.nodes.service import node as node_service
from burrow.control.params import MAX_ID
from burrow.control.runtime import Runtime
from burrow.control.web.auth import WebAccount
from burrow.control.web.forms import Form, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID)]
NodeId = Annotated[int, Path(ge=1, le=MAX_ID)]
OPENVPN = "openvpn"


async def _page(
    request: Request,
    session: SessionDep,
    runtime: Runtime,
    account: Account,
    device: Device,
    *,
    issued: IssuedCredential | None = None,
    form: Form | None = None,
    status_code: int = 200,
) -> Response:
    credentials = await credential_service.list(session, account, device.id)
    credential = next((c for c in credentials if c.protocol == OPENVPN), None)
    servers = [
        s for s in await node_service.server_list(session, runtime) if OPENVPN in s.protocols
    ]
    response = render(
        request,
        "devices/openvpn.html",
        {
            "device": device,
            "credential": credential,
            "issued": issued,
            "servers": servers,
            "form": form or Form.empty(),
        },
        status_code=status_code,
    )
    if issued is not None:
        response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/devices/{device_id}/openvpn")
async def openvpn_page(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    device = await device_service.get(session, account, device_id)
    return await _page(request, session, runtime, account, device)


@router.post("/devices/{device_id}/openvpn")
async def make_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    await device_service.get(session, account, device_id)

    async def page(
        form: Form | None, status: int, issued: IssuedCredential | None = None
    ) -> Response:
        # Read afresh: a refused action's savepoint expires the rows it touched.
        device = await device_service.get(session, account, device_id)
        return await _page(
            request, session, runtime, account, device, form=form, issued=issued, status_code=status
        )

    return await submit(
        request,
        session,
        CredentialCreate,
        lambda body: credential_service.issue(session, runtime, account, device_id, body),
        page=page,
        done=lambda _body, issued: page(None, 200, issued),
        fields=("username",),
        fixed=lambda _form: {"protocol": OPENVPN},
    )


@router.post("/devices/{device_id}/openvpn/rotate")
async def rotate_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    device = await device_service.get(session, account, device_id)
    issued = await credential_service.rotate(session, runtime, account, device_id, OPENVPN)
    return await _page(request, session, runtime, account, device, issued=issued)


@router.post("/devices/{device_id}/openvpn/revoke")
async def revoke_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    await credential_service.revoke(session, runtime, account, device_id, OPENVPN)
    return redirect(
        request,
        f"/devices/{device_id}/openvpn",
        flash="OpenVPN credentials revoked; their connections are cut on every server.",
    )


@router.get("/devices/{device_id}/openvpn/{node_id}.ovpn")
async def download_profile(
    device_id: DeviceId, node_id: NodeId, session: SessionDep, account: WebAccount
) -> Response:
    config = await credential_service.openvpn_config(session, account, device_id, node_id)
    return Response(
        config.text,
        media_type="application/x-openvpn-profile",
        headers={
            "Content-Disposition": f'attachment; filename="{config.filename}"',
            "Cache-Control": "no-store",
        },
    )
