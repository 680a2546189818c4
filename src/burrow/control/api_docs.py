"""``/api/docs``: Swagger UI served from this server only.

FastAPI's default page loads Swagger UI from a CDN, so every customer or operator who opened
the docs would tell a third party they did. A strict no-logs provider makes no browser call
a CDN: the same page is built with FastAPI's own ``get_swagger_ui_html`` and points at the
Swagger UI 5 files that the ``fastapi-offline`` package ships, mounted under
``/api/docs/assets``.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/api/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI, openapi_url: str) -> None:
    """Serve the docs page and its assets; the app is made with ``docs_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="api-docs-assets")

    # The page reads its app from the request, never from this function's scope: FastAPI keeps
    # every endpoint function in a process-wide cache, and a closure over ``app`` would keep
    # each app ever made (with its runtime and database engines) alive; tests make thousands.
    @app.get(DOCS_PATH, include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{request.app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
