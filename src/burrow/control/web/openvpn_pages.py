"""A device's OpenVPN in the panel: its credentials (made, rotated, revoked) and the .ovpn
profile for each server that offers OpenVPN. The password is shown once, on the page that
made it, never stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.credentials.service import credential as credential_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.nodes.schemas import ServerRead
from burrow.control.nodes.service import node as node_service
from burrow.control.params import MAX_ID
from burrow.control.runtime import Runtime
from burrow.control.web.auth import WebAccount
from burrow.control.web.device_credentials import CredentialPages
from burrow.control.web.routing import page_router

router = page_router()

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID)]
NodeId = Annotated[int, Path(ge=1, le=MAX_ID)]
OPENVPN = "openvpn"


async def _servers(session: AsyncSession, runtime: Runtime) -> list[ServerRead]:
    return [s for s in await node_service.server_list(session, runtime) if OPENVPN in s.protocols]


pages = CredentialPages(
    protocol=OPENVPN,
    template="devices/openvpn.html",
    servers=_servers,
    revoked="OpenVPN credentials revoked; their connections are cut on every server.",
)


@router.get("/devices/{device_id}/openvpn")
async def openvpn_page(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.show(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/openvpn")
async def make_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.make(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/openvpn/rotate")
async def rotate_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.rotate(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/openvpn/revoke")
async def revoke_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.revoke(request, session, runtime, account, device_id)


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
