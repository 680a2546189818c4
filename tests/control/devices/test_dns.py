"""A device's DNS line: the resolver of the pools, or of its filter choice (devices API)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import httpx

from burrow.control.devices.service import AddressPool, device_dns
from burrow.control.policy.schemas import DnsFilterSection, DnsSection
from burrow.control.runtime import Runtime
from tests.control.devices.conftest import Customer, MakeCustomer, MakeNode

URL = "/api/v1/devices"


def with_filters(runtime: Runtime, tmp_path: Path, **extra: Any) -> DnsSection:
    (tmp_path / "ads.txt").write_text("ads.example\n")
    (tmp_path / "trackers.txt").write_text("")
    section = DnsSection(
        filters={
            "ads": DnsFilterSection(title="Ads", file=str(tmp_path / "ads.txt")),
            "trackers": DnsFilterSection(title="Trackers", file=str(tmp_path / "trackers.txt")),
        },
        **extra,
    )
    runtime.policy = runtime.policy.model_copy(update={"dns": section})
    return section


async def config_dns(client: httpx.AsyncClient, customer: Customer, device: int, node: int) -> str:
    response = await client.get(
        f"{URL}/{device}/config", params={"node_id": node}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    line = next(x for x in response.text.splitlines() if x.startswith("DNS = "))
    return line.removeprefix("DNS = ")


async def new_device(client: httpx.AsyncClient, customer: Customer, **body: Any) -> httpx.Response:
    return await client.post(
        URL, json={"name": "phone", "public_key": None, **body}, headers=customer.headers
    )


async def test_the_dns_line_follows_the_tunnel_pools(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    runtime: Runtime,
) -> None:
    runtime.settings = runtime.settings.model_copy(
        update={"tunnel_ipv4_pool": "10.100.0.0/16", "tunnel_ipv6_pool": "fd00:1::/64"}
    )
    customer = await make_customer()
    node = await make_node()
    device = (await new_device(client, customer)).json()
    assert device["ipv4"].startswith("10.100.")
    # Before, the line said 10.64.0.1 whatever the pools: nothing answered there.
    assert await config_dns(client, customer, device["id"], node.id) == "10.100.0.1, fd00:1::1"


async def test_a_filter_choice_names_its_own_resolver(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    make_node: MakeNode,
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    section = with_filters(runtime, tmp_path)
    assert section.offered == [("ads",), ("trackers",), ("ads", "trackers")]
    customer = await make_customer()
    node = await make_node()
    created = await new_device(client, customer, dns_filters=["ads"])
    assert created.status_code == 201, created.text
    device = created.json()
    assert device["dns_filters"] == ["ads"]
    # Combination 1 (ads) is the pools' last usable address; 3 (both) two below it.
    assert device["config"] is not None
    assert "DNS = 10.127.255.254, fd42:b0::3f:fffe\n" in device["config"]
    before = await config_dns(client, customer, device["id"], node.id)
    assert before == "10.127.255.254, fd42:b0::3f:fffe"

    changed = await client.put(
        f"{URL}/{device['id']}/dns-filters",
        json={"filters": ["trackers", "ads"]},
        headers=customer.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["dns_filters"] == ["ads", "trackers"]
    after = await config_dns(client, customer, device["id"], node.id)
    assert after == "10.127.255.252, fd42:b0::3f:fffc"

    cleared = await client.put(
        f"{URL}/{device['id']}/dns-filters", json={"filters": []}, headers=customer.headers
    )
    assert cleared.json()["dns_filters"] == []
    assert await config_dns(client, customer, device["id"], node.id) == "10.64.0.1, fd42:b0::1"


async def test_an_unknown_choice_is_refused_with_the_choices(
    client: httpx.AsyncClient,
    make_customer: MakeCustomer,
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    with_filters(runtime, tmp_path, combinations=[["ads"]])
    customer = await make_customer()
    device = (await new_device(client, customer)).json()
    for filters in (["trackers"], ["gambling"], ["ads", "trackers"]):
        response = await client.put(
            f"{URL}/{device['id']}/dns-filters", json={"filters": filters}, headers=customer.headers
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "The choices are: ads" in response.json()["detail"]
    refused = await new_device(client, customer, dns_filters=["gambling"])
    assert refused.status_code == 422


def test_the_combinations_addresses_are_never_given_to_devices(
    runtime: Runtime, tmp_path: Path
) -> None:
    section = with_filters(runtime, tmp_path)
    plain = AddressPool.from_settings_values("10.9.0.0/24", "fd09::/112")
    pool = AddressPool(plain.ipv4, plain.ipv6, section.reserved_addresses)
    assert plain.last_index == 254
    assert pool.last_index == 251
    top = ipaddress.ip_address(pool.addresses(pool.last_index)[0])
    for mask in (1, 2, 3):
        combination = ("ads",) if mask == 1 else ("trackers",) if mask == 2 else ("ads", "trackers")
        settings = runtime.settings.model_copy(
            update={"tunnel_ipv4_pool": "10.9.0.0/24", "tunnel_ipv6_pool": "fd09::/112"}
        )

        class FakeDevice:
            dns_filters = ",".join(combination)

        resolver = device_dns(settings, section, FakeDevice())  # type: ignore[arg-type]
        assert ipaddress.ip_address(resolver.split(",")[0]) > top
