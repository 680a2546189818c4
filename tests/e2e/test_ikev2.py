"""IKEv2 end to end: real charon on two nodes run by the agent, which announces its IKEv2 host
and CA to the control plane, a strongSwan client (a charon of its own, with its own /run) in a
customer namespace configured from the ``.sswan`` profile the control plane serves, the strict
example policy (one IKEv2 connection per server per subscription).

One lab for the module; the scenarios run in order on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from burrow.node.drivers.ikev2 import IkeV2Error
from burrow.node.pki import load_pki
from tests.node.drivers.ikev2_lab import IkeV2Client, virtual_ips
from tests.node.netns import missing_requirements

from .lab import (
    ROOT,
    World,
    build_world,
    fetch,
    prepare_world,
    run_db,
    sha256,
    start_nodes,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/ipsec/charon").exists() or missing_requirements("unshare") is not None,
    reason="needs strongSwan's charon and unshare",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("ikev2")
    with build_world(tmp, customers=2) as world:
        world.ikev2 = True
        prepare_world(world, ROOT / "examples" / "policies" / "strict-no-logs.toml")
        world.start_control_plane()
        start_nodes(world)
        for index in range(len(world.nodes)):
            wait_for(lambda i=index: offered(world, i), 30, "the node to announce IKEv2")  # type: ignore[misc]
        yield world


def offered(world: World, node_index: int) -> bool:
    """Whether the node's agent told the control plane its IKEv2 host and CA."""
    from sqlalchemy import select

    from burrow.control.models import Node

    node = world.nodes[node_index]

    async def look(session: Any, _runtime: Any) -> bool:
        row = (await session.execute(select(Node).where(Node.id == node.node_id))).scalar_one()
        return bool(row.ikev2_host and row.ikev2_ca)

    return run_db(world.settings, look)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class Customer:
    """One customer namespace's strongSwan client, driven from the test's own event loops."""

    def __init__(self, world: World, index: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bwt-ikc-"))
        self.client = IkeV2Client(self.dir, world.customers[index].ns.name)
        self.world = world

    async def __aenter__(self) -> IkeV2Client:
        await self.client.start()
        assert self.client.charon.pid is not None
        self.world.lab.track(self.client.charon.pid)
        return self.client

    async def __aexit__(self, *_: object) -> None:
        await self.client.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def credentials(world: World, token: str, device_id: int) -> dict[str, Any]:
    assert world.api is not None
    body: dict[str, Any] = world.api.call(
        "POST",
        f"/api/v1/devices/{device_id}/credentials",
        token=token,
        expect=201,
        json={"protocol": "ikev2"},
    ).json()
    return body


def profile(world: World, token: str, device_id: int, node_index: int) -> dict[str, Any]:
    """The .sswan profile of this node for this device, as the customer downloads it, parsed
    as the app would. It names the host and CA the node's agent announced."""
    assert world.api is not None
    node = world.nodes[node_index]
    answer = world.api.call(
        "GET",
        f"/api/v1/devices/{device_id}/ikev2-profile",
        token=token,
        params={"node_id": node.node_id, "kind": "sswan"},
    )
    parsed: dict[str, Any] = json.loads(answer.content)
    assert parsed["remote"]["addr"] == node.host.ipv4
    ca = base64.b64decode(parsed["remote"]["cert"])
    assert x509.load_der_x509_certificate(ca) == x509.load_pem_x509_certificate(
        load_pki(node.state_dir).ca_certificate.encode()
    )
    return parsed


async def connect(client: IkeV2Client, sswan: dict[str, Any], password: str, name: str) -> Any:
    ca = x509.load_der_x509_certificate(base64.b64decode(sswan["remote"]["cert"]))
    return await client.connect(
        name=name,
        server_address=sswan["remote"]["addr"],
        server_identity=sswan["remote"]["id"],
        ca_pem=ca.public_bytes(Encoding.PEM).decode(),
        username=sswan["local"]["eap_id"],
        secret=password,
        ike_proposal=sswan["ike-proposal"],
        esp_proposal=sswan["esp-proposal"],
    )


def connection(world: World, token: str, device_id: int) -> dict[str, Any]:
    """What the API says of the device's connection: its state, and why when blocked."""
    assert world.api is not None
    devices = world.api.call("GET", "/api/v1/devices", token=token).json()
    return dict(next(d for d in devices if d["id"] == device_id)["connection"])


def connection_state(world: World, token: str, device_id: int) -> str:
    return str(connection(world, token, device_id)["state"])


def wait_loaded(world: World, node_index: int, username: str) -> None:
    """Until the node's charon has the device's connection (the long poll brought it)."""
    node = world.nodes[node_index]
    socket_dir = Path("/run/burrow-node") / node.interface / "ikev2"

    def loaded() -> bool:
        from burrow.node.drivers.ikev2 import CharonDriver

        driver = CharonDriver(socket_dir)

        async def conns() -> list[str]:
            try:
                found = await driver.call(lambda s: list(s.list_conns()))
            finally:
                driver._close_session()
            return [name for entry in found for name in entry]

        try:
            return f"d-{username}" in _run(conns())
        except (IkeV2Error, OSError):
            return False

    wait_for(loaded, 20, f"node {node_index} to load {username}")


def test_a_device_connects_from_its_profile_and_leaves_by_the_nodes_address(
    world: World,
) -> None:
    token = world.new_customer()
    node0 = world.nodes[0]
    device = world.add_device(token, node0.node_id, name="phone")
    issued = credentials(world, token, device["id"])
    wait_loaded(world, 0, issued["username"])
    sswan = profile(world, token, device["id"], 0)
    assert sswan["local"]["eap_id"] == issued["username"]

    async def scenario() -> None:
        async with Customer(world, 0) as client:
            sa = await connect(client, sswan, issued["password"], "ams")
            assert sorted(virtual_ips(sa)) == sorted([device["ipv4"], device["ipv6"]])
            customer = world.customers[0]
            before = len(world.web_clients())
            got = await asyncio.to_thread(fetch, customer, f"http://{world.inet.ipv4}/file", 20.0)
            assert got is not None
            assert sha256(got) == sha256(world.web_file)
            # The internet host saw only the node's egress address.
            seen = world.web_clients()[before:]
            assert seen
            assert set(seen) == {node0.host.ipv4}
            # The node's reports carry the IKEv2 connection: the customer sees it connected.
            await asyncio.to_thread(
                wait_for, lambda: connection_state(world, token, device["id"]) == "connected",
                15, "the IKEv2 connection to show on the devices list",
            )  # fmt: skip

    _run(scenario())


def windows_settings(world: World, token: str, device_id: int, node_index: int) -> dict[str, str]:
    """What the Windows settings the API serves tell the customer to type: the server address,
    the username, and the proposals (Set-VpnConnectionIPsecConfiguration's names)."""
    assert world.api is not None
    text = world.api.call(
        "GET",
        f"/api/v1/devices/{device_id}/ikev2-profile",
        token=token,
        params={"node_id": world.nodes[node_index].node_id, "kind": "windows"},
    ).text
    values = dict(re.findall(r"(?<= )-(\w+) '?([^' ]+)'?", text))
    (username,) = re.findall(r"Username: (\S+)", text)
    return {**values, "Username": username}


# Set-VpnConnectionIPsecConfiguration's names -> strongSwan's, for the client imitating Windows.
WINDOWS_TO_STRONGSWAN = {"GCMAES256": "aes256gcm16", "SHA384": "prfsha384", "ECP384": "ecp384"}


def test_windows_sends_its_address_as_identity_and_gets_the_devices_addresses(
    world: World,
) -> None:
    """Windows' built-in client, configured from the Windows settings: its own IP address as
    IKE identity, the username only inside EAP-MSCHAPv2."""
    token = world.new_customer()
    device = world.add_device(token, world.nodes[0].node_id, name="laptop")
    issued = credentials(world, token, device["id"])
    wait_loaded(world, 0, issued["username"])
    windows = windows_settings(world, token, device["id"], 0)
    assert windows["Username"] == issued["username"]
    ike = "-".join(
        WINDOWS_TO_STRONGSWAN[windows[key]]
        for key in ("EncryptionMethod", "IntegrityCheckMethod", "DHGroup")
    )
    customer = world.customers[0]

    async def scenario() -> None:
        async with Customer(world, 0) as client:
            sa = await client.connect(
                name="windows",
                server_address=windows["ServerAddress"],
                # Windows checks that the server's certificate names the address typed.
                server_identity=windows["ServerAddress"],
                ca_pem=load_pki(world.nodes[0].state_dir).ca_certificate,
                username=windows["Username"],
                secret=issued["password"],
                ike_proposal=ike,
                esp_proposal=WINDOWS_TO_STRONGSWAN[windows["CipherTransformConstants"]],
                identity=customer.ipv4,
            )
            assert sorted(virtual_ips(sa)) == sorted([device["ipv4"], device["ipv6"]])
            await asyncio.to_thread(
                wait_for, lambda: connection_state(world, token, device["id"]) == "connected",
                15, "the Windows connection to show on the devices list",
            )  # fmt: skip

    _run(scenario())


def test_one_ikev2_connection_per_server_per_subscription_and_revoke_ends_it(
    world: World,
) -> None:
    token = world.new_customer()
    node0 = world.nodes[0]
    first = world.add_device(token, node0.node_id, name="phone")
    second = world.add_device(token, node0.node_id, name="tablet")
    one = credentials(world, token, first["id"])
    two = credentials(world, token, second["id"])
    for username in (one["username"], two["username"]):
        wait_loaded(world, 0, username)
        wait_loaded(world, 1, username)

    async def scenario() -> None:
        async with Customer(world, 0) as phone, Customer(world, 1) as tablet:
            await connect(phone, profile(world, token, first["id"], 0), one["password"], "ams")
            # The same subscription's second IKEv2 connection on the same node is refused: the
            # node ends it at once, and the first one keeps working.
            with contextlib.suppress(IkeV2Error):
                await connect(
                    tablet, profile(world, token, second["id"], 0), two["password"], "ams"
                )
            deadline = time.monotonic() + 5
            while await tablet.sa("ams") is not None:
                assert time.monotonic() < deadline, "the second connection was not refused"
                await asyncio.sleep(0.1)
            assert await phone.sa("ams") is not None
            # The tablet's owner reads why, in the plan's words.
            await asyncio.to_thread(
                wait_for, lambda: connection_state(world, token, second["id"]) == "blocked",
                10, "the refused device to say why",
            )  # fmt: skip
            assert "per server" in connection(world, token, second["id"])["reason"]
            # On another node it works.
            sa = await connect(
                tablet, profile(world, token, second["id"], 1), two["password"], "fra"
            )
            assert sorted(virtual_ips(sa)) == sorted([second["ipv4"], second["ipv6"]])

            # Revoking the first device's credentials ends its SA within 5 seconds.
            assert world.api is not None
            started = time.monotonic()
            world.api.call(
                "DELETE", f"/api/v1/devices/{first['id']}/credentials/ikev2", token=token,
                expect=204,
            )  # fmt: skip
            while await phone.sa("ams") is not None:
                assert time.monotonic() - started < 5.0, "the revoked device's SA lives on"
                await asyncio.sleep(0.05)
            assert await tablet.sa("fra") is not None
            # With the first one gone, the second device may use this node: the refusal above
            # was the per-server limit, not its credentials. (One tunnel at a time on the
            # client: a second full tunnel would carry the first one's IKE packets.)
            await tablet.disconnect("fra")
            # The node said the revoked device's session ended: its lease is free at once.
            await asyncio.to_thread(
                wait_for, lambda: connection_state(world, token, first["id"]) != "connected",
                5, "the revoked device's lease to end",
            )  # fmt: skip
            await connect(tablet, profile(world, token, second["id"], 0), two["password"], "ams2")
            await asyncio.sleep(1.5)
            assert await tablet.sa("ams2") is not None

    _run(scenario())


def test_with_the_control_plane_down_loaded_devices_keep_connecting(world: World) -> None:
    token = world.new_customer()
    device = world.add_device(token, world.nodes[0].node_id, name="laptop")
    issued = credentials(world, token, device["id"])
    wait_loaded(world, 0, issued["username"])
    sswan = profile(world, token, device["id"], 0)
    world.stop_control_plane()
    try:

        async def scenario() -> None:
            async with Customer(world, 1) as client:
                sa = await connect(client, sswan, issued["password"], "offline")
                assert sorted(virtual_ips(sa)) == sorted([device["ipv4"], device["ipv6"]])
                got = await asyncio.to_thread(
                    fetch, world.customers[1], f"http://{world.inet.ipv4}/file", 20.0
                )
                assert got is not None
                assert sha256(got) == sha256(world.web_file)

        _run(scenario())
    finally:
        world.start_control_plane()
