"""The admin panel's fleet: nodes with location, health, last report, load and connected
devices (counts only), and new nodes with their one-time enrollment command.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.abuse.service import abuse as abuse_service
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.errors import BurrowError
from burrow.control.models import NodeStatus
from burrow.control.nodes.schemas import NodeCreate, NodeUpdate
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.control.web.admin_pages.common import NodeIdPath, PanelAdmin, duration
from burrow.control.web.forms import Form, attempt, press, submit
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()


def _bytes(count: int) -> str:
    """A byte count as an operator reads it (decimal units, as uplinks are sold)."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


async def _fleet_page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    form: Form | None = None,
    status_code: int = 200,
    enrollment: dict[str, Any] | None = None,
    edit: tuple[int, Form] | None = None,
) -> Response:
    stored = await node_service.list_all(session)
    nodes = [await node_service.read(runtime, n) for n in stored]
    rows = []
    for node, row_node in zip(nodes, stored, strict=True):
        connected = node.health.connected_devices
        # Like the servers list: the load of a node that stopped reporting is unknown, not its
        # last count (which stays in the Connected column, next to the report's age).
        online = node.health.state == "online"
        load = None if connected is None or not online else connected / max(1, node.capacity)
        rows.append(
            {
                "node": node,
                "load": load,
                "report_age": duration(node.health.last_report_age_seconds)
                if node.health.last_report_age_seconds is not None
                else "never",
                "dropped": _bytes(node.health.dropped_bytes or 0),
                # Deterministic NAT: the devices beyond the node's port blocks, refused.
                "nat": await abuse_service.nat_capacity(session, runtime, row_node),
                "edit_form": edit[1]
                if edit is not None and edit[0] == node.id
                else Form.empty(
                    endpoint_host=node.endpoint_host,
                    endpoint_port=str(node.endpoint_port),
                    country=node.country,
                    city=node.city,
                    capacity=str(node.capacity),
                    egress_ipv4=node.egress_ipv4 or "",
                    egress_ipv4_extra=" ".join(node.egress_ipv4_extra),
                ),
            }
        )
    return render(
        request,
        "admin/fleet.html",
        {
            "rows": rows,
            "form": form or Form.empty(endpoint_port="51820", capacity="1000"),
            "enrollment": enrollment,
            "strict": not runtime.policy.privacy.keeps_connection_records,
            "retired": NodeStatus.retired,
            "edit_id": edit[0] if edit else None,
        },
        status_code=status_code,
    )


@router.get("/fleet")
async def fleet(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    return await _fleet_page(request, session, runtime)


@router.post("/fleet")
async def create_node(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    # The token is shown once, on this answer: never in a redirect, a cookie or a log.
    return await submit(
        request,
        session,
        NodeCreate,
        lambda body: node_service.create_by(session, runtime, admin, body),
        page=lambda form, status: _fleet_page(request, session, runtime, form, status),
        done=lambda _body, created: _fleet_page(
            request,
            session,
            runtime,
            status_code=201,
            enrollment={"node": created.node, "issued": created.enrollment},
        ),
    )


@router.post("/fleet/{node_id}/enrollment-token")
async def node_enrollment_token(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    node_id: NodeIdPath,
) -> Response:
    async def issue() -> dict[str, Any]:
        node = await node_service.get(session, node_id)
        issued = await node_service.new_enrollment_token_by(session, runtime, admin, node)
        return {"node": node, "issued": issued}

    try:
        enrollment = await attempt(session, issue)
    except BurrowError as exc:
        return redirect(request, "/admin/fleet", flash=exc.message, kind="error")
    return await _fleet_page(request, session, runtime, enrollment=enrollment)


@router.post("/fleet/{node_id}/retire")
async def retire_node(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    node_id: NodeIdPath,
) -> Response:
    return await press(
        request,
        session,
        lambda: node_service.retire_by(session, runtime, admin, node_id),
        back="/admin/fleet",
        done=lambda node: redirect(request, "/admin/fleet", flash=f"Node {node.name} is retired."),
    )


@router.post("/fleet/{node_id}/update")
async def update_node(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    node_id: NodeIdPath,
) -> Response:
    """Change a node's endpoint, location, capacity or egress addresses (empty fields stay as
    they are, but for the further egress addresses: emptied, they are gone)."""
    return await submit(
        request,
        session,
        NodeUpdate,
        lambda body: node_service.update_by(session, runtime, admin, node_id, body),
        fixed=lambda form: (
            {"egress_ipv4_extra": form.values["egress_ipv4_extra"]}
            if "egress_ipv4_extra" in form.values
            else {}
        ),
        page=lambda form, status: _fleet_page(
            request, session, runtime, status_code=status, edit=(node_id, form)
        ),
        done=lambda _body, node: redirect(
            request, "/admin/fleet", flash=f"Node {node.name} is updated."
        ),
    )
