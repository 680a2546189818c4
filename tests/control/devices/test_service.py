"""The devices service: key checks, address allocation (gaps, exhaustion, races), rendering."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import CliOperator, NotAnAdministrator
from burrow.control.config import Settings
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.repository import DeviceRepository
from burrow.control.devices.schemas import DeviceCreate, DeviceRotate
from burrow.control.devices.service import (
    AddressPool,
    AddressPoolExhausted,
    ConfigNotice,
    DeviceNotFound,
    InvalidPublicKey,
    PublicKeyInUse,
    config_filename,
    new_key_pair,
    normalise_public_key,
    public_key_of,
    render_config,
)
from burrow.control.devices.service import device as device_service
from burrow.control.models import Account, Device, Node
from burrow.control.runtime import Runtime
from tests.support.factories import create_account, create_node, create_subscription

SMALL_V4 = "10.99.0.0/24"  # indices 2..254
SMALL_V6 = "fd42:99::/112"


def low_order_points() -> list[bytes]:
    """Every encoding of a point of order dividing 8 (as libsodium's blocklist lists them)."""
    points = [
        bytes(32),
        b"\x01" + bytes(31),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        b"\xec" + b"\xff" * 30 + b"\x7f",  # p - 1
        b"\xed" + b"\xff" * 30 + b"\x7f",  # p
        b"\xee" + b"\xff" * 30 + b"\x7f",  # p + 1
    ]
    return points + [p[:31] + bytes([p[31] | 0x80]) for p in points]


async def customer(session: AsyncSession, plan_code: str = "personal-monthly") -> Account:
    account = await create_account(session)
    await create_subscription(session, account, plan_code=plan_code)
    return account


def use_small_pool(runtime: Runtime) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"tunnel_ipv4_pool": SMALL_V4, "tunnel_ipv6_pool": SMALL_V6}
    )


async def seed_indices(session: AsyncSession, account: Account, indices: list[int]) -> None:
    """Devices holding the given address indices, inserted in one statement."""
    pool = AddressPool.from_settings_values(SMALL_V4, SMALL_V6)
    rows = []
    for index in indices:
        ipv4, ipv6 = pool.addresses(index)
        rows.append(
            {
                "account_id": account.id,
                "name": f"seed {index}",
                "public_key": new_key_pair()[1],
                "ipv4": ipv4,
                "ipv6": ipv6,
                "address_index": index,
            }
        )
    await session.execute(insert(Device), rows)


# --- keys -----------------------------------------------------------------------------------


def test_a_valid_key_is_kept() -> None:
    key = new_key_pair()[1]
    assert normalise_public_key(key) == key
    assert normalise_public_key(f"  {key}\n") == key


def test_a_non_canonical_spelling_is_normalised() -> None:
    key = new_key_pair()[1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    variant = key[:42] + alphabet[alphabet.index(key[42]) ^ 3] + "="
    assert variant != key
    assert normalise_public_key(variant) == key


@pytest.mark.parametrize("point", low_order_points())
def test_low_order_keys_are_refused(point: bytes) -> None:
    with pytest.raises(InvalidPublicKey):
        normalise_public_key(base64.b64encode(point).decode())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 44,
        "a" * 42 + "==",
        base64.b64encode(bytes(32)).decode().rstrip("="),
        "é" * 43 + "=",
        "\ud800" * 43 + "=",
    ],
)
def test_malformed_keys_are_refused(value: str) -> None:
    with pytest.raises(InvalidPublicKey) as caught:
        normalise_public_key(value)
    assert caught.value.field == "public_key"


def test_server_made_key_pairs_match() -> None:
    private, public = new_key_pair()
    assert public_key_of(private) == public
    assert len(private) == len(public) == 44
    assert new_key_pair()[0] != private


# --- allocation -----------------------------------------------------------------------------


def test_pool_bounds() -> None:
    pool = AddressPool.from_settings_values(SMALL_V4, SMALL_V6)
    assert pool.last_index == 254  # .255 is the IPv4 broadcast
    assert pool.addresses(2) == ("10.99.0.2", "fd42:99::2")
    assert pool.addresses(254) == ("10.99.0.254", "fd42:99::fe")
    wide = AddressPool.from_settings_values("10.64.0.0/10", "fd42:b0::/112")
    assert wide.last_index == 65535  # the smaller pool decides


async def test_the_highest_index_plus_one_is_used(session: AsyncSession, runtime: Runtime) -> None:
    use_small_pool(runtime)
    account = await customer(session)
    await seed_indices(session, account, [2, 3, 9])  # 4..8 are free
    issued = await device_service.create(session, runtime, account, DeviceCreate(name="next"))
    assert issued.device.address_index == 10
    assert issued.device.ipv4 == "10.99.0.10"
    assert issued.device.ipv6 == "fd42:99::a"


async def test_gaps_are_reused_at_the_end_of_the_pool(
    session: AsyncSession, runtime: Runtime
) -> None:
    use_small_pool(runtime)
    account = await customer(session)
    await seed_indices(session, account, [i for i in range(2, 255) if i not in (2, 7, 200)])
    got = []
    for name in ("a", "b", "c"):
        issued = await device_service.create(session, runtime, account, DeviceCreate(name=name))
        got.append(issued.device.address_index)
    assert got == [2, 7, 200]
    with pytest.raises(AddressPoolExhausted) as caught:
        await device_service.create(session, runtime, account, DeviceCreate(name="d"))
    assert caught.value.status == 503


async def test_a_lost_allocation_race_is_retried(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await customer(session)
    first = await device_service.create(session, runtime, account, DeviceCreate(name="first"))
    stale = [first.device.address_index - 1]  # what a concurrent request read a moment ago
    real = DeviceRepository.max_address_index

    async def racing(self: DeviceRepository) -> int | None:
        return stale.pop() if stale else await real(self)

    monkeypatch.setattr(DeviceRepository, "max_address_index", racing)
    second = await device_service.create(session, runtime, account, DeviceCreate(name="second"))
    assert second.device.address_index == first.device.address_index + 1
    assert not stale
    rows = (await session.execute(select(Device.name).order_by(Device.id))).scalars().all()
    assert rows == ["first", "second"]


async def test_a_lost_key_race_is_a_conflict(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await customer(session)
    key = new_key_pair()[1]
    await device_service.create(session, runtime, account, DeviceCreate(name="a", public_key=key))
    checks = iter([False])  # the first check misses the other request's insert
    real = DeviceRepository.public_key_in_use

    async def racing(self: DeviceRepository, public_key: str) -> bool:
        for answer in checks:
            return answer
        return await real(self, public_key)

    monkeypatch.setattr(DeviceRepository, "public_key_in_use", racing)
    with pytest.raises(PublicKeyInUse):
        await device_service.create(
            session, runtime, account, DeviceCreate(name="b", public_key=key)
        )
    # The session is still usable: the failed insert was rolled back to its savepoint.
    assert len(await device_service.list(session, account)) == 1


async def test_a_lost_key_race_on_rotate_is_a_conflict(
    session: AsyncSession, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await customer(session)
    a = await device_service.create(session, runtime, account, DeviceCreate(name="a"))
    b = await device_service.create(session, runtime, account, DeviceCreate(name="b"))

    async def never(self: DeviceRepository, public_key: str) -> bool:
        return False

    monkeypatch.setattr(DeviceRepository, "public_key_in_use", never)
    with pytest.raises(PublicKeyInUse):
        await device_service.rotate(
            session, runtime, account, a.device.id, DeviceRotate(public_key=b.device.public_key)
        )


async def test_tenancy_in_the_service(session: AsyncSession, runtime: Runtime) -> None:
    alice, bob = await customer(session), await customer(session)
    bobs = await device_service.create(session, runtime, bob, DeviceCreate(name="b"))
    with pytest.raises(DeviceNotFound):
        await device_service.get(session, alice, bobs.device.id)
    with pytest.raises(DeviceNotFound):
        await device_service.remove(session, runtime, alice, bobs.device.id)
    assert await device_service.list(session, alice) == []


# --- rendering ------------------------------------------------------------------------------


async def test_config_for_an_ipv6_endpoint(session: AsyncSession, runtime: Runtime) -> None:
    account = await customer(session)
    node = await create_node(session, endpoint_host="2001:DB8::5", name="fra-2")
    issued = await device_service.create(session, runtime, account, DeviceCreate(name="x"))
    text = render_config(runtime.settings, issued.device, node)
    assert "Endpoint = [2001:db8::5]:51820\n" in text
    v4 = await create_node(session, endpoint_host="192.0.2.9")
    assert "Endpoint = 192.0.2.9:51820\n" in render_config(runtime.settings, issued.device, v4)


async def test_a_config_names_the_port_of_the_interface_its_address_falls_on(
    session: AsyncSession, runtime: Runtime
) -> None:
    # Four devices per interface: pool indices 0-3 on the node's port, 4-7 on port + 1, ...
    settings = runtime.settings.model_copy(update={"peers_per_interface": 4})
    account = await customer(session)
    node = await create_node(session, endpoint_host="192.0.2.9", endpoint_port=51820)
    ports = []
    for n in range(5):
        issued = await device_service.create(session, runtime, account, DeviceCreate(name=f"{n}"))
        index = issued.device.address_index
        text = render_config(settings, issued.device, node)
        port = int(text.split("Endpoint = 192.0.2.9:", 1)[1].split("\n", 1)[0])
        assert port == 51820 + index // 4
        ports.append(port)
    assert len(set(ports)) == 2  # indices 2..6 span the first two interfaces
    # The node is told the same split.
    state = await desired_state_service.full_state(session, runtime, node)
    assert state.network.peers_per_interface == runtime.settings.peers_per_interface


def test_the_devices_per_interface_setting_is_a_power_of_two() -> None:
    with pytest.raises(ValidationError, match="power of two"):
        Settings(peers_per_interface=1000)


@pytest.mark.parametrize(
    ("node_name", "device_name", "device_id", "expected"),
    [
        ("ams-1", "Laptop", 7, "ams-1-Laptop-7.conf"),
        ("ams-1", 'a"b\\c/d e', 7, "ams-1-a-b-c-d-7.conf"),
        ("ams-1", "..", 7, "ams-1-7.conf"),
        ("ams-1", "Café ☕", 7, "ams-1-Cafe-7.conf"),
        ("ams-1", "Bob's phone", 36, "ams-1-Bobs-p-10.conf"),
        ("ams-1", "x" * 64, 2**31, "ams-1-xx-zik0zk.conf"),
        ("a-very-long-name", "Laptop", 7, "a-ver-Laptop-7.conf"),
        ("ams-1", "ÅÄÖ", 7, "ams-1-AAO-7.conf"),
    ],
)
def test_config_filenames_are_safe(
    node_name: str, device_name: str, device_id: int, expected: str
) -> None:
    node = Node(name=node_name)
    device = Device(name=device_name, id=device_id)
    assert config_filename(node, device) == expected
    stem = expected.removesuffix(".conf")
    assert len(stem) <= 15


async def test_an_operator_removes_a_device_of_the_account_named_only(
    session: AsyncSession, runtime: Runtime
) -> None:
    alice, bob = await customer(session), await customer(session)
    alices = await device_service.create(session, runtime, alice, DeviceCreate(name="a"))
    ops = CliOperator("ops")
    with pytest.raises(DeviceNotFound, match=f"Account {bob.id} has no device"):
        await device_service.remove_by(session, runtime, ops, bob.id, alices.device.id, "wrong")
    with pytest.raises(NotAnAdministrator):
        await device_service.remove_by(session, runtime, bob, alice.id, alices.device.id, "me")
    await device_service.remove_by(session, runtime, ops, alice.id, alices.device.id, "stolen")
    assert await device_service.list(session, alice) == []


def test_a_notice_names_what_customers_download_again() -> None:
    """A new CA or IKEv2 host dates only that protocol's profiles, which carry no private key;
    a new endpoint or key dates the WireGuard configuration."""
    day = datetime(2026, 12, 7, tzinfo=UTC)
    ikev2 = ConfigNotice("ams-1", day, "ikev2").message
    assert ikev2.startswith("The IKEv2 settings of server ams-1 changed on 2026-12-07")
    assert "download the IKEv2 profile for ams-1 again" in ikev2
    assert "private key" not in ikev2
    assert "OpenVPN profile" in ConfigNotice("ams-1", day, "openvpn").message
    assert "server key" in ConfigNotice("ams-1", day, "key").message
    assert "server address" in ConfigNotice("ams-1", day, "endpoint").message
