"""create_app(): the control plane's ASGI application.

Mounts the customer API, the admin API and the node API; starts the scheduler in the lifespan.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from burrow import __version__
from burrow.control import api_docs, problems
from burrow.control.abuse.endpoints import router as abuse_router
from burrow.control.accounts.endpoints import router as accounts_router
from burrow.control.admin.endpoints import router as admin_router
from burrow.control.affiliates.endpoints import router as affiliates_router
from burrow.control.billing.endpoints import router as billing_router
from burrow.control.config import Settings, get_settings
from burrow.control.connections.endpoints import router as connections_router
from burrow.control.credentials.endpoints import router as credentials_router
from burrow.control.desired_state.notifier import RevisionWatcher
from burrow.control.desired_state.service import desired_state as desired_state_service
from burrow.control.devices.endpoints import router as devices_router
from burrow.control.metrics import router as metrics_router
from burrow.control.middleware import (
    BodyLimitMiddleware,
    BodyLimits,
    SecurityHeadersMiddleware,
)
from burrow.control.node_api.endpoints import router as node_api_router
from burrow.control.nodes.endpoints import router as nodes_router
from burrow.control.plans.endpoints import router as plans_router
from burrow.control.privacy.endpoints import admin_router as privacy_admin_router
from burrow.control.privacy.endpoints import router as privacy_router
from burrow.control.refunds.endpoints import router as refunds_router
from burrow.control.runtime import Runtime
from burrow.control.scheduler import Scheduler
from burrow.control.startup import prepare
from burrow.control.subscriptions.endpoints import router as subscriptions_router
from burrow.control.support.endpoints import admin_router as support_admin_router
from burrow.control.support.endpoints import router as support_router
from burrow.control.support.inbound import start_inbound, stop_inbound
from burrow.control.terms.endpoints import router as terms_router
from burrow.control.web import install as install_web
from burrow.control.web.errors import is_web, refusal_page
from burrow.wire import API_PREFIX as NODE_API_PREFIX

log = logging.getLogger(__name__)

# uvicorn keeps an idle keep-alive connection this long: longer than a node's report interval
# (5 s), so that a report does not race the server closing the connection it was sent on.
KEEP_ALIVE_SECONDS = 30


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. Tests pass a ready ``runtime``; ``burrow serve`` lets the app build one."""
    settings = settings or (runtime.settings if runtime else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime.build(settings)
        app.state.runtime = rt
        await prepare(rt)
        scheduler = Scheduler(rt)
        if settings.scheduler_enabled:
            scheduler.start()
        # The support desk's email listener, only where BURROW_INBOUND_SMTP asks for it.
        inbound = await start_inbound(rt) if settings.inbound_smtp else None
        # This replica's one reader of the revision, waking its waiting node long polls.
        watcher = RevisionWatcher(
            rt.notifier,
            partial(desired_state_service.read_revision, rt),
            redis_url=rt.settings.redis_url,
            fallback_seconds=rt.settings.revision_fallback_seconds,
        )
        await watcher.start()
        if owned:
            # A serving process (not a test's app): what startup built (modules, the policy,
            # the routes) lives as long as the process, so the collector's full passes need
            # not walk it again each time; they then cost what the requests' own objects do.
            gc.freeze()
        try:
            yield
        finally:
            await watcher.stop()
            if inbound is not None:
                await stop_inbound(inbound)
            await scheduler.stop()
            if owned:
                await rt.close()

    app = FastAPI(
        title="burrow",
        version=__version__,
        summary="The control plane of a VPN provider.",
        docs_url=None,  # served by api_docs, from this server rather than a CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    problems.install(app)
    # The node API first: routes are matched in order, and a thousand nodes' reports and polls
    # are most of the requests, so they should not be tried against every other route first.
    for router in (
        node_api_router,
        accounts_router,
        plans_router,
        subscriptions_router,
        devices_router,
        credentials_router,
        connections_router,
        nodes_router,
        admin_router,
        abuse_router,
        terms_router,
        billing_router,
        refunds_router,
        affiliates_router,
        privacy_router,
        privacy_admin_router,
        support_router,
        support_admin_router,
        metrics_router,
    ):
        app.include_router(router)
    api_docs.install(app, "/api/openapi.json")
    # The web pages: after the API routers, so /api paths never reach a page route.
    install_web(app)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_edge_guards(app, settings)
    if settings.trusted_proxies:
        # Outermost: every part of the app sees the customer's address and scheme as the
        # trusted proxy forwarded them (uvicorn's own middleware; `burrow serve` turns
        # uvicorn's built-in copy off, which would otherwise trust 127.0.0.1 by default).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)

    return app


_REFUSAL_TITLES = {403: "Not allowed", 413: "Too large"}


async def _refusal(scope: Scope, status: int, message: str) -> ASGIApp:
    """The answer to a request the edge refuses: problem+json for programs, a page for people."""
    request = Request(scope)
    title = _REFUSAL_TITLES.get(status, "Refused")
    if is_web(request):
        return await refusal_page(request, status, title, message)
    return problems.problem(status, title, message)


def install_edge_guards(app: FastAPI, settings: Settings) -> None:
    """Body limits and security headers.

    Added last, so they run first (the headers outermost: refusals carry them too).
    """
    limits = BodyLimits(
        default=settings.max_body_bytes,
        by_prefix={f"{NODE_API_PREFIX}/report": settings.node_report_max_body_bytes},
    )
    app.add_middleware(BodyLimitMiddleware, limits=limits, refuse=_refusal)
    docs = (api_docs.DOCS_PATH,)  # served by api_docs (app.docs_url is None)
    app.add_middleware(SecurityHeadersMiddleware, public_url=settings.public_url, docs_paths=docs)
