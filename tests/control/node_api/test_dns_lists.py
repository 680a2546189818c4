"""DNS filter lists through the node API: named by hash in the state, downloaded by hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from burrow.control.policy.schemas import DnsFilterSection, DnsSection
from burrow.control.runtime import Runtime
from burrow.wire import API_PREFIX, FullState
from tests.control.node_api.conftest import Enroll


async def test_lists_are_named_by_hash_and_served_by_hash(
    client: httpx.AsyncClient, runtime: Runtime, enroll: Enroll, tmp_path: Path
) -> None:
    ads = tmp_path / "ads.txt"
    ads.write_text("# ads\nAds.Example\nnot a name\ntracker.example\n")
    runtime.policy = runtime.policy.model_copy(
        update={
            "dns": DnsSection(
                filters={"ads": DnsFilterSection(title="Ads", file=str(ads))},
                forwarders=["192.0.2.53"],
            )
        }
    )
    node = await enroll()
    response = await client.get(f"{API_PREFIX}/state", headers=node.headers)
    assert response.status_code == 200, response.text
    dns = FullState.model_validate_json(response.content).state.network.dns
    assert dns is not None
    assert dns.forwarders == ("192.0.2.53",)
    assert [(r.ipv4, r.lists) for r in dns.resolvers] == [
        ("10.64.0.1", ()),
        ("10.127.255.254", ("ads",)),
    ]
    (entry,) = dns.lists
    assert entry.names == 2
    body = b"ads.example\ntracker.example\n"
    assert entry.sha256 == hashlib.sha256(body).hexdigest()

    listed = await client.get(f"{API_PREFIX}/dns/lists/{entry.sha256}", headers=node.headers)
    assert listed.status_code == 200
    assert listed.content == body
    assert listed.headers["content-type"].startswith("text/plain")

    # A changed file is a new hash; the old one is gone.
    ads.write_text("ads.example\n")
    changed = await client.get(f"{API_PREFIX}/state", headers=node.headers)
    new_dns = FullState.model_validate_json(changed.content).state.network.dns
    assert new_dns is not None
    assert new_dns.lists[0].sha256 != entry.sha256
    gone = await client.get(f"{API_PREFIX}/dns/lists/{entry.sha256}", headers=node.headers)
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")
    stranger = await client.get(f"{API_PREFIX}/dns/lists/{new_dns.lists[0].sha256}")
    assert stranger.status_code == 401
    malformed = await client.get(f"{API_PREFIX}/dns/lists/not-a-hash", headers=node.headers)
    assert malformed.status_code == 422
