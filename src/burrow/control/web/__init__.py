"""The customer panel, the privacy center and the admin panel: server-rendered pages.

Pages call services only (never repositories or SQL), render Jinja2 templates from
``templates/`` and use the stylesheet in ``static/``. Every form works without JavaScript and
carries a CSRF token. Each page module has ``router = page_router()`` and is listed in
``PAGE_MODULES``; ``install`` mounts them all, the static files and the error pages.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from burrow.control.web import errors
from burrow.control.web.templating import STATIC_DIR

# One line per page module, in the order their routes are matched. A module listed here that
# does not exist yet (a panel still being written) is skipped, so listing it first is safe.
PAGE_MODULES = (
    "burrow.control.web.account_pages",
    "burrow.control.web.dashboard_pages",
    "burrow.control.web.device_pages",
    "burrow.control.web.openvpn_pages",
    "burrow.control.web.server_pages",
    "burrow.control.web.billing_pages",
    "burrow.control.web.usage_pages",
    "burrow.control.web.terms_pages",
    "burrow.control.web.privacy_pages",
    "burrow.control.web.support_pages",
    "burrow.control.web.affiliate_pages",
    "burrow.control.web.admin_pages",
)


def page_routers() -> list[APIRouter]:
    routers = []
    for name in PAGE_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        router = module.router
        assert isinstance(router, APIRouter), f"{name}.router must be an APIRouter"
        routers.append(router)
    return routers


def install(app: FastAPI) -> None:
    errors.install(app)
    for router in page_routers():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
