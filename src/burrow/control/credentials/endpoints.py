"""A device's credentials for other protocols, under /api/v1/devices/{id}/credentials."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status

from burrow.control.credentials.schemas import (
    CredentialCreate,
    CredentialIssued,
    CredentialRead,
)
from burrow.control.credentials.service import IssuedCredential
from burrow.control.credentials.service import credential as credential_service
from burrow.control.deps import CurrentAccount, RuntimeDep, SessionDep
from burrow.control.params import MAX_ID
from burrow.control.problems import problem_responses

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The device's id.")]
Protocol = Annotated[
    str, Path(max_length=32, description="The protocol of the credentials, e.g. openvpn.")
]

NodeId = Annotated[
    int, Query(ge=1, le=MAX_ID, description="The server to connect to (see the server list).")
]

# Answers that carry a password must not be kept by any cache.
NO_STORE = {"Cache-Control": "no-store"}


def _issued(issued: IssuedCredential) -> CredentialIssued:
    read = CredentialRead.model_validate(issued.credential)
    return CredentialIssued(**read.model_dump(), password=issued.password)


@router.get(
    "/{device_id}/credentials",
    summary="List a device's credentials for other protocols",
    description="Protocols and usernames; passwords are shown only when made.",
    response_model=list[CredentialRead],
    responses=problem_responses(401, 404, 422),
)
async def list_credentials(
    device_id: DeviceId, session: SessionDep, account: CurrentAccount
) -> list[CredentialRead]:
    found = await credential_service.list(session, account, device_id)
    return [CredentialRead.model_validate(c) for c in found]


@router.post(
    "/{device_id}/credentials",
    summary="Make credentials for another protocol (OpenVPN)",
    description="The server makes the password and returns it in this answer only; keep it.",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialIssued,
    responses=problem_responses(401, 404, 409, 422),
)
async def issue_credential(
    device_id: DeviceId,
    data: CredentialCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
    response: Response,
) -> CredentialIssued:
    issued = await credential_service.issue(session, runtime, account, device_id, data)
    response.headers.update(NO_STORE)
    return _issued(issued)


@router.post(
    "/{device_id}/credentials/{protocol}/rotate",
    summary="Give a device's credentials a new password",
    description="The old password stops working on every server; the username stays.",
    response_model=CredentialIssued,
    responses=problem_responses(401, 404, 422),
)
async def rotate_credential(
    device_id: DeviceId,
    protocol: Protocol,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
    response: Response,
) -> CredentialIssued:
    issued = await credential_service.rotate(session, runtime, account, device_id, protocol)
    response.headers.update(NO_STORE)
    return _issued(issued)


@router.delete(
    "/{device_id}/credentials/{protocol}",
    summary="Revoke a device's credentials for a protocol",
    description="Its connections over that protocol are cut on every server within seconds.",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def revoke_credential(
    device_id: DeviceId,
    protocol: Protocol,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> Response:
    await credential_service.revoke(session, runtime, account, device_id, protocol)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{device_id}/openvpn-config",
    summary="Download the device's OpenVPN profile (.ovpn) for a server",
    description="For OpenVPN Connect, openvpn 2.6 or Tunnelblick, unchanged: the server's CA "
    "and tls-crypt key inline, UDP first and TCP 443 for networks that block the rest. Sign in "
    "with the device's OpenVPN username and password.",
    response_class=Response,
    responses={
        200: {"content": {"application/x-openvpn-profile": {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 409, 422),
    },
)
async def download_openvpn_config(
    device_id: DeviceId, node_id: NodeId, session: SessionDep, account: CurrentAccount
) -> Response:
    config = await credential_service.openvpn_config(session, account, device_id, node_id)
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{config.filename}"'}
    return Response(config.text, media_type="application/x-openvpn-profile", headers=headers)


ProfileKind = Literal["mobileconfig", "sswan", "windows"]


@router.get(
    "/{device_id}/ikev2-profile",
    summary="Download the device's IKEv2 profile for one server",
    description="kind=mobileconfig: an Apple configuration profile (iOS, macOS); kind=sswan: "
    "a profile for the strongSwan app (Android); kind=windows: PowerShell lines for Windows' "
    "own client. Each names the server's IKEv2 host, its certificate authority and strong "
    "proposals. The password is not in it: the device asks for it. Only for servers whose "
    "`protocols` in the server list include ikev2 (409 for the others).",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 409, 422),
    },
)
async def ikev2_profile(
    device_id: DeviceId,
    node_id: Annotated[int, Query(ge=1, le=MAX_ID, description="The server to connect to.")],
    kind: Annotated[ProfileKind, Query(description="mobileconfig, sswan or windows.")],
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> Response:
    profile = await credential_service.ikev2_profile(
        session, runtime, account, device_id, node_id, kind
    )
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{profile.filename}"'}
    return Response(profile.body, media_type=profile.media_type, headers=headers)
