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
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

import segno
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import Actor, admin_audit, require_administrator
from burrow.control.config import Settings
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.repository import DeviceRepository
from burrow.control.devices.schemas import (
    DeviceCreate,
    DeviceDnsFilters,
    DeviceRotate,
    DeviceUpdate,
)
from burrow.control.errors import BurrowError, Conflict, Forbidden, InvalidInput, NotFound
from burrow.control.models import Account, AccountStatus, AddressHolding, Device, Node, utcnow
from burrow.control.policy.dns import client_dns
from burrow.control.policy.schemas import DnsSection, Policy
from burrow.control.runtime import Runtime
from burrow.control.subscriptions.service import subscription as subscription_service
from burrow.control.wg_keys import UnusableKey, canonical_public_key


class DeviceNotFound(NotFound):
    def __init__(self, message: str = "You have no device with this id.") -> None:
        super().__init__(message)


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


class UnknownDnsFilters(InvalidInput):
    def __init__(self, offered: list[str]) -> None:
        choices = "; ".join(offered) if offered else "none: this service offers no filters"
        super().__init__(
            f"This is not one of the DNS filter choices. The choices are: {choices} "
            "(or no filtering, an empty list).",
            field="dns_filters",
        )


class AddressPoolExhausted(BurrowError):
    status = 503
    title = "No tunnel addresses left"
    type_slug = "address-pool-exhausted"

    def __init__(self) -> None:
        super().__init__(
            "Every tunnel address of this service is taken, so no device can be added now. "
            "Please contact support."
        )


class QrNeedsPrivateKey(BurrowError):
    status = 410
    title = "No QR code without the private key"
    type_slug = "qr-needs-private-key"

    def __init__(self) -> None:
        super().__init__(
            "A QR code made now could not carry this device's private key (the server never "
            "keeps it), so no WireGuard app could import it. Scan the QR code shown when the "
            "device was added or its key was last renewed; or download the configuration file "
            "and put your private key in it; or renew the device's key without sending one, "
            "and the answer has a complete configuration with its QR code."
        )


class PortBlocksFull(Conflict):
    """Deterministic NAT: every server's shared address is divided into one block of ports per
    device, and every block is taken."""

    def __init__(self, blocks: int, contact: str) -> None:
        super().__init__(
            f"No device can be added right now: our servers give every device its own range of "
            f"ports on their shared address, and all {blocks} are in use. Remove a device you "
            f"no longer use, or write to {contact}."
        )


class AddressAllocationRace(Conflict):
    def __init__(self) -> None:
        super().__init__("Another device took the same tunnel address at the same moment; retry.")


# Index 0 is the pool's network address, 1 the nodes' own gateway inside the tunnel.
FIRST_DEVICE_INDEX = 2
# A lost race for an address waits for the winner's commit and tries the next: enough tries
# for twenty adds at the same moment.
ALLOCATION_ATTEMPTS = 32
KEEPALIVE_SECONDS = 25
# How long customers are told that a node's configurations changed.
CONFIG_NOTICE_DAYS = 90
QrKind = Literal["png", "svg"]
QR_MEDIA_TYPES: dict[QrKind, str] = {"png": "image/png", "svg": "image/svg+xml"}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_=+.-]+")
# Linux interface names (IFNAMSIZ - 1), which wg-quick derives from the file name.
FILENAME_STEM_MAX = 15
PRIVATE_KEY_PLACEHOLDER = (
    "# PrivateKey = <paste the private key you kept when you added this device, "
    "then remove the '# ' in front>"
)


@dataclass(frozen=True)
class AddressPool:
    """The fleet-wide tunnel pools; index i is the network address + i in both families."""

    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network
    # Kept at the pools' end for the DNS filter combinations' resolvers (``policy.dns``).
    reserved_at_end: int = 0

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
        last = min(self.ipv4.num_addresses - 2, self.ipv6.num_addresses - 1)
        return last - self.reserved_at_end

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

    @property
    def config_filename(self) -> str | None:
        if self.config is None or self.config_node is None:
            return None
        return config_filename(self.config_node, self.device)

    def config_qr(self, kind: QrKind) -> bytes | None:
        """The complete config as a QR code: only here, where it carries the private key."""
        return None if self.config is None else render_qr(self.config, kind)


@dataclass(frozen=True)
class ConfigNotice:
    """A node whose configurations, as customers downloaded them, went out of date."""

    node_name: str
    changed_at: datetime
    change: str  # nodes.service.CHANGE_ENDPOINT, CHANGE_KEY, CHANGE_OPENVPN or CHANGE_IKEV2

    @property
    def message(self) -> str:
        day = self.changed_at.strftime("%Y-%m-%d")
        # OpenVPN's and IKEv2's profiles carry the server's certificate authority (and IKEv2's
        # its host), not the device's key: only those profiles need downloading again.
        protocol = {"openvpn": "OpenVPN", "ikev2": "IKEv2"}.get(self.change)
        if protocol is not None:
            return (
                f"The {protocol} settings of server {self.node_name} changed on {day}: "
                f"download the {protocol} profile for {self.node_name} again on each device "
                "that uses it."
            )
        what = "server key" if self.change == "key" else "server address"
        return (
            f"The {what} of server {self.node_name} changed on {day}: download the "
            f"configuration for {self.node_name} again (and put your private key in it) on each "
            "device that uses it."
        )


@dataclass(frozen=True)
class DeviceConfig:
    filename: str
    text: str


def keeps_address_history(policy: Policy) -> bool:
    """Deterministic NAT: the history of which device held which tunnel address is kept."""
    return policy.network.nat == "deterministic" and policy.privacy.mode == "metered"


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


def device_port(settings: Settings, device: Device, node: Node) -> int:
    """The node's port that serves this device: its interface follows from its address."""
    return node.endpoint_port + device.address_index // settings.peers_per_interface


def _endpoint(node: Node, port: int) -> str:
    try:
        host = ipaddress.ip_address(node.endpoint_host)
    except ValueError:
        return f"{node.endpoint_host}:{port}"
    if host.version == 6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def filter_choice(section: DnsSection, names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as one of the offered combinations (in the policy's order); () for none."""
    wanted = set(names)
    if not wanted:
        return ()
    for combination in section.offered:
        if set(combination) == wanted:
            return combination
    raise UnknownDnsFilters([", ".join(c) for c in section.offered])


def device_dns(settings: Settings, section: DnsSection, device: Device) -> str:
    """The ``DNS =`` line's addresses: the resolver of the device's filter choice.

    Unfiltered it is the gateway of the configured pools (or ``client_dns`` where the
    operator set one); a filter choice no longer offered falls back to unfiltered.
    """
    names = [name for name in device.dns_filters.split(",") if name]
    mask = 0
    if names and all(name in section.filters for name in names):
        combination = tuple(names)
        if any(set(c) == set(combination) for c in section.offered):
            mask = section.mask(combination)
    if mask == 0 and settings.client_dns:
        return settings.client_dns
    return client_dns(settings.tunnel_ipv4_pool, settings.tunnel_ipv6_pool, mask)


def render_config(
    settings: Settings,
    device: Device,
    node: Node,
    private_key: str | None = None,
    *,
    dns: str | None = None,
) -> str:
    """The wg-quick config of ``device`` for ``node``.

    Without the private key (the server never keeps it) the ``PrivateKey`` line is a comment
    that tells the customer what to put there.
    """
    assert node.wg_public_key is not None
    if dns is None:
        dns = settings.client_dns or client_dns(
            settings.tunnel_ipv4_pool, settings.tunnel_ipv6_pool
        )
    key_line = f"PrivateKey = {private_key}" if private_key else PRIVATE_KEY_PLACEHOLDER
    lines = [
        f"# {device.name} on {node.name} ({node.city}, {node.country.upper()})",
        "[Interface]",
        key_line,
        f"Address = {device.ipv4}/32, {device.ipv6}/128",
        f"DNS = {dns}",
        f"MTU = {settings.tunnel_mtu}",
        "",
        "[Peer]",
        f"PublicKey = {node.wg_public_key}",
        f"Endpoint = {_endpoint(node, device_port(settings, device, node))}",
        "AllowedIPs = 0.0.0.0/0, ::/0",
        f"PersistentKeepalive = {KEEPALIVE_SECONDS}",
    ]
    return "\n".join(lines) + "\n"


def _filename_part(value: str) -> str:
    """``value`` in the characters wg-quick allows in an interface name: accents dropped,
    apostrophes left out, any other run of characters one hyphen."""
    plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    plain = plain.replace("'", "").replace("`", "")
    return _UNSAFE_FILENAME.sub("-", plain).strip("-.")


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def config_filename(node: Node, device: Device) -> str:
    """``<node>-<device>-<id>.conf``: wg-quick and every WireGuard app take the name before
    ``.conf`` as the tunnel's interface name, which Linux limits to 15 characters of
    ``[a-zA-Z0-9_=+.-]``. The device's id (base 36) keeps two devices of the same name apart
    on one node; the node and device names are shortened to fit around it."""
    tag = _base36(device.id)
    node_part = (_filename_part(node.name) or "vpn")[:5].rstrip("-.")
    room = FILENAME_STEM_MAX - len(node_part) - len(tag) - 2
    device_part = _filename_part(device.name)[: max(room, 0)].rstrip("-.")
    parts = [node_part, device_part, tag] if device_part else [node_part, tag]
    return "-".join(parts)[-FILENAME_STEM_MAX:].lstrip("-.") + ".conf"


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

    async def config_notices(
        self, session: AsyncSession, account: Account
    ) -> Sequence[ConfigNotice]:
        """Nodes whose address or key changed after this account's first device was added
        (within the last ``CONFIG_NOTICE_DAYS``): the configurations it has for them are out
        of date."""
        devices = await self.list(session, account)
        if not devices:
            return []
        since = max(
            min(d.created_at for d in devices), utcnow() - timedelta(days=CONFIG_NOTICE_DAYS)
        )
        nodes = await DeviceRepository(session).nodes_changed_since(since)
        return [
            ConfigNotice(n.name, n.config_changed_at, n.config_change or "endpoint")
            for n in nodes
            if n.config_changed_at is not None
        ]

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
        filters = filter_choice(runtime.policy.dns, data.dns_filters)

        private_key = None
        if public_key is None:
            private_key, public_key = new_key_pair()
        elif await repository.public_key_in_use(public_key):
            raise PublicKeyInUse()

        pool = AddressPool.from_settings(runtime.settings)
        pool = AddressPool(pool.ipv4, pool.ipv6, runtime.policy.dns.reserved_addresses)
        device = None
        for _attempt in range(ALLOCATION_ATTEMPTS):
            index = await self._free_address_index(
                repository, pool, lowest=keeps_address_history(runtime.policy)
            )
            blocks = runtime.policy.network.nat_devices_per_egress_ip
            if keeps_address_history(runtime.policy):
                # Each of a node's egress addresses holds its own blocks.
                blocks *= await repository.most_egress_ipv4()
            if keeps_address_history(runtime.policy) and index >= FIRST_DEVICE_INDEX + blocks:
                # Past the blocks every node would drop its traffic: refuse it here, plainly.
                raise PortBlocksFull(blocks, runtime.policy.provider.contact_email)
            ipv4, ipv6 = pool.addresses(index)
            candidate = Device(
                account_id=account.id,
                name=data.name,
                public_key=public_key,
                ipv4=ipv4,
                ipv6=ipv6,
                address_index=index,
                dns_filters=",".join(filters),
            )
            if await repository.insert(candidate):
                device = candidate
                break
            # A concurrent add won the race: for the key (then refuse) or the address (retry).
            if await repository.public_key_in_use(public_key):
                raise PublicKeyInUse()
        if device is None:
            raise AddressAllocationRace()
        if keeps_address_history(runtime.policy):
            await repository.open_holding(device, utcnow())

        await desired_state_service.refresh_account(session, runtime, account.id)
        return self._issued(runtime, device, private_key, node)

    async def set_dns_filters(
        self,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        data: DeviceDnsFilters,
    ) -> Device:
        """Choose the device's filters; its config then names that choice's resolver.

        Nothing changes on the nodes: every node answers every offered choice on its address.
        """
        device = await self.get(session, account, device_id)
        device.dns_filters = ",".join(filter_choice(runtime.policy.dns, data.filters))
        await DeviceRepository(session).flush()
        return device

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
        repository = DeviceRepository(session)
        # Closed even when the policy keeps no history now: an open row would outlive its
        # retention.
        await repository.close_holdings(device.id, utcnow())
        await repository.delete(device)
        await desired_state_service.refresh_account(session, runtime, account.id)

    async def remove_by(
        self,
        session: AsyncSession,
        runtime: Runtime,
        actor: Actor,
        account_id: int,
        device_id: int,
        reason: str,
    ) -> Device:
        """An operator removes a customer's device: its key stops working on every node."""
        require_administrator(actor)
        repository = DeviceRepository(session)
        device = await repository.get_for_account(account_id, device_id, lock=True)
        if device is None:
            raise DeviceNotFound(f"Account {account_id} has no device {device_id}.")
        await repository.delete(device)
        await desired_state_service.refresh_account(session, runtime, account_id)
        await admin_audit.record(
            session,
            actor,
            "device.remove",
            "account",
            account_id,
            reason,
            {"device_id": device_id},
        )
        return device

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
        return self._issued(runtime, device, private_key, node)

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
            text=render_config(
                runtime.settings,
                device,
                node,
                dns=device_dns(runtime.settings, runtime.policy.dns, device),
            ),
        )

    async def active_node(self, session: AsyncSession, node_id: int) -> Node:
        """A server ready for connections, for another domain's configs (IKEv2 profiles)."""
        node = await DeviceRepository(session).get_active_node(node_id)
        if node is None:
            raise NodeUnavailable(node_id)
        return node

    async def config_qr(self, session: AsyncSession, account: Account, device_id: int) -> NoReturn:
        """Refused: a QR code of a stored device can only carry a placeholder key."""
        await self.get(session, account, device_id)
        raise QrNeedsPrivateKey()

    # --- the history of tunnel addresses, for abuse complaints -------------------------------

    async def address_holders(
        self, session: AsyncSession, ipv4: str, at: datetime
    ) -> Sequence[AddressHolding]:
        """The devices (with their accounts) that held the tunnel address ``ipv4`` during the
        second ``at`` names, as the history says; empty when nothing held it or the history is
        gone. Complaints name whole seconds, so the whole second counts."""
        start = at.replace(microsecond=0)
        return await DeviceRepository(session).holdings_during(
            ipv4, start, start + timedelta(seconds=1)
        )

    async def address_history_of(
        self, session: AsyncSession, account: Account
    ) -> Sequence[AddressHolding]:
        """The account's own rows of the history, newest first (for its data export)."""
        return await DeviceRepository(session).holdings_of(account.id)

    async def purge_address_history(
        self, session: AsyncSession, runtime: Runtime, now: datetime | None = None
    ) -> int:
        """Delete what the policy no longer allows to keep; returns how many rows went.

        Deterministic NAT: holdings that ended longer ago than the retention. Otherwise every
        row (left from a time the policy kept them), since no other mode keeps any.
        """
        repository = DeviceRepository(session)
        if not keeps_address_history(runtime.policy):
            return await repository.delete_all_holdings()
        days = runtime.policy.privacy.address_history_retention_days or 0
        return await repository.delete_holdings_closed_before(
            (now or utcnow()) - timedelta(days=days)
        )

    async def count_beyond_index(self, session: AsyncSession, index: int) -> int:
        """Devices whose address index is ``index`` or more (past a node's NAT blocks)."""
        return await DeviceRepository(session).count_beyond_index(index)

    @staticmethod
    async def _config_node(repository: DeviceRepository, node_id: int | None) -> Node | None:
        if node_id is None:
            return await repository.recommended_node()
        node = await repository.get_active_node(node_id)
        if node is None:
            raise NodeUnavailable(node_id)
        return node

    @staticmethod
    async def _free_address_index(
        repository: DeviceRepository, pool: AddressPool, *, lowest: bool = False
    ) -> int:
        """The index after the highest in use; gaps are searched only at the pool's end.

        This keeps an add at 100,000 devices one index lookup, and a just-freed address
        does not pass straight to another customer. Under deterministic NAT (``lowest``) the
        lowest free index instead: each index is a port block, and a node holds only so many,
        so freed blocks are used again (the address history tells their holders apart).
        """
        if lowest:
            index = await repository.lowest_free_address_index(FIRST_DEVICE_INDEX, pool.last_index)
            if index is None:
                raise AddressPoolExhausted()
            return index
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
        runtime: Runtime, device: Device, private_key: str | None, node: Node | None
    ) -> IssuedDevice:
        if private_key is None:
            return IssuedDevice(device)
        settings = runtime.settings
        dns = device_dns(settings, runtime.policy.dns, device)
        config = render_config(settings, device, node, private_key, dns=dns) if node else None
        return IssuedDevice(device, private_key, config, node)


device = DeviceService()
