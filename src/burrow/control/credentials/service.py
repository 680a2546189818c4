"""A device's credentials for protocols other than WireGuard: issue, rotate, revoke.

The secret is made by the server (256 bits), shown in the one answer that made it and then
forgotten; the row keeps a verifier, what a node needs to check a client's answer on its own
(``burrow.wire`` makes and checks OpenVPN's; a protocol registers its own in ``VERIFIERS``).
A username is unique within its protocol and a device has at most one credential per
protocol. Every change ends with ``desired_state_service.refresh_account``, so nodes learn it
with the next long poll; a revoked credential's connections are cut by the nodes.

Errors::

    BurrowError
    ├── UnknownProtocol (422)      the protocol takes no credentials here
    ├── InvalidUsername (422)
    ├── UsernameTaken (409)
    ├── CredentialExists (409)     the device already has credentials for the protocol
    └── CredentialNotFound (404)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.credentials.repository import CredentialRepository
from burrow.control.credentials.schemas import USERNAME_PATTERN, CredentialCreate
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import device as device_service
from burrow.control.errors import Conflict, InvalidInput, NotFound
from burrow.control.models import Account, DeviceCredential
from burrow.control.policy.schemas import PROTOCOL_NAMES
from burrow.control.runtime import Runtime
from burrow.wire import ikev2_verifier, openvpn_verifier

# Protocol -> how its verifier is made from the secret (IKEv2: the NT hash EAP-MSCHAPv2 needs).
VERIFIERS: dict[str, Callable[[str], str]] = {
    "openvpn": openvpn_verifier,
    "ikev2": ikev2_verifier,
}


class UnknownProtocol(InvalidInput):
    def __init__(self) -> None:
        names = ", ".join(sorted(VERIFIERS))
        super().__init__(
            f"Credentials can be made for these protocols: {names}. "
            "WireGuard needs none: it uses the device's key.",
            field="protocol",
        )


class InvalidUsername(InvalidInput):
    def __init__(self) -> None:
        super().__init__(
            "A username is 3 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit; or leave it out and one is made for you.",
            field="username",
        )


class UsernameTaken(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "This username is already in use; choose another one, or leave it out and one is "
            "made for you.",
            field="username",
        )


class CredentialExists(Conflict):
    def __init__(self, protocol: str) -> None:
        name = PROTOCOL_NAMES.get(protocol, protocol)
        super().__init__(
            f"This device already has {name} credentials; rotate them for a new password, or "
            "revoke them first.",
            field="protocol",
        )


class CredentialNotFound(NotFound):
    def __init__(self, protocol: str) -> None:
        name = PROTOCOL_NAMES.get(protocol, protocol)
        super().__init__(f"This device has no {name} credentials.")


@dataclass(frozen=True)
class IssuedCredential:
    credential: DeviceCredential
    password: str


def new_secret() -> str:
    """256 bits, URL-safe: easy to paste into any client's password field."""
    return secrets.token_urlsafe(32)


def new_username(device_id: int) -> str:
    return f"d{device_id}-{secrets.token_hex(4)}"


def _protocol(protocol: str) -> str:
    protocol = protocol.strip().lower()
    if protocol not in VERIFIERS:
        raise UnknownProtocol()
    return protocol


class CredentialService:
    async def list(
        self, session: AsyncSession, account: Account, device_id: int
    ) -> Sequence[DeviceCredential]:
        device = await device_service.get(session, account, device_id)
        return await CredentialRepository(session).list_for_device(device.id)

    async def issue(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        data: CredentialCreate,
    ) -> IssuedCredential:
        protocol = _protocol(data.protocol)
        if data.username is not None and not re.fullmatch(USERNAME_PATTERN, data.username):
            raise InvalidUsername()
        repository = CredentialRepository(session)
        device = await device_service.get(session, account, device_id, lock=True)
        if await repository.get(device.id, protocol) is not None:
            raise CredentialExists(protocol)
        username = data.username or new_username(device.id)
        if await repository.username_taken(protocol, username):
            raise UsernameTaken()
        password = new_secret()
        credential = DeviceCredential(
            device_id=device.id,
            protocol=protocol,
            username=username,
            verifier=VERIFIERS[protocol](password),
        )
        if not await repository.insert(credential):
            # A concurrent request won: for this device's protocol, or for the username.
            if await repository.get(device.id, protocol) is not None:
                raise CredentialExists(protocol)
            raise UsernameTaken()
        await desired_state_service.refresh_account(session, runtime, account.id)
        return IssuedCredential(credential, password)

    async def rotate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        protocol: str,
    ) -> IssuedCredential:
        """A new password for the same username; the old one stops working on every node."""
        protocol = _protocol(protocol)
        repository = CredentialRepository(session)
        device = await device_service.get(session, account, device_id, lock=True)
        credential = await repository.get(device.id, protocol)
        if credential is None:
            raise CredentialNotFound(protocol)
        password = new_secret()
        credential.verifier = VERIFIERS[protocol](password)
        await repository.flush()
        await desired_state_service.refresh_account(session, runtime, account.id)
        return IssuedCredential(credential, password)

    async def revoke(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        protocol: str,
    ) -> None:
        protocol = _protocol(protocol)
        device = await device_service.get(session, account, device_id, lock=True)
        if not await CredentialRepository(session).remove(device.id, protocol):
            raise CredentialNotFound(protocol)
        await desired_state_service.refresh_account(session, runtime, account.id)


credential = CredentialService()
