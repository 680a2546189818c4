"""Servers: where a device can connect, by country and city, with live load and the one
recommended now."""

from __future__ import annotations

from itertools import groupby

from fastapi import Request, Response

from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.nodes.service import node as node_service
from burrow.control.web.auth import OptionalWebAccount
from burrow.control.web.routing import page_router
from burrow.control.web.templating import render

router = page_router()


@router.get("/servers")
async def servers_page(
    request: Request, session: SessionDep, runtime: RuntimeDep, _account: OptionalWebAccount
) -> Response:
    servers = sorted(
        await node_service.server_list(session, runtime),
        key=lambda s: (s.country.upper(), s.city, s.name),
    )
    countries = [
        (country, list(group))
        for country, group in groupby(servers, key=lambda s: s.country.upper())
    ]
    recommended = next((s for s in servers if s.recommended), None)
    # The API counts an unknown load as 0 so that clients can sort by it; a person reading
    # "0%" would take a server that stopped reporting for an empty one, so the page says so.
    reporting = {
        n.id
        for n in await node_service.list_all(session)
        if (await node_service.health(runtime, n)).state == "online"
    }
    return render(
        request,
        "servers.html",
        {
            "countries": countries,
            "recommended": recommended,
            "count": len(servers),
            "reporting": reporting,
        },
    )
