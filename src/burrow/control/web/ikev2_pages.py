"""A device's IKEv2 in the panel: its EAP-MSCHAPv2 sign-in (made, rotated, revoked; the secret
shown once) and, per server, the Apple .mobileconfig, the strongSwan app's .sswan and the
settings for Windows' own client. No profile holds the secret: the device asks for it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.credentials.service import IKEV2, Ikev2Profile
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
ProfileKind = Literal["mobileconfig", "sswan", "windows"]


async def _servers(session: AsyncSession, runtime: Runtime) -> list[ServerRead]:
    """The servers that announced IKEv2: only for them can a profile be made."""
    return [s for s in await node_service.server_list(session, runtime) if IKEV2 in s.protocols]


pages = CredentialPages(
    protocol=IKEV2,
    template="devices/ikev2.html",
    servers=_servers,
    revoked="IKEv2 credentials revoked; their connections are cut on every server.",
)


@router.get("/devices/{device_id}/ikev2")
async def ikev2_page(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.show(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/ikev2")
async def make_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.make(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/ikev2/rotate")
async def rotate_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.rotate(request, session, runtime, account, device_id)


@router.post("/devices/{device_id}/ikev2/revoke")
async def revoke_credentials(
    request: Request,
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return await pages.revoke(request, session, runtime, account, device_id)


def _attachment(profile: Ikev2Profile) -> Response:
    return Response(
        profile.body,
        media_type=profile.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{profile.filename}"',
            "Cache-Control": "no-store",
        },
    )


# Before the profiles' route, which would take "ca.cer" for a kind.
@router.get("/devices/{device_id}/ikev2/{node_id}/ca.cer")
async def download_ca(
    device_id: DeviceId, node_id: NodeId, session: SessionDep, account: WebAccount
) -> Response:
    return _attachment(await credential_service.ikev2_ca(session, account, device_id, node_id))


@router.get("/devices/{device_id}/ikev2/{node_id}/{kind}")
async def download_profile(
    device_id: DeviceId,
    node_id: NodeId,
    kind: ProfileKind,
    session: SessionDep,
    runtime: RuntimeDep,
    account: WebAccount,
) -> Response:
    return _attachment(
        await credential_service.ikev2_profile(session, runtime, account, device_id, node_id, kind)
    )
