"""The devices API through the real app: keys, limits, addresses, tenancy and configs."""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import new_key_pair, public_key_of, render_qr
from burrow.control.models import AccountStatus, NodeStatus, SubscriptionStatus
from burrow.control.runtime import Runtime
from tests.control.devices.conftest import Customer, MakeCustomer, MakeNode
from tests.support.factories import create_subscription
from tests.support.wg_quick import wg_quick_strip

URL = "/api/v1/devices"
ORDER_8_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def pubkey() -> str:
    return new_key_pair()[1]


def wg_pubkey(private_key: str) -> str:
    """The public key WireGuard's own tool derives from a private key."""
    done = subprocess.run(
        ["wg", "pubkey"], input=private_key, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


async def add(
    client: httpx.AsyncClient, customer: Customer, name: str = "Laptop", **body: Any
) -> httpx.Response:
    return await client.post(URL, json={"name": name, **body}, headers=customer.headers)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


@pytest.fixture
def refreshes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The account ids desired_state.refresh_account was called with."""
    calls: list[int] = []
    original = desired_state_service.refresh_account

    async def recording(session: Any, runtime: Runtime, account_id: int) -> None:
        calls.append(account_id)
        await original(session, runtime, account_id)

    monkeypatch.setattr(desired_state_service, "refresh_account", recording)
    return calls


# --- adding ---------------------------------------------------------------------------------


async def test_add_with_own_key(
    client: httpx.AsyncClient, make_customer: MakeCustomer, refreshes: list[int]
) -> None:
    customer = await make_customer()
    key = pubkey()
    response = await add(client, customer, public_key=key)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["public_key"] == key
    assert body["name"] == "Laptop"
    assert body["private_key"] is None
    assert body["config"] is None
    assert response.headers["cache-control"] == "no-store"
    assert refreshes == [customer.account.id]

    listed = await client.get(URL, headers=customer.headers)
    assert [d["id"] for d in listed.json()] == [body["id"]]
    assert "private_key" not in listed.json()[0]


async def test_server_made_key_is_returned_once(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    customer = await make_customer()
    node = await make_node(capacity=5000)
    await make_node(capacity=10)  # the larger node is the recommended one
    response = await add(client, customer, name="Phone")
    assert response.status_code == 201, response.text
    body = response.json()
    private_key = body["private_key"]
    assert len(base64.b64decode(private_key, validate=True)) == 32
    assert public_key_of(private_key) == body["public_key"]
    if shutil.which("wg"):
        assert wg_pubkey(private_key) == body["public_key"]

    # The ready config carries the private key, for the recommended node.
    assert body["config_node_id"] == node.id
    assert f"PrivateKey = {private_key}\n" in body["config"]
    assert f"PublicKey = {node.wg_public_key}\n" in body["config"]

    # Never again: not in GET, not in the list, not in a downloaded config.
    again = await client.get(f"{URL}/{body['id']}", headers=customer.headers)
    assert again.status_code == 200
    assert private_key not in again.text
    assert "private_key" not in again.json()
    listed = await client.get(URL, headers=customer.headers)
    assert private_key not in listed.text
    config = await client.get(
        f"{URL}/{body['id']}/config", params={"node_id": node.id}, headers=customer.headers
    )
    assert config.status_code == 200
    assert private_key not in config.text


async def test_server_made_key_without_nodes_has_no_config(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    customer = await make_customer()
    await make_node(status=NodeStatus.pending, wg_public_key=None)
    body = (await add(client, customer)).json()
    assert body["private_key"]
    assert body["config"] is None
    assert body["config_node_id"] is None


async def test_server_made_key_for_a_chosen_node(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    customer = await make_customer()
    await make_node(capacity=9000)
    chosen = await make_node(capacity=1, endpoint_host="2001:db8::7")
    body = (await add(client, customer, node_id=chosen.id)).json()
    assert body["config_node_id"] == chosen.id
    assert "Endpoint = [2001:db8::7]:51820\n" in body["config"]

    retired = await make_node(status=NodeStatus.retired)
    response = await add(client, customer, name="Other", node_id=retired.id)
    assert_problem(response, 404)
    assert len((await client.get(URL, headers=customer.headers)).json()) == 1


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("abc", "44 characters"),
        (base64.b64encode(bytes(31)).decode(), "44 characters"),
        (base64.b64encode(bytes(33)).decode(), "44 characters"),
        ("!" * 43 + "=", "44 characters"),
        (base64.b64encode(bytes(32)).decode(), "all-zero"),
        (base64.b64encode(ORDER_8_POINT).decode(), "low-order"),
        (base64.b64encode(b"\x01" + bytes(31)).decode(), "low-order"),
    ],
)
async def test_invalid_key_is_refused(
    client: httpx.AsyncClient, make_customer: MakeCustomer, key: str, words: str
) -> None:
    customer = await make_customer()
    body = assert_problem(await add(client, customer, public_key=key), 422)
    assert body["field"] == "public_key"
    assert words in body["detail"]
    assert (await client.get(URL, headers=customer.headers)).json() == []


async def test_duplicate_key_is_refused_without_saying_whose(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    alice, bob = await make_customer(), await make_customer()
    key = pubkey()
    assert (await add(client, alice, public_key=key)).status_code == 201
    body = assert_problem(await add(client, bob, public_key=key), 409)
    assert alice.account.email not in body["detail"]
    assert "already in use" in body["detail"]
    # Also the same 32 bytes written with different (non-canonical) padding bits.
    raw = base64.b64decode(key)
    last = key[42]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    other = alphabet[alphabet.index(last) ^ 1]
    variant = key[:42] + other + "="
    assert variant != key
    assert base64.b64decode(variant) == raw
    assert_problem(await add(client, bob, public_key=variant), 409)
    # And again by the owner.
    assert_problem(await add(client, alice, name="Again", public_key=key), 409)


async def test_device_limit_of_the_business_plan(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    customer = await make_customer(plan_code="business-monthly")
    assert (await add(client, customer)).status_code == 201
    body = assert_problem(await add(client, customer, name="Second"), 409)
    assert body["detail"] == "Your plan Business, 1 month allows 1 device; remove one first."
    assert body["title"] == "Device limit reached"
    assert len((await client.get(URL, headers=customer.headers)).json()) == 1


async def test_removing_a_device_frees_a_place(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    customer = await make_customer(plan_code="business-monthly")
    first = (await add(client, customer)).json()
    deleted = await client.delete(f"{URL}/{first['id']}", headers=customer.headers)
    assert deleted.status_code == 204
    assert (await add(client, customer, name="Second")).status_code == 201


async def test_the_safety_cap_applies_to_unlimited_plans(
    client: httpx.AsyncClient, make_customer: MakeCustomer, runtime: Runtime
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"max_devices_per_account": 2})
    customer = await make_customer()
    for name in ("a", "b"):
        assert (await add(client, customer, name=name)).status_code == 201
    body = assert_problem(await add(client, customer, name="c"), 409)
    assert body["detail"] == "One account allows 2 devices; remove one first."


async def test_no_subscription_no_device(
    client: httpx.AsyncClient, make_customer: MakeCustomer, refreshes: list[int]
) -> None:
    customer = await make_customer(plan_code=None)
    body = assert_problem(await add(client, customer, public_key=pubkey()), 403)
    assert body["detail"] == "You need an active subscription or trial to add a device."
    assert refreshes == []


async def test_an_expired_subscription_gives_no_device(
    client: httpx.AsyncClient, make_customer: MakeCustomer, runtime: Runtime
) -> None:
    customer = await make_customer(plan_code=None)
    async with runtime.sessionmaker() as session, session.begin():
        await create_subscription(session, customer.account, status=SubscriptionStatus.expired)
    assert_problem(await add(client, customer), 403)


async def test_a_suspended_account_cannot_add_devices(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    customer = await make_customer(status=AccountStatus.suspended)
    response = await add(client, customer)
    assert response.status_code in (401, 403)
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 65},
        {"name": "two\nlines"},
        {"name": "tab\there"},
        {"name": "nul\x00"},
        {"name": 5},
        {"name": "ok", "public_key": "k" * 101},
        {"name": "ok", "node_id": 0},
        {"name": "ok", "node_id": 2**63},
        {"name": "ok", "owner": 1},
    ],
)
async def test_malformed_add_requests(
    client: httpx.AsyncClient, make_customer: MakeCustomer, body: dict[str, Any]
) -> None:
    customer = await make_customer()
    response = await client.post(URL, json=body, headers=customer.headers)
    assert_problem(response, 422)


async def test_the_name_is_trimmed(client: httpx.AsyncClient, make_customer: MakeCustomer) -> None:
    customer = await make_customer()
    body = (await add(client, customer, name="  Kitchen tablet ü  ")).json()
    assert body["name"] == "Kitchen tablet ü"


async def test_devices_need_a_signed_in_customer(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(URL), 401)
    assert_problem(await client.post(URL, json={"name": "x"}), 401)
    assert_problem(await client.get(URL, headers={"Authorization": "Bearer nope"}), 401)


# --- addresses ------------------------------------------------------------------------------


async def test_addresses_are_unique_and_stable(
    client: httpx.AsyncClient, make_customer: MakeCustomer, runtime: Runtime
) -> None:
    alice, bob = await make_customer(), await make_customer()
    made = [(await add(client, c, name=f"d{i}")).json() for i, c in enumerate([alice, bob, alice])]
    v4 = ipaddress.ip_network(runtime.settings.tunnel_ipv4_pool)
    v6 = ipaddress.ip_network(runtime.settings.tunnel_ipv6_pool)
    # Index 0 is the network, 1 the nodes' gateway: devices start at 2.
    assert [d["ipv4"] for d in made] == [str(v4.network_address + i) for i in (2, 3, 4)]
    assert [d["ipv6"] for d in made] == [str(v6.network_address + i) for i in (2, 3, 4)]

    first = made[0]
    await client.patch(f"{URL}/{first['id']}", json={"name": "new"}, headers=alice.headers)
    await client.post(f"{URL}/{first['id']}/rotate", headers=alice.headers)
    again = (await client.get(f"{URL}/{first['id']}", headers=alice.headers)).json()
    assert (again["ipv4"], again["ipv6"]) == (first["ipv4"], first["ipv6"])

    # A freed address is not handed straight to the next device.
    await client.delete(f"{URL}/{made[1]['id']}", headers=bob.headers)
    newest = (await add(client, bob, name="d3")).json()
    assert newest["ipv4"] == str(v4.network_address + 5)
    all_v4 = [d["ipv4"] for d in (made[0], made[2], newest)]
    assert len(set(all_v4)) == 3


# --- reading and changing -------------------------------------------------------------------


async def test_list_shows_only_own_devices(
    client: httpx.AsyncClient, make_customer: MakeCustomer
) -> None:
    alice, bob = await make_customer(), await make_customer()
    a1 = (await add(client, alice, name="a1")).json()
    a2 = (await add(client, alice, name="a2")).json()
    b1 = (await add(client, bob, name="b1")).json()
    alices = (await client.get(URL, headers=alice.headers)).json()
    assert [d["id"] for d in alices] == [a1["id"], a2["id"]]
    bobs = (await client.get(URL, headers=bob.headers)).json()
    assert [d["id"] for d in bobs] == [b1["id"]]


async def test_rename(client: httpx.AsyncClient, make_customer: MakeCustomer) -> None:
    customer = await make_customer()
    device = (await add(client, customer)).json()
    response = await client.patch(
        f"{URL}/{device['id']}", json={"name": "Work laptop"}, headers=customer.headers
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Work laptop"
    shown = await client.get(f"{URL}/{device['id']}", headers=customer.headers)
    assert shown.json()["name"] == "Work laptop"
    bad = await client.patch(
        f"{URL}/{device['id']}", json={"name": "x", "public_key": "y"}, headers=customer.headers
    )
    assert_problem(bad, 422)


async def test_remove(
    client: httpx.AsyncClient, make_customer: MakeCustomer, refreshes: list[int]
) -> None:
    customer = await make_customer()
    device = (await add(client, customer)).json()
    response = await client.delete(f"{URL}/{device['id']}", headers=customer.headers)
    assert response.status_code == 204
    assert refreshes == [customer.account.id, customer.account.id]
    assert_problem(await client.get(f"{URL}/{device['id']}", headers=customer.headers), 404)
    assert_problem(await client.delete(f"{URL}/{device['id']}", headers=customer.headers), 404)


async def test_rotate_with_a_server_made_key(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    refreshes: list[int],
) -> None:
    customer = await make_customer()
    node = await make_node()
    old_key = pubkey()
    device = (await add(client, customer, public_key=old_key)).json()
    response = await client.post(f"{URL}/{device['id']}/rotate", headers=customer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["public_key"] != old_key
    assert public_key_of(body["private_key"]) == body["public_key"]
    assert body["config_node_id"] == node.id
    assert f"PrivateKey = {body['private_key']}\n" in body["config"]
    assert refreshes == [customer.account.id, customer.account.id]
    shown = (await client.get(f"{URL}/{device['id']}", headers=customer.headers)).json()
    assert shown["public_key"] == body["public_key"]
    # The old key is no device's any more: another device may use it.
    assert (await add(client, customer, name="reuse", public_key=old_key)).status_code == 201


async def test_rotate_with_own_key(client: httpx.AsyncClient, make_customer: MakeCustomer) -> None:
    customer = await make_customer()
    device = (await add(client, customer, public_key=pubkey())).json()
    other = (await add(client, customer, name="other", public_key=pubkey())).json()
    new_key = pubkey()
    url = f"{URL}/{device['id']}/rotate"
    response = await client.post(url, json={"public_key": new_key}, headers=customer.headers)
    assert response.status_code == 200
    assert response.json()["public_key"] == new_key
    assert response.json()["private_key"] is None

    same = await client.post(url, json={"public_key": new_key}, headers=customer.headers)
    assert_problem(same, 409)
    taken = await client.post(
        url, json={"public_key": other["public_key"]}, headers=customer.headers
    )
    assert_problem(taken, 409)
    zero = base64.b64encode(bytes(32)).decode()
    assert_problem(await client.post(url, json={"public_key": zero}, headers=customer.headers), 422)
    shown = (await client.get(f"{URL}/{device['id']}", headers=customer.headers)).json()
    assert shown["public_key"] == new_key


async def test_customer_a_cannot_touch_customer_bs_device(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    refreshes: list[int],
) -> None:
    alice, bob = await make_customer(), await make_customer()
    node = await make_node()
    bobs = (await add(client, bob, name="Bob's phone", public_key=pubkey())).json()
    url = f"{URL}/{bobs['id']}"
    refreshes.clear()

    node_param = {"node_id": node.id}
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", url, {}),
        ("PATCH", url, {"json": {"name": "mine"}}),
        ("DELETE", url, {}),
        ("POST", f"{url}/rotate", {}),
        ("POST", f"{url}/rotate", {"json": {"public_key": pubkey()}}),
        ("GET", f"{url}/config", {"params": node_param}),
        ("GET", f"{url}/config.png", {"params": node_param}),
        ("GET", f"{url}/config.svg", {"params": node_param}),
    ]
    missing = f"{URL}/{bobs['id'] + 1000}"
    for method, target, options in attempts:
        response = await client.request(method, target, headers=alice.headers, **options)
        body = assert_problem(response, 404)
        assert "Bob" not in response.text
        # Exactly what a device that does not exist answers.
        unknown = await client.request(
            method, target.replace(url, missing), **options, headers=alice.headers
        )
        assert unknown.json()["detail"] == body["detail"]

    assert refreshes == []
    unchanged = (await client.get(url, headers=bob.headers)).json()
    assert unchanged == {k: bobs[k] for k in unchanged}


# --- configs --------------------------------------------------------------------------------


def parse_wg_quick(text: str) -> dict[str, dict[str, str]]:
    """A strict reader of the wg-quick format: every line must be a section, key, comment or
    blank; keys are unique within their section."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if match := re.fullmatch(r"\[(Interface|Peer)\]", line):
            assert match[1] not in sections, f"repeated section {line}"
            current = sections[match[1]] = {}
            continue
        match = re.fullmatch(r"([A-Za-z]+) = (\S.*)", line)
        assert match, f"not a wg-quick line: {line!r}"
        assert current is not None, f"a key outside a section: {line!r}"
        assert match[1] not in current
        current[match[1]] = match[2]
    return sections


async def test_config_download(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    runtime: Runtime,
) -> None:
    customer = await make_customer()
    node = await make_node(name="ams-1")
    device = (await add(client, customer, name="Bob's Phone/2", public_key=pubkey())).json()
    response = await client.get(
        f"{URL}/{device['id']}/config", params={"node_id": node.id}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{expected_filename("ams-1", "Bobs-Phone-2", device["id"])}"'
    )
    text = response.text
    assert text.endswith("\n")
    config = parse_wg_quick(text)
    assert set(config) == {"Interface", "Peer"}
    assert config["Interface"] == {
        "Address": f"{device['ipv4']}/32, {device['ipv6']}/128",
        "DNS": "10.64.0.1, fd42:b0::1",  # the pools' gateways, where nodes resolve
        "MTU": str(runtime.settings.tunnel_mtu),
    }
    assert config["Peer"] == {
        "PublicKey": str(node.wg_public_key),
        "Endpoint": "vpn.example.net:51820",
        "AllowedIPs": "0.0.0.0/0, ::/0",
        "PersistentKeepalive": "25",
    }
    # The private key line is a comment that says what to put there.
    key_lines = [line for line in text.splitlines() if "PrivateKey" in line]
    assert len(key_lines) == 1
    assert key_lines[0].startswith("# PrivateKey = ")
    assert "private key you kept" in key_lines[0]
    interface = text.split("[Peer]")[0]
    assert key_lines[0] in interface


async def test_the_server_made_config_is_complete(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    customer = await make_customer()
    await make_node(endpoint_host="2001:db8::1")
    body = (await add(client, customer)).json()
    config = parse_wg_quick(body["config"])
    assert config["Interface"]["PrivateKey"] == body["private_key"]
    assert config["Peer"]["Endpoint"] == "[2001:db8::1]:51820"
    assert "# PrivateKey" not in body["config"]


@pytest.mark.parametrize("suffix", ["config"])
async def test_config_needs_an_active_node(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode, suffix: str
) -> None:
    customer = await make_customer()
    device = (await add(client, customer)).json()
    pending = await make_node(status=NodeStatus.pending, wg_public_key=None)
    retired = await make_node(status=NodeStatus.retired)
    url = f"{URL}/{device['id']}/{suffix}"
    for node_id in (pending.id, retired.id, retired.id + 100):
        body = assert_problem(
            await client.get(url, params={"node_id": node_id}, headers=customer.headers), 404
        )
        assert "server list" in body["detail"]
    for params in ({}, {"node_id": "x"}, {"node_id": 0}, {"node_id": 2**64}):
        assert_problem(await client.get(url, params=params, headers=customer.headers), 422)


async def test_qr_codes_only_with_the_private_key(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    customer = await make_customer()
    node = await make_node()
    added = (await add(client, customer, node_id=node.id)).json()
    text = added["config"]
    assert f"PrivateKey = {added['private_key']}" in text
    # The answer that carries the private key carries its QR code: exactly the config.
    assert added["config_qr_svg"] == render_qr(text, "svg").decode()
    root = ET.fromstring(added["config_qr_svg"])  # noqa: S314 - our own output
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert re.fullmatch(r"[A-Za-z0-9_=+.-]{1,15}\.conf", added["config_filename"])

    # Scanned like a phone would: the PNG decoded to pixels, then read by a QR decoder.
    zxingcpp = pytest.importorskip("zxingcpp")
    png = render_qr(text, "png")
    width, height, pixels = decode_grey_png(png)
    found = zxingcpp.read_barcode(memoryview(pixels).cast("B", (height, width)))
    assert found is not None
    assert found.format == zxingcpp.BarcodeFormat.QRCode
    assert found.text == text

    rotated = (
        await client.post(
            f"{URL}/{added['id']}/rotate", json={"node_id": node.id}, headers=customer.headers
        )
    ).json()
    assert rotated["config_qr_svg"] == render_qr(rotated["config"], "svg").decode()

    # A customer's own key: no private key, so no QR code.
    own = (await add(client, customer, name="Own", public_key=pubkey())).json()
    assert own["config_qr_svg"] is None
    assert own["config"] is None
    # A stored device's QR code could only hold a placeholder key: refused, saying why.
    for device_id in (added["id"], own["id"]):
        for suffix in ("config.png", "config.svg"):
            response = await client.get(
                f"{URL}/{device_id}/{suffix}", params={"node_id": node.id}, headers=customer.headers
            )
            body = assert_problem(response, 410)
            assert "private key" in body["detail"]
            assert "download the configuration file" in body["detail"]
            assert "renew the device's key" in body["detail"]


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def expected_filename(node: str, device: str, device_id: int) -> str:
    tag = base36(device_id)
    return f"{node}-{device[: 15 - len(node) - len(tag) - 2]}-{tag}.conf"


AWKWARD_NAMES = [
    "Bob's Phone",
    "  my   laptop  ",
    "Zoë's café",
    "x" * 40,
    "l'ordinateur de José Álvarez, 2ème",
    "手机",
    "...---...",
    "Bob's Phone",  # the same name twice: the files still differ
]


async def test_download_file_names_suit_wg_quick(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    tmp_path: Path,
) -> None:
    if shutil.which("wg-quick") is None:
        pytest.skip("wg-quick is not installed (wireguard-tools)")
    customer = await make_customer()
    nodes = [await make_node(name="ams-1"), await make_node(name="a-very-long-node-name-in-nyc")]
    names: dict[int, set[str]] = {node.id: set() for node in nodes}
    for device_name in AWKWARD_NAMES:
        device = (await add(client, customer, name=device_name, public_key=pubkey())).json()
        for node in nodes:
            response = await client.get(
                f"{URL}/{device['id']}/config",
                params={"node_id": node.id},
                headers=customer.headers,
            )
            assert response.status_code == 200, response.text
            disposition = response.headers["content-disposition"]
            match = re.fullmatch(
                r'attachment; filename="([A-Za-z0-9_=+.-]{1,15})\.conf"', disposition
            )
            assert match, disposition
            assert match[1] not in names[node.id]
            names[node.id].add(match[1])
            stripped = wg_quick_strip(tmp_path, f"{match[1]}.conf", response.text)
            assert stripped.returncode == 0, (device_name, match[1], stripped.stderr)
            assert "PublicKey = " in stripped.stdout
    assert any(name.startswith("ams-1-Bobs") for name in names[nodes[0].id])
    assert any("Zoes" in name for name in names[nodes[0].id])


def decode_grey_png(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and 8-bit grey pixels of a 1-bit greyscale PNG (what segno writes)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            idat += data
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (1, 0, 0)
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    pixels, previous = bytearray(), bytes(stride)
    for row in range(height):
        start = row * (stride + 1)
        line = unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous)
        for x in range(width):
            bit = (line[x // 8] >> (7 - x % 8)) & 1
            pixels.append(255 if bit else 0)
        previous = line
    return width, height, bytes(pixels)


def unfilter(kind: int, line: bytes, above: bytes) -> bytes:
    """Undo one PNG row filter (one byte per pixel group at this bit depth)."""
    out = bytearray()
    for i, value in enumerate(line):
        left = out[i - 1] if i else 0
        up, corner = above[i], above[i - 1] if i else 0
        if kind == 0:
            predicted = 0
        elif kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            assert kind == 4, f"unknown PNG filter {kind}"
            estimate = left + up - corner
            distances = (abs(estimate - left), abs(estimate - up), abs(estimate - corner))
            predicted = (left, up, corner)[distances.index(min(distances))]
        out.append((value + predicted) & 0xFF)
    return bytes(out)


async def test_a_device_cannot_take_a_nodes_key(
    client: httpx.AsyncClient, make_customer: MakeCustomer, make_node: MakeNode
) -> None:
    """Every node serves every device: a device with a node's own key would be a peer with
    the node's interface key, which breaks that node for everyone."""
    node = await make_node()
    assert node.wg_public_key is not None
    customer = await make_customer()
    body = assert_problem(await add(client, customer, public_key=node.wg_public_key), 409)
    assert body["field"] == "public_key"
    device = (await add(client, customer)).json()
    rotate = await client.post(
        f"{URL}/{device['id']}/rotate",
        json={"public_key": node.wg_public_key},
        headers=customer.headers,
    )
    assert assert_problem(rotate, 409)["field"] == "public_key"
