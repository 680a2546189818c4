"""Servers by country and city, with load and the recommended one."""

from __future__ import annotations

import httpx

from burrow.control.db import unit_of_work
from burrow.control.runtime import Runtime
from tests.support.factories import create_node


async def test_servers_are_grouped_with_a_recommended_one(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    empty = await client.get("/servers")
    assert empty.status_code == 200
    assert 'id="no-servers"' in empty.text
    async with unit_of_work(runtime.sessionmaker) as session:
        ams = await create_node(session, name="ams-1")
        fra = await create_node(session, name="fra-1")
        fra.country, fra.city = "de", "Frankfurt"
    page = await client.get("/servers")
    assert page.status_code == 200
    assert page.text.index('id="h-country-DE"') < page.text.index('id="h-country-NL"')
    assert "Frankfurt" in page.text
    assert "Amsterdam" in page.text
    assert 'id="recommended-server"' in page.text
    assert page.text.count('badge-ok">Recommended') == 1
    assert f'id="server-{ams.id}"' in page.text
    assert "0%" in page.text
