"""The devices API under /api/v1/devices: a customer's own devices and their configs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response, status

from burrow.control.connections.service import IDLE, DeviceStatus
from burrow.control.connections.service import connection as connection_service
from burrow.control.deps import CurrentAccount, RuntimeDep, SessionDep
from burrow.control.devices.schemas import (
    DeviceConnection,
    DeviceCreate,
    DeviceDnsFilters,
    DeviceIssued,
    DeviceRead,
    DeviceRotate,
    DeviceUpdate,
)
from burrow.control.devices.service import IssuedDevice
from burrow.control.devices.service import device as device_service
from burrow.control.models import Device
from burrow.control.params import MAX_ID
from burrow.control.problems import PROBLEM_JSON, PROBLEM_SCHEMA, problem_body, problem_responses

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[int, Path(ge=1, le=MAX_ID, description="The device's id.")]
NodeId = Annotated[
    int, Query(ge=1, le=MAX_ID, description="The server to connect to (see the server list).")
]

# Answers that carry a private key or a config must not be kept by any cache.
NO_STORE = {"Cache-Control": "no-store"}


def _issued(issued: IssuedDevice) -> DeviceIssued:
    return DeviceIssued.model_validate(issued.device).model_copy(
        update={
            "private_key": issued.private_key,
            "config": issued.config,
            "config_node_id": issued.config_node.id if issued.config_node else None,
            "config_filename": issued.config_filename,
            "config_qr_svg": qr.decode() if (qr := issued.config_qr("svg")) else None,
        }
    )


def _read(device: Device, status: DeviceStatus) -> DeviceRead:
    connection = DeviceConnection(
        state=status.state, reason=status.reason, node_name=status.node_name
    )
    return DeviceRead.model_validate(device).model_copy(update={"connection": connection})


@router.get(
    "",
    summary="List your devices",
    description="Each with its connection state now: connected, blocked (over a limit of "
    "your plan, with the reason) or idle.",
    response_model=list[DeviceRead],
    responses=problem_responses(401),
)
async def list_devices(
    session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> list[DeviceRead]:
    devices = await device_service.list(session, account)
    statuses = await connection_service.device_statuses(runtime, account.id)
    return [_read(d, statuses.get(d.id, IDLE)) for d in devices]


@router.post(
    "",
    summary="Add a device",
    description="Send the device's WireGuard public key, or leave it out: then the server makes "
    "a key pair and returns the private key (and a ready config) in this answer only.",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceIssued,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def add_device(
    data: DeviceCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
    response: Response,
) -> DeviceIssued:
    issued = await device_service.create(session, runtime, account, data)
    response.headers.update(NO_STORE)
    return _issued(issued)


@router.get(
    "/{device_id}",
    summary="Show a device",
    response_model=DeviceRead,
    responses=problem_responses(401, 404, 422),
)
async def get_device(
    device_id: DeviceId, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> DeviceRead:
    device = await device_service.get(session, account, device_id)
    return _read(device, await connection_service.device_status(runtime, account.id, device.id))


@router.patch(
    "/{device_id}",
    summary="Rename a device",
    response_model=DeviceRead,
    responses=problem_responses(401, 404, 422),
)
async def rename_device(
    device_id: DeviceId,
    data: DeviceUpdate,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> DeviceRead:
    device = await device_service.rename(session, account, device_id, data)
    return _read(device, await connection_service.device_status(runtime, account.id, device.id))


@router.put(
    "/{device_id}/dns-filters",
    summary="Choose the device's DNS filters",
    description="The device's config (and QR code) then names the resolver address of this "
    "choice; download it again and replace the old one. An empty list: no filtering.",
    response_model=DeviceRead,
    responses=problem_responses(401, 404, 422),
)
async def set_dns_filters(
    device_id: DeviceId,
    data: DeviceDnsFilters,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> DeviceRead:
    device = await device_service.set_dns_filters(session, runtime, account, device_id, data)
    return _read(device, await connection_service.device_status(runtime, account.id, device.id))


@router.delete(
    "/{device_id}",
    summary="Remove a device",
    description="The device's key leaves every server within seconds.",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def remove_device(
    device_id: DeviceId, session: SessionDep, runtime: RuntimeDep, account: CurrentAccount
) -> Response:
    await device_service.remove(session, runtime, account, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{device_id}/rotate",
    summary="Give a device a new key",
    description="The old key stops working. Send the new public key, or leave it out: then the "
    "server makes a key pair and returns the private key in this answer only.",
    response_model=DeviceIssued,
    responses=problem_responses(401, 404, 409, 422),
)
async def rotate_device_key(
    device_id: DeviceId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
    response: Response,
    data: Annotated[DeviceRotate | None, Body()] = None,
) -> DeviceIssued:
    issued = await device_service.rotate(
        session, runtime, account, device_id, data or DeviceRotate()
    )
    response.headers.update(NO_STORE)
    return _issued(issued)


@router.get(
    "/{device_id}/config",
    summary="Download the device's WireGuard config for a server",
    description="A wg-quick config. The server never keeps private keys, so the PrivateKey "
    "line is a comment: put the private key you kept there.",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 422),
    },
)
async def download_config(
    device_id: DeviceId,
    node_id: NodeId,
    session: SessionDep,
    runtime: RuntimeDep,
    account: CurrentAccount,
) -> Response:
    config = await device_service.config(session, runtime, account, device_id, node_id)
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="{config.filename}"'}
    return Response(config.text, media_type="text/plain; charset=utf-8", headers=headers)


QR_GONE: dict[int | str, dict[str, Any]] = {
    410: {
        "description": "Always: a QR code made now could not carry the private key. The QR "
        "code comes with the answer that adds a device or renews its key (config_qr_svg).",
        "content": {
            PROBLEM_JSON: {
                "schema": PROBLEM_SCHEMA,
                "example": problem_body(410, "Gone", "A QR code made now has no private key."),
            }
        },
    }
}


async def _qr(device_id: int, session: SessionDep, account: CurrentAccount) -> Response:
    await device_service.config_qr(session, account, device_id)


@router.get(
    "/{device_id}/config.png",
    summary="Gone: QR codes come with the private key only",
    description="Answers 410: the server never keeps a private key, so a QR code made now "
    "would hold a placeholder no app can import. Adding a device or renewing its key without "
    "a public key returns the complete config and its QR code (config_qr_svg).",
    response_class=Response,
    responses={**QR_GONE, **problem_responses(401, 404, 422)},
)
async def config_qr_png(
    device_id: DeviceId,
    node_id: NodeId,
    session: SessionDep,
    account: CurrentAccount,
) -> Response:
    return await _qr(device_id, session, account)


@router.get(
    "/{device_id}/config.svg",
    summary="Gone: QR codes come with the private key only",
    description="Answers 410, as the PNG form does.",
    response_class=Response,
    responses={**QR_GONE, **problem_responses(401, 404, 422)},
)
async def config_qr_svg(
    device_id: DeviceId,
    node_id: NodeId,
    session: SessionDep,
    account: CurrentAccount,
) -> Response:
    return await _qr(device_id, session, account)
