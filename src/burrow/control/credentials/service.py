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
    ├── CredentialNotFound (404)
    ├── NoOpenVpnHere (409)        the server does not (yet) offer OpenVPN
    └── NoIkeV2Here (409)          the server does not (yet) offer IKEv2 (profiles, its CA)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.credentials.repository import CredentialRepository
from burrow.control.credentials.schemas import USERNAME_PATTERN, CredentialCreate
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.ikev2_profiles import (
    Ikev2ProfileValues,
    render_mobileconfig,
    render_sswan,
    render_windows_settings,
)
from burrow.control.devices.service import NodeUnavailable
from burrow.control.devices.service import device as device_service
from burrow.control.errors import Conflict, InvalidInput, NotFound
from burrow.control.models import Account, Device, DeviceCredential, Node
from burrow.control.nodes.service import serves_ikev2
from burrow.control.policy.schemas import PROTOCOL_NAMES
from burrow.control.runtime import Runtime
from burrow.wire import ikev2_verifier, openvpn_verifier

# Protocol -> how its verifier is made from the secret (IKEv2: the NT hash EAP-MSCHAPv2 needs).
IKEV2 = "ikev2"
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


class NoOpenVpnHere(Conflict):
    def __init__(self, node_name: str) -> None:
        super().__init__(
            f"The server {node_name} does not offer OpenVPN yet; pick another one from the "
            "server list, or use WireGuard there."
        )


@dataclass(frozen=True)
class OpenVpnConfig:
    filename: str
    text: str


# What every .ovpn asks of the connection: nothing weaker is accepted by either end.
DATA_CIPHERS = "AES-256-GCM:CHACHA20-POLY1305"


def ovpn_filename(node: Node, device: Device) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{node.name}-{device.name}").strip("-.")[:48]
    return f"{stem or 'burrow'}-{device.id}.ovpn"


def render_ovpn(node: Node, device: Device, username: str | None) -> str:
    """A client profile the official OpenVPN apps import unchanged (CA and tls-crypt inline)."""
    assert node.openvpn_ca is not None
    assert node.openvpn_tls_crypt is not None
    remotes = []
    for transport in node.openvpn_transports.split():
        proto, _, port = transport.partition(":")
        remotes.append(f"remote {node.endpoint_host} {port} {proto}")
    safe_name = "".join(c for c in device.name if c.isprintable())
    lines = [
        f"# OpenVPN profile of the device {safe_name!r} for the server {node.name}.",
        f"# Sign in as {username}" + " with the password you were shown once."
        if username
        else "# Make OpenVPN credentials for this device to sign in.",
        "client",
        "dev tun",
        "nobind",
        *remotes,
        "server-poll-timeout 10",
        "resolv-retry infinite",
        "persist-key",
        "persist-tun",
        "remote-cert-tls server",
        "auth-user-pass",
        "auth-nocache",
        "tls-version-min 1.2",
        f"data-ciphers {DATA_CIPHERS}",
        "verb 3",
        "<ca>",
        node.openvpn_ca.strip(),
        "</ca>",
        "<tls-crypt>",
        node.openvpn_tls_crypt.strip(),
        "</tls-crypt>",
    ]
    return "\n".join(lines) + "\n"


class NoIkeV2Here(Conflict):
    def __init__(self, node_name: str) -> None:
        super().__init__(
            f"The server {node_name} does not offer IKEv2, so there is no IKEv2 profile for "
            "it; pick another server from the list, or use WireGuard there."
        )


# IKEv2 profile kinds: (file extension, media type, renderer).
IKEV2_PROFILES: dict[str, tuple[str, str, Callable[[Ikev2ProfileValues], bytes]]] = {
    "mobileconfig": ("mobileconfig", "application/x-apple-aspen-config", render_mobileconfig),
    "sswan": ("sswan", "application/vnd.strongswan.profile", render_sswan),
    "windows": (
        "ps1",
        "text/plain; charset=utf-8",
        lambda values: render_windows_settings(values).encode(),
    ),
}


@dataclass(frozen=True)
class Ikev2Profile:
    filename: str
    media_type: str
    body: bytes


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

    async def of_account(
        self, session: AsyncSession, account_id: int
    ) -> Sequence[DeviceCredential]:
        """Every device's protocol credentials (for the account's data export)."""
        return await CredentialRepository(session).of_account(account_id)

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

    async def openvpn_config(
        self, session: AsyncSession, account: Account, device_id: int, node_id: int
    ) -> OpenVpnConfig:
        """The device's .ovpn for one server (the password is never in it)."""
        device = await device_service.get(session, account, device_id)
        repository = CredentialRepository(session)
        node = await repository.get_active_node(node_id)
        if node is None:
            raise NodeUnavailable(node_id)
        if not node.openvpn_ca or not node.openvpn_tls_crypt or not node.openvpn_transports:
            raise NoOpenVpnHere(node.name)
        credential = await repository.get(device.id, "openvpn")
        return OpenVpnConfig(
            filename=ovpn_filename(node, device),
            text=render_ovpn(node, device, credential.username if credential else None),
        )

    async def ikev2_ca(
        self, session: AsyncSession, account: Account, device_id: int, node_id: int
    ) -> Ikev2Profile:
        """One server's CA certificate (DER), the file the Windows settings import."""
        await device_service.get(session, account, device_id)
        node = await device_service.active_node(session, node_id)
        if not serves_ikev2(node) or node.ikev2_ca is None:
            raise NoIkeV2Here(node.name)
        certificate = x509.load_pem_x509_certificate(node.ikev2_ca.encode())
        return Ikev2Profile(
            filename=ikev2_ca_filename(node.name),
            media_type="application/pkix-cert",
            body=certificate.public_bytes(Encoding.DER),
        )

    async def ikev2_profile(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        node_id: int,
        kind: str,
    ) -> Ikev2Profile:
        """The device's IKEv2 profile for one server: its CA, host and the device's username.

        Never the password: it was shown once, and the phone or laptop asks for it.
        """
        extension, media_type, render = IKEV2_PROFILES[kind]
        device = await device_service.get(session, account, device_id)
        credential = await CredentialRepository(session).get(device.id, IKEV2)
        if credential is None:
            raise CredentialNotFound(IKEV2)
        node = await device_service.active_node(session, node_id)
        # What the node announced (nodes.service.offer_ikev2): the host its server certificate
        # names, which need not be the WireGuard endpoint, and the CA that certificate chains to.
        if not serves_ikev2(node) or node.ikev2_host is None or node.ikev2_ca is None:
            raise NoIkeV2Here(node.name)
        values = Ikev2ProfileValues(
            provider=runtime.policy.provider.name,
            node_name=node.name,
            host=node.ikev2_host,
            ca_pem=node.ikev2_ca,
            username=credential.username,
            device_name=device.name,
        )
        return Ikev2Profile(
            filename=f"{_file_part(node.name)}-{_file_part(device.name)}-ikev2.{extension}",
            media_type=media_type,
            body=render(values),
        )


def ikev2_ca_filename(node_name: str) -> str:
    """The CA's file name, as the Windows settings' ``Import-Certificate`` line names it."""
    return f"{node_name}-ca.cer"


def _file_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-.")[:24] or "vpn"


credential = CredentialService()
