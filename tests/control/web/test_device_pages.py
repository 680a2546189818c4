"""Devices: add with a server key (QR + file) or a browser key, limits, blocked devices, the
config for any node, new keys, rename, remove."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from burrow.control.db import unit_of_work
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.service import new_key_pair
from burrow.control.models import Node, utcnow
from burrow.control.nodes.schemas import NodeUpdate
from burrow.control.nodes.service import node as node_service
from burrow.control.policy.schemas import DnsFilterSection, DnsSection
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.wire.models import API_PREFIX
from tests.control.web.conftest import MakeWebCustomer
from tests.support.factories import create_device, create_node
from tests.support.web import field_error, field_value, post_form
from tests.support.wg_quick import wg_quick_strip


@dataclass
class ReportingNode:
    row: Node
    token: str

    async def report(self, client: httpx.AsyncClient, *keys: str, seq: int = 1) -> list[str]:
        body = {
            "boot_id": "boot-1",
            "seq": seq,
            "revision": 0,
            "peers": [{"public_key": k, "connected": True} for k in keys],
        }
        response = await client.post(
            f"{API_PREFIX}/report", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 200, response.text
        return list(response.json()["blocked"])


@pytest.fixture
async def node(runtime: Runtime) -> ReportingNode:
    token = new_token("bwn_")
    async with unit_of_work(runtime.sessionmaker) as session:
        row = await create_node(session, name="ams-1")
        row.node_token_hash = hash_token(token)
    return ReportingNode(row, token)


async def test_add_with_a_server_key_shows_a_scannable_qr_once(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    await web_customer()
    page = await client.get("/devices")
    assert 'id="add-device"' in page.text
    assert "ams-1 (recommended)" in page.text
    response = await post_form(
        client, "/devices", {"name": "Phone", "node_id": str(node.row.id)}, page="/devices"
    )
    assert response.status_code == 201, response.text
    assert "<svg" in response.text
    assert "<?xml" not in response.text
    config = re.search(r'<pre class="config" id="config-text">(.*?)</pre>', response.text, re.S)
    assert config is not None
    assert "PrivateKey = " in config.group(1)
    assert f"PublicKey = {node.row.wg_public_key}" in config.group(1)
    assert re.search(r'download="ams-1-Phone-[0-9a-z]+\.conf"', response.text)
    listed = await client.get("/devices")
    assert "Phone" in listed.text
    assert "Not connected" in listed.text


async def test_add_with_a_browser_key_never_shows_a_private_key(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    await web_customer()
    _private, public = new_key_pair()
    response = await post_form(
        client, "/devices", {"name": "Laptop", "public_key": public}, page="/devices"
    )
    assert response.status_code == 201, response.text
    assert "data-config-template" in response.text
    assert f'data-public-key="{public}"' in response.text
    assert "# PrivateKey = &lt;paste" in response.text
    assert "<svg" not in response.text


async def test_bad_name_keeps_the_form_with_the_apis_message(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    customer = await web_customer()
    response = await post_form(client, "/devices", {"name": "  "}, page="/devices")
    assert response.status_code == 422
    api = await client.post(
        "/api/v1/devices",
        json={"name": "  "},
        headers={"Authorization": f"Bearer {customer.token}"},
    )
    message = api.json()["errors"][0]["message"]
    assert field_error(response, "name") == message
    long_name = await post_form(client, "/devices", {"name": "x" * 70}, page="/devices")
    assert field_value(long_name, "name") == "x" * 70


async def test_device_limit_refusal_and_limits_shown(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    customer = await web_customer("business-monthly")
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_device(session, customer.account, name="Only one")
    page = await client.get("/devices")
    assert "<strong>1</strong> of 1 on your plan Business, 1 month" in page.text
    assert "at most 1" in page.text
    assert 'id="at-device-limit"' in page.text
    refused = await post_form(client, "/devices", {"name": "Second"}, page="/devices")
    assert refused.status_code == 409
    assert "limit" in refused.text
    assert field_value(refused, "name") == "Second"


async def test_a_blocked_device_says_why(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        first = await create_device(session, customer.account, name="First")
        second = await create_device(session, customer.account, name="Second")
        await desired_state_service.refresh_account(session, runtime, customer.account.id)
    blocked = await node.report(client, first.public_key, second.public_key)
    assert blocked == [second.public_key]
    page = await client.get("/devices")
    assert "Connected</span> to ams-1" in page.text
    assert "Blocked" in page.text
    detail = await client.get(f"/devices/{second.id}")
    reason = re.search(r'id="blocked-reason">(.*?)<', detail.text, re.S)
    assert reason is not None
    assert reason.group(1).strip()


async def test_a_device_the_node_refused_over_openvpn_says_why(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, customer.account, name="Laptop")
        await desired_state_service.refresh_account(session, runtime, customer.account.id)
    # The node's text is never shown (a hostile node could write anything): the control
    # plane's own words are.
    said = "Call +1 555 0100 to unlock your account."
    reason = (
        "ams-1 refused this device over OpenVPN; try again in a minute, or connect to another "
        "server."
    )
    body = {
        "boot_id": "boot-1",
        "seq": 1,
        "revision": 0,
        "refused": [{"public_key": device.public_key, "protocol": "openvpn", "reason": said}],
    }
    response = await client.post(
        f"{API_PREFIX}/report", json=body, headers={"Authorization": f"Bearer {node.token}"}
    )
    assert response.status_code == 200, response.text
    listing = await client.get("/devices")
    assert reason in listing.text
    assert said not in listing.text
    detail = await client.get(f"/devices/{device.id}")
    assert "Blocked</span> on ams-1" in detail.text
    shown = re.search(r'id="blocked-reason">(.*?)<', detail.text, re.S)
    assert shown is not None
    assert shown.group(1).strip() == reason


async def test_config_download_rename_rotate_remove(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, customer.account, name="Desk")
    url = f"/devices/{device.id}"
    config = await client.get(f"{url}/config", params={"node_id": node.row.id})
    assert config.status_code == 200
    assert re.fullmatch(
        r'attachment; filename="ams-1-Desk-[0-9a-z]+\.conf"', config.headers["content-disposition"]
    )
    assert "# PrivateKey = <paste" in config.text
    assert f"Address = {device.ipv4}/32" in config.text

    renamed = await post_form(client, f"{url}/rename", {"name": "Desk PC"}, page=url)
    assert renamed.status_code == 303
    assert "Renamed to Desk PC." in (await client.get(url)).text

    rotated = await post_form(client, f"{url}/rotate", {"node_id": str(node.row.id)}, page=url)
    assert rotated.status_code == 200
    assert "New key for Desk PC" in rotated.text
    assert "<svg" in rotated.text
    assert device.public_key not in rotated.text

    bad_key = await post_form(client, f"{url}/rotate", {"public_key": "nope"}, page=url)
    assert bad_key.status_code == 422
    assert field_error(bad_key, "public_key")

    removed = await post_form(client, f"{url}/remove", page=url)
    assert removed.status_code == 303
    assert (await client.get(url)).status_code == 404


async def test_the_dns_filter_choice_changes_the_config(
    client: httpx.AsyncClient,
    runtime: Runtime,
    web_customer: MakeWebCustomer,
    node: ReportingNode,
    tmp_path: Path,
) -> None:
    (tmp_path / "ads.txt").write_text("ads.example\n")
    section = DnsSection(filters={"ads": DnsFilterSection(title="Ads", file="ads.txt")})
    runtime.policy = runtime.policy.model_copy(update={"dns": section})
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        device = await create_device(session, customer.account, name="Desk")
    url = f"/devices/{device.id}"
    page = await client.get(url)
    assert 'id="dns-form"' in page.text
    assert "No filtering" in page.text
    assert "Ads" in page.text

    async def dns_line() -> str:
        config = await client.get(f"{url}/config", params={"node_id": node.row.id})
        found = re.search(r"^DNS = (.+)$", config.text, re.M)
        assert found is not None
        return found.group(1)

    assert await dns_line() == "10.64.0.1, fd42:b0::1"
    chosen = await post_form(client, f"{url}/dns-filters", {"filters": "ads"}, page=url)
    assert chosen.status_code == 303
    assert "DNS filters changed" in (await client.get(url)).text
    assert await dns_line() == "10.127.255.254, fd42:b0::3f:fffe"
    unknown = await post_form(client, f"{url}/dns-filters", {"filters": "gambling"}, page=url)
    assert unknown.status_code == 422
    assert "The choices are: ads" in unknown.text
    assert await dns_line() == "10.127.255.254, fd42:b0::3f:fffe"
    cleared = await post_form(client, f"{url}/dns-filters", {"filters": ""}, page=url)
    assert cleared.status_code == 303
    assert await dns_line() == "10.64.0.1, fd42:b0::1"


async def test_another_customers_device_is_not_found(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    other = await web_customer(sign_in=False)
    async with unit_of_work(runtime.sessionmaker) as session:
        theirs = await create_device(session, other.account)
    await web_customer()
    assert (await client.get(f"/devices/{theirs.id}")).status_code == 404
    assert (await client.get(f"/devices/{theirs.id}/config")).status_code in (404, 409)
    assert (await client.get("/devices/not-a-number")).status_code == 404


async def test_downloads_have_names_wg_quick_accepts(
    client: httpx.AsyncClient,
    runtime: Runtime,
    web_customer: MakeWebCustomer,
    node: ReportingNode,
    tmp_path: Path,
) -> None:
    if shutil.which("wg-quick") is None:
        pytest.skip("wg-quick is not installed (wireguard-tools)")
    customer = await web_customer()
    names = set()
    for device_name in ("Zoë's phone", "work laptop 2", "x" * 40, "x" * 40):
        async with unit_of_work(runtime.sessionmaker) as session:
            device = await create_device(session, customer.account, name=device_name)
        response = await client.get(f"/devices/{device.id}/config", params={"node_id": node.row.id})
        assert response.status_code == 200
        match = re.fullmatch(
            r'attachment; filename="([A-Za-z0-9_=+.-]{1,15})\.conf"',
            response.headers["content-disposition"],
        )
        assert match, response.headers["content-disposition"]
        names.add(match[1])
        stripped = wg_quick_strip(tmp_path, f"{match[1]}.conf", response.text)
        assert stripped.returncode == 0, stripped.stderr
    assert len(names) == 4


async def test_customers_are_told_when_a_servers_address_changed(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer, node: ReportingNode
) -> None:
    customer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_device(session, customer.account, name="Desk")
        other = await create_node(session, name="fra-1")
    page = await client.get("/devices")
    assert "config-changed" not in page.text
    async with unit_of_work(runtime.sessionmaker) as session:
        # A change of location or capacity leaves configurations as they are.
        await node_service.update(
            session, runtime, other.id, NodeUpdate(city="Berlin", capacity=10)
        )
        await node_service.update(
            session, runtime, node.row.id, NodeUpdate(endpoint_host="ams-1.vpn.example.net")
        )
    page = await client.get("/devices")
    notice = re.search(r'id="config-changed-ams-1">(.*?)</p>', page.text, re.S)
    assert notice is not None, page.text
    today = utcnow().strftime("%Y-%m-%d")
    assert f"The server address of server ams-1 changed on {today}" in notice.group(1)
    assert "download the configuration for ams-1 again" in notice.group(1)
    assert "config-changed-fra-1" not in page.text

    # A customer whose devices came after the change has nothing out of date.
    newcomer = await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_device(session, newcomer.account, name="New phone")
    assert "config-changed" not in (await client.get("/devices")).text


async def test_limits_shown_only_for_protocols_served_and_explained(
    client: httpx.AsyncClient, runtime: Runtime, web_customer: MakeWebCustomer
) -> None:
    # The policy limits a protocol no server speaks; the page must not promise it.
    plan = runtime.policy.plans["personal-monthly"]
    limited = plan.model_copy(update={"connections_per_server": {"wireguard": 1, "openvpn": 3}})
    plans = {**runtime.policy.plans, "personal-monthly": limited}
    runtime.policy = runtime.policy.model_copy(update={"plans": plans})
    await web_customer()
    async with unit_of_work(runtime.sessionmaker) as session:
        await create_node(session)
    page = (await client.get("/devices")).text
    limit = re.search(r'id="per-server-limit">(.*?)</li>', page, re.S)
    assert limit is not None
    text = re.sub(r"<[^>]+>", "", limit.group(1))
    assert "at most 1 WireGuard connection." in text
    assert "OPENVPN" not in page.upper()
    # One sentence says what it means for a customer with one server.
    assert "We have one server, so only one of your devices can be connected at a time." in text
