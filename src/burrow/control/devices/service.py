"""Devices: a customer's WireGuard peers, their keys, tunnel addresses and client configs.

Only public keys are stored. When the server makes a key pair, the private key leaves in the
one answer that created it and is then forgotten. Each device holds one address index, which
gives it the same IPv4 and IPv6 address on every node. Every change that alters what nodes
serve ends with ``desired_state_service.refresh_account``.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import segno
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.config import Settings
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.repository import DeviceRepository
from burrow.control.devices.schemas import DeviceCreate, DeviceRotate, DeviceUpdate
from burrow.control.errors import BurrowError, Conflict, Forbidden, InvalidInput, NotFound
from burrow.control.models import Account, AccountStatus, Device, Node
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.wg_keys import UnusableKey, canonical_public_key


class DeviceNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("You have no device with this id.")


class NodeUnavailable(NotFound):
    def __init__(self, node_id: int) -> None:
        super().__init__(
            f"There is no server with id {node_id} that is ready for connections; "
            "pick one from the server list."
        )


class NoNodeAvailable(Conflict):
    def __init__(self) -> None:
        super().__init__("No server is ready for connections yet; try again later.")


class InvalidPublicKey(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, field="public_key")


class PublicKeyInUse(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "This public key is already in use; make a new key pair for this device "
            "(or leave the key out and the server makes one).",
            field="public_key",
        )


class NoVpnAccess(Forbidden):
    def __init__(self) -> None:
        super().__init__("You need an active subscription or trial to add a device.")


class AccountNotActive(Forbidden):
    def __init__(self, status: str) -> None:
        super().__init__(f"Your account is {status}; it cannot add devices. Contact support.")


class DeviceLimitReached(Conflict):
    title = "Device limit reached"
    type_slug = "device-limit-reached"

    def __init__(self, limit: int, owner: str) -> None:
        noun = "device" if limit == 1 else "devices"
        super().__init__(f"{owner} allows {limit} {noun}; remove one first.", limit=limit)


class AddressPoolExhausted(BurrowError):
    status = 503
    title = "No tunnel addresses left"
    type_slug = "address-pool-exhausted"

    def __init__(self) -> None:
        super().__init__(
            "Every tunnel address of this service is taken, so no device can be added now. "
            "Please contact support."
        )


class AddressAllocationRace(Conflict):
    def __init__(self) -> None:
        super().__init__("Another device took the same tunnel address at the same moment; retry.")


# Index 0 is the pool's network address, 1 the nodes' own gateway inside the tunnel.
FIRST_DEVICE_INDEX = 2
KEEPALIVE_SECONDS = 25
QrKind = Literal["png", "svg"]
QR_MEDIA_TYPES: dict[QrKind, str] = {"png": "image/png", "svg": "image/svg+xml"}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_=+.-]+")
PRIVATE_KEY_PLACEHOLDER = (
    "# PrivateKey = <paste the private key you kept when you added this device, "
    "then remove the '# ' in front>"
)


@dataclass(frozen=True)
class AddressPool:
    """The fleet-wide tunnel pools; index i is the network address + i in both families."""

    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPool:
        return cls.from_settings_values(settings.tunnel_ipv4_pool, settings.tunnel_ipv6_pool)

    @classmethod
    def from_settings_values(cls, ipv4_pool: str, ipv6_pool: str) -> AddressPool:
        v4 = ipaddress.ip_network(ipv4_pool)
        v6 = ipaddress.ip_network(ipv6_pool)
        assert isinstance(v4, ipaddress.IPv4Network)
        assert isinstance(v6, ipaddress.IPv6Network)
        return cls(v4, v6)

    @property
    def last_index(self) -> int:
        # The IPv4 broadcast address stays unused; IPv6 has no broadcast.
        return min(self.ipv4.num_addresses - 2, self.ipv6.num_addresses - 1)

    def addresses(self, index: int) -> tuple[str, str]:
        assert FIRST_DEVICE_INDEX <= index <= self.last_index
        return str(self.ipv4.network_address + index), str(self.ipv6.network_address + index)


@dataclass(frozen=True)
class IssuedDevice:
    """A device just added or re-keyed; ``private_key`` only when the server made the key."""

    device: Device
    private_key: str | None = None
    config: str | None = None
    config_node: Node | None = None


@dataclass(frozen=True)
class DeviceConfig:
    filename: str
    text: str


def normalise_public_key(value: str) -> str:
    """The canonical base64 of a valid, usable X25519 public key, or InvalidPublicKey."""
    try:
        return canonical_public_key(value)
    except UnusableKey as exc:
        raise InvalidPublicKey(str(exc)) from None


def new_key_pair() -> tuple[str, str]:
    """(private, public), both 44 characters of base64, as `wg genkey | wg pubkey` would."""
    private = X25519PrivateKey.generate()
    private_raw = private.private_bytes_raw()
    public_raw = private.public_key().public_bytes_raw()
    return base64.b64encode(private_raw).decode(), base64.b64encode(public_raw).decode()


def public_key_of(private_key: str) -> str:
    try:
        raw = base64.b64decode(private_key, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("not a base64 private key") from None
    public = X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
    return base64.b64encode(public).decode()


def _endpoint(node: Node) -> str:
    try:
        host = ipaddress.ip_address(node.endpoint_host)
    except ValueError:
        return f"{node.endpoint_host}:{node.endpoint_port}"
    if host.version == 6:
        return f"[{host}]:{node.endpoint_port}"
    return f"{host}:{node.endpoint_port}"


def render_config(
    settings: Settings, device: Device, node: Node, private_key: str | None = None
) -> str:
    """The wg-quick config of ``device`` for ``node``.

    Without the private key (the server never keeps it) the ``PrivateKey`` line is a comment
    that tells the customer what to put there.
    """
    assert node.wg_public_key is not None
    key_line = f"PrivateKey = {private_key}" if private_key else PRIVATE_KEY_PLACEHOLDER
    lines = [
        f"# {device.name} on {node.name} ({node.city}, {node.country.upper()})",
        "[Interface]",
        key_line,
        f"Address = {device.ipv4}/32, {device.ipv6}/128",
        f"DNS = {settings.client_dns}",
        f"MTU = {settings.tunnel_mtu}",
        "",
        "[Peer]",
        f"PublicKey = {node.wg_public_key}",
        f"Endpoint = {_endpoint(node)}",
        "AllowedIPs = 0.0.0.0/0, ::/0",
        f"PersistentKeepalive = {KEEPALIVE_SECONDS}",
    ]
    return "\n".join(lines) + "\n"


def config_filename(node: Node, device: Device) -> str:
    """``<node>-<device>.conf`` with only characters every WireGuard app accepts."""

    def clean(value: str) -> str:
        return _UNSAFE_FILENAME.sub("-", value).strip("-.") or "x"

    return f"{clean(node.name)[:40]}-{clean(device.name)[:40]}.conf"


def render_qr(text: str, kind: QrKind) -> bytes:
    """The config as a QR code the WireGuard apps scan.

    Level M, raised by segno when that fits in the same symbol size; a full config is far
    below the capacity of the largest symbol at that level.
    """
    qr = segno.make_qr(text, error="m", boost_error=True)
    out = io.BytesIO()
    if kind == "png":
        qr.save(out, kind="png", scale=6, border=4)
    else:
        qr.save(out, kind="svg", scale=6, border=4, xmldecl=True, title="WireGuard config")
    return out.getvalue()


class DeviceService:
    async def list(self, session: AsyncSession, account: Account) -> Sequence[Device]:
        return await DeviceRepository(session).list_for_account(account.id)

    async def get(
        self, session: AsyncSession, account: Account, device_id: int, *, lock: bool = False
    ) -> Device:
        """``lock`` before changing it, so a rename never lands on a device being removed."""
        device = await DeviceRepository(session).get_for_account(account.id, device_id, lock=lock)
        if device is None:
            raise DeviceNotFound()
        return device

    async def create(
        self, session: AsyncSession, runtime: Runtime, account: Account, data: DeviceCreate
    ) -> IssuedDevice:
        repository = DeviceRepository(session)
        public_key = normalise_public_key(data.public_key) if data.public_key is not None else None
        # Counted under the account's lock, so that adds at the same moment take turns.
        await repository.lock_account(account)
        if account.status != AccountStatus.active:
            raise AccountNotActive(account.status.value)
        plan = await subscription_service.access_plan(session, account.id)
        if plan is None:
            raise NoVpnAccess()
        count = await repository.count_for_account(account.id)
        if plan.device_limit is not None and count >= plan.device_limit:
            raise DeviceLimitReached(plan.device_limit, f"Your plan {plan.name}")
        cap = runtime.settings.max_devices_per_account
        if count >= cap:
            raise DeviceLimitReached(cap, "One account")
        # A config for a server that does not exist is better refused before the device is.
        node = await self._config_node(repository, data.node_id) if public_key is None else None

        private_key = None
        if public_key is None:
            private_key, public_key = new_key_pair()
        elif await repository.public_key_in_use(public_key):
            raise PublicKeyInUse()

        pool = AddressPool.from_settings(runtime.settings)
        device = None
        for _attempt in range(2):
            index = await self._free_address_index(repository, pool)
            ipv4, ipv6 = pool.addresses(index)
            candidate = Device(
                account_id=account.id,
                name=data.name,
                public_key=public_key,
                ipv4=ipv4,
                ipv6=ipv6,
                address_index=index,
            )
            if await repository.insert(candidate):
                device = candidate
                break
            # A concurrent add won the race: for the key (then refuse) or the address (retry).
            if await repository.public_key_in_use(public_key):
                raise PublicKeyInUse()
        if device is None:
            raise AddressAllocationRace()

        await desired_state_service.refresh_account(session, runtime, account.id)
        return self._issued(runtime.settings, device, private_key, node)

    async def rename(
        self, session: AsyncSession, account: Account, device_id: int, data: DeviceUpdate
    ) -> Device:
        device = await self.get(session, account, device_id, lock=True)
        device.name = data.name
        await DeviceRepository(session).flush()
        return device

    async def remove(
        self, session: AsyncSession, runtime: Runtime, account: Account, device_id: int
    ) -> None:
        device = await self.get(session, account, device_id, lock=True)
        await DeviceRepository(session).delete(device)
        await desired_state_service.refresh_account(session, runtime, account.id)

    async def rotate(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        data: DeviceRotate,
    ) -> IssuedDevice:
        """Give the device a new key; the old key stops working once nodes converge."""
        repository = DeviceRepository(session)
        device = await self.get(session, account, device_id, lock=True)
        node = None
        private_key = None
        if data.public_key is None:
            node = await self._config_node(repository, data.node_id)
            private_key, public_key = new_key_pair()
        else:
            public_key = normalise_public_key(data.public_key)
            if public_key == device.public_key:
                raise PublicKeyInUse()
            if await repository.public_key_in_use(public_key):
                raise PublicKeyInUse()
        if not await repository.set_public_key(device, public_key):
            raise PublicKeyInUse()  # a concurrent add took the same key a moment ago
        await desired_state_service.refresh_account(session, runtime, account.id)
        return self._issued(runtime.settings, device, private_key, node)

    async def config(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        node_id: int,
    ) -> DeviceConfig:
        """The device's config for one node, with a placeholder for the private key."""
        device = await self.get(session, account, device_id)
        node = await DeviceRepository(session).get_active_node(node_id)
        if node is None:
            raise NodeUnavailable(node_id)
        return DeviceConfig(
            filename=config_filename(node, device),
            text=render_config(runtime.settings, device, node),
        )

    async def config_qr(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        node_id: int,
        kind: QrKind,
    ) -> bytes:
        config = await self.config(session, runtime, account, device_id, node_id)
        return render_qr(config.text, kind)

    @staticmethod
    async def _config_node(repository: DeviceRepository, node_id: int | None) -> Node | None:
        if node_id is None:
            return await repository.recommended_node()
        node = await repository.get_active_node(node_id)
        if node is None:
            raise NodeUnavailable(node_id)
        return node

    @staticmethod
    async def _free_address_index(repository: DeviceRepository, pool: AddressPool) -> int:
        """The index after the highest in use; gaps are searched only at the pool's end.

        This keeps an add at 100,000 devices one index lookup, and a just-freed address
        does not pass straight to another customer.
        """
        highest = await repository.max_address_index()
        if highest is None:
            return FIRST_DEVICE_INDEX
        if highest < pool.last_index:
            return max(highest + 1, FIRST_DEVICE_INDEX)
        index = await repository.lowest_free_address_index(FIRST_DEVICE_INDEX, pool.last_index)
        if index is None:
            raise AddressPoolExhausted()
        return index

    @staticmethod
    def _issued(
        settings: Settings, device: Device, private_key: str | None, node: Node | None
    ) -> IssuedDevice:
        if private_key is None:
            return IssuedDevice(device)
        config = render_config(settings, device, node, private_key) if node else None
        return IssuedDevice(device, private_key, config, node)


device = DeviceService()
