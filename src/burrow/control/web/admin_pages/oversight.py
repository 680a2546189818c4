"""The admin panel's overview, the active policy with ``burrow policy check`` and
``burrow audit`` on demand, the admin audit trail, and the privacy requests that need a person.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.schemas import Reason
from burrow.control.admin.schemas import ActionFilter
from burrow.control.audit.repository import ActionFilters
from burrow.control.audit.service import admin_audit
from burrow.control.deps import RuntimeDep, SessionDep
from burrow.control.errors import BurrowError, NotFound
from burrow.control.models import PrivacyRequestStatus, SupportStatus, utcnow
from burrow.control.nodes.service import node as node_service
from burrow.control.overview import service as overview_service
from burrow.control.overview.schemas import RANGES
from burrow.control.policy.audit import AuditTargets, log_paths, run_audit_by
from burrow.control.policy.dns import filter_lists
from burrow.control.policy.service import check_file, format_problems, summary
from burrow.control.privacy.service import privacy as privacy_service
from burrow.control.refunds.service import refund as refund_service
from burrow.control.runtime import Runtime
from burrow.control.support.service import support as support_service
from burrow.control.web.admin_pages import charts as charts_module
from burrow.control.web.admin_pages.common import (
    PAGE_SIZE,
    PanelAdmin,
    RequestIdPath,
    methods_missing,
    time_left,
)
from burrow.control.web.forms import Form, attempt
from burrow.control.web.routing import page_router
from burrow.control.web.templating import redirect, render

router = page_router()


def _money(minor: int, currency: str | None) -> str:
    return f"{minor / 100:,.2f} {currency or ''}".strip()


@router.get("")
async def overview(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    days: Annotated[str | None, Query(max_length=4)] = None,
) -> Response:
    chosen = 30
    if days is not None:
        chosen = int(days) if days.isdigit() else 0
    figures = await overview_service.build(session, runtime, chosen)
    charts = [
        charts_module.bars("chart-signups", "Sign-ups per day", figures.signups),
        charts_module.bars("chart-trials", "Trials started per day", figures.trials_started),
        charts_module.bars(
            "chart-conversions",
            "First payments per day (trials and new customers converted)",
            figures.first_payments,
        ),
        charts_module.bars("chart-cancellations", "Cancellations per day", figures.cancellations),
        charts_module.bars("chart-refunds", "Refund requests per day", figures.refund_requests),
        charts_module.bars("chart-devices", "Devices added per day", figures.devices_added),
    ]
    queued, overdue = await refund_service.queue_summary(session)
    support = await support_service.summary(session)
    nodes = [await node_service.read(runtime, n) for n in await node_service.list_all(session)]
    privacy_pending = len([q for q in await _privacy_queue(session) if q["pending"]])
    recent = await admin_audit.search(session, limit=5)
    return render(
        request,
        "admin/index.html",
        {
            "methods_missing": methods_missing(runtime),
            "refunds_queued": queued,
            "refunds_overdue": overdue,
            "support_open": support.by_status.get(SupportStatus.open, 0),
            "support_overdue": support.overdue,
            "nodes_total": len(nodes),
            "nodes_online": len([n for n in nodes if n.health.state == "online"]),
            "privacy_pending": privacy_pending,
            "recent": recent.items,
            "policy_summary": summary(runtime.policy),
            "figures": figures,
            "charts": charts,
            "ranges": RANGES,
            "mrr": _money(figures.mrr_minor, figures.currency),
            "mrr_change": ("+" if figures.mrr_change_minor >= 0 else "-")
            + _money(abs(figures.mrr_change_minor), figures.currency),
            "plan_peak": max((p.count for p in figures.active_by_plan), default=0),
        },
    )


# --- policy and audit -------------------------------------------------------------------------


async def _policy_page(
    request: Request, runtime: Runtime, audit: dict[str, Any] | None = None
) -> Response:
    path = runtime.settings.policy_path
    try:
        text: str | None = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError:
        text = None
    on_disk, problems = await asyncio.to_thread(check_file, path)
    # Parsed off the event loop (a list may hold a million names), then cached by the store.
    dns_lists = await asyncio.to_thread(filter_lists.lists, runtime.policy.dns, path.parent)
    return render(
        request,
        "admin/policy.html",
        {
            "methods_missing": methods_missing(runtime),
            "path": str(path),
            "text": text,
            "summary": summary(runtime.policy),
            "terms_version": runtime.policy.terms.version,
            "terms_effective": runtime.policy.terms.effective_date,
            "check_ok": on_disk is not None,
            "check_lines": format_problems(path, problems),
            "check_summary": summary(on_disk) if on_disk is not None else None,
            # The file was edited after the control plane started: a restart applies it.
            "changed_on_disk": on_disk is not None and on_disk != runtime.policy,
            "audit": audit,
            "dns_lists": dns_lists,
        },
    )


@router.get("/policy")
async def policy(request: Request, runtime: RuntimeDep, admin: PanelAdmin) -> Response:
    return await _policy_page(request, runtime)


@router.post("/policy/audit")
async def run_policy_audit(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: PanelAdmin
) -> Response:
    """``burrow audit`` from the page: the same function over the same database and logs.

    A node's disk can only be scanned on the node itself (``burrow audit --node-state-dir``).
    """
    settings = runtime.settings
    targets = AuditTargets(log_paths=log_paths(settings, []))
    report = await run_audit_by(
        session, runtime.engine, runtime.policy, runtime.settings, admin, targets
    )
    return await _policy_page(
        request,
        runtime,
        {
            "report": report,
            "violations": len(report.violations),
            "at": utcnow(),
        },
    )


# --- the audit trail --------------------------------------------------------------------------


@router.get("/audit")
async def audit_trail(
    request: Request,
    session: SessionDep,
    admin: PanelAdmin,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    form = Form.empty(
        **{
            k: v
            for k, v in (("action", action), ("target_type", target_type), ("target_id", target_id))
            if v
        }
    )
    filters = form.validate(_TrailFilters)
    if filters is None:
        return render(
            request,
            "admin/audit.html",
            {"form": form, "entries": [], "total": 0, "page": 1, "pages": 1, "query": ""},
            status_code=422,
        )
    found = await admin_audit.search(
        session,
        ActionFilters(
            action=filters.action, target_type=filters.target_type, target_id=filters.target_id
        ),
        PAGE_SIZE,
        (page - 1) * PAGE_SIZE,
    )
    query = {k: v for k, v in form.values.items() if v}
    return render(
        request,
        "admin/audit.html",
        {
            "form": form,
            "entries": found.items,
            "total": found.total,
            "page": page,
            "pages": max(1, -(-found.total // PAGE_SIZE)),
            "query": urlencode(query),
        },
    )


class _TrailFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: ActionFilter | None = None
    target_type: ActionFilter | None = None
    target_id: ActionFilter | None = None


# --- privacy requests that need a person ------------------------------------------------------


async def _privacy_queue(session: AsyncSession) -> list[dict[str, Any]]:
    """The privacy requests, those waiting for a person first, nearest deadline first."""
    now = utcnow()
    rows = []
    for queued in await privacy_service.queue(session):
        left = queued.seconds_left(now)
        rows.append(
            {
                "request": queued.request,
                "email": queued.account_email,
                "pending": left is not None,
                "time_left": time_left(left) if left is not None else "",
                "overdue": left is not None and left < 0,
            }
        )
    return rows


@router.get("/privacy")
async def privacy_requests(request: Request, session: SessionDep, admin: PanelAdmin) -> Response:
    return render(
        request,
        "admin/privacy.html",
        {"rows": await _privacy_queue(session), "form": Form.empty()},
    )


class _Resolution(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcome: Reason
    decision: str = Field(pattern="^(done|refused)$")


@router.post("/privacy/{request_id}/resolve")
async def resolve_privacy_request(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: PanelAdmin,
    request_id: RequestIdPath,
) -> Response:
    form = await Form.read(request)
    body = form.validate(_Resolution)
    if body is None:
        return render(
            request,
            "admin/privacy.html",
            {"rows": await _privacy_queue(session), "form": form, "form_for": request_id},
            status_code=422,
        )
    try:
        # The privacy service records the resolution in the admin audit trail itself.
        await attempt(
            session,
            lambda: privacy_service.resolve(
                session,
                runtime,
                admin,
                request_id,
                PrivacyRequestStatus(body.decision),
                body.outcome,
            ),
        )
    except BurrowError as exc:
        if isinstance(exc, NotFound):
            return redirect(request, "/admin/privacy", flash=exc.message, kind="error")
        form.fail(exc)
        return render(
            request,
            "admin/privacy.html",
            {"rows": await _privacy_queue(session), "form": form, "form_for": request_id},
            status_code=exc.status,
        )
    return redirect(request, "/admin/privacy", flash=f"Privacy request {request_id} is answered.")
