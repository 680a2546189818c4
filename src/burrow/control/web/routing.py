"""How a page module makes its router.

Every page router stays out of the OpenAPI document and checks the CSRF token of every form
posted to it. A new module makes ``router = page_router()`` and is named in
``burrow.control.web.PAGE_MODULES``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from burrow.control.web.csrf import verify_csrf


def page_router(**kwargs: Any) -> APIRouter:
    kwargs.setdefault("default_response_class", HTMLResponse)
    dependencies = [Depends(verify_csrf), *kwargs.pop("dependencies", [])]
    return APIRouter(include_in_schema=False, dependencies=dependencies, **kwargs)
