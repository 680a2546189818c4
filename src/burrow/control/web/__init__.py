"""The customer panel, the privacy center and the admin panel: server-rendered pages.

Pages call services only (never repositories or SQL), render Jinja2 templates from
``templates/`` and use the stylesheet in ``static/``. Every form works without JavaScript and
carries a CSRF token. Each page module (``*_pages``) has ``router = page_router()`` and is
listed in ``PAGE_MODULES``; ``install`` mounts them all, the static files and the error pages,
and refuses to start when the list and the package disagree.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from burrow.control.web import errors
from burrow.control.web.templating import STATIC_DIR

# One line per page module, in the order their routes are matched. Every module listed must
# exist and make ``router``, and every page module of this package must be listed: start-up
# stops with ``PageModulesWrong`` otherwise, rather than serving a panel with pages missing.
PAGE_MODULES = (
    "burrow.control.web.account_pages",
    "burrow.control.web.dashboard_pages",
    "burrow.control.web.device_pages",
    "burrow.control.web.openvpn_pages",
    "burrow.control.web.ikev2_pages",
    "burrow.control.web.server_pages",
    "burrow.control.web.billing_pages",
    "burrow.control.web.usage_pages",
    "burrow.control.web.terms_pages",
    "burrow.control.web.privacy_pages",
    "burrow.control.web.support_pages",
    "burrow.control.web.affiliate_pages",
    "burrow.control.web.admin_pages",
)


class PageModulesWrong(RuntimeError):
    """``PAGE_MODULES`` names a module that is not there, or misses one that is."""


def unlisted_page_modules(listed: Iterable[str] = PAGE_MODULES) -> list[str]:
    """Modules of this package that make a page router nobody mounts.

    A module with a ``router`` must be in ``listed``, or be one of the ``SECTIONS`` of a
    listed package (the admin panel mounts its sections under ``/admin`` itself).
    """
    listed = set(listed)
    mounted = set(listed)
    for name in listed:
        sections = getattr(importlib.import_module(name), "SECTIONS", ())
        mounted.update(section.__name__ for section in sections)
    unlisted = []
    for info in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "router", None), APIRouter) and info.name not in mounted:
            unlisted.append(info.name)
    return sorted(unlisted)


def page_routers(listed: Iterable[str] = PAGE_MODULES) -> list[APIRouter]:
    """Each listed module's router, in order; fails loudly on a missing or unlisted module."""
    listed = tuple(listed)
    routers = []
    for name in listed:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # the module is there; something it imports is not
            raise PageModulesWrong(f"page module {name} is listed but does not exist") from exc
        router = getattr(module, "router", None)
        if not isinstance(router, APIRouter):
            raise PageModulesWrong(f"page module {name} has no router = page_router()")
        routers.append(router)
    unlisted = unlisted_page_modules(listed)
    if unlisted:
        raise PageModulesWrong(
            f"page modules that nothing mounts (add them to burrow.control.web.PAGE_MODULES "
            f"or their package's SECTIONS): {', '.join(unlisted)}"
        )
    return routers


def install(app: FastAPI) -> None:
    errors.install(app)
    for router in page_routers():
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
