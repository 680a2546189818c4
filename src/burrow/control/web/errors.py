"""Errors on web pages are pages, never problem+json and never a traceback.

The page header reads ``request.state.person``, the frozen ``auth.Person`` made at sign-in,
so an error page after the request's transaction rolled back never touches the database.
The API keeps its problem+json answers: these handlers wrap the ones ``problems.install``
registered and pass every request outside the web pages on to them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response

from burrow.control.errors import BurrowError
from burrow.control.web.auth import LoginRequired
from burrow.control.web.csrf import CsrfRefused
from burrow.control.web.templating import redirect, render

log = logging.getLogger(__name__)

HttpHandler = Callable[[Request, Exception], Response | Awaitable[Response]]

NOT_WEB_PREFIXES = ("/api/", "/node-api/", "/healthz", "/metrics", "/static/")

CSRF_MESSAGE = (
    "This form could not be accepted: it has expired or did not come from this site. "
    "Go back, reload the page and send it again."
)


UNEXPECTED_MESSAGE = "Something went wrong on our side; please try again in a moment."


def is_web(request: Request) -> bool:
    return not request.url.path.startswith(NOT_WEB_PREFIXES)


async def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "status": status},
        status_code=status,
    )


async def refusal_page(request: Request, status: int, title: str, message: str) -> Response:
    """A page for a request refused before it reached a page (too large, say)."""
    return await _error_page(request, status, title, message)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return redirect(request, exc.location, flash=exc.message, kind="info")


async def _csrf_refused(request: Request, _exc: Exception) -> Response:
    return await _error_page(request, 403, "Form refused", CSRF_MESSAGE)


def install(app: FastAPI) -> None:
    api_handlers: dict[type[Exception], HttpHandler] = {
        kind: cast(HttpHandler, app.exception_handlers[kind])
        for kind in (BurrowError, StarletteHTTPException, RequestValidationError, Exception)
        if kind in app.exception_handlers
    }

    async def burrow_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BurrowError)
        if not is_web(request):
            return await _delegate(BurrowError, request, exc)
        return await _error_page(request, exc.status, exc.title, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not is_web(request):
            return await _delegate(StarletteHTTPException, request, exc)
        if exc.status_code == 404:
            return await _error_page(request, 404, "Not found", "There is no page at this address.")
        if exc.status_code == 405:
            return await _error_page(
                request, 405, "Not allowed", "This page cannot be used that way."
            )
        detail = exc.detail if isinstance(exc.detail, str) else "The request was refused."
        return await _error_page(request, exc.status_code, "Refused", detail)

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not is_web(request):
            return await _delegate(RequestValidationError, request, exc)
        # Forms are validated by the pages themselves; this is a malformed address.
        return await _error_page(request, 404, "Not found", "There is no page at this address.")

    async def _delegate(kind: type[Exception], request: Request, exc: Exception) -> Response:
        answer = api_handlers[kind](request, exc)
        return answer if isinstance(answer, Response) else await answer

    async def unexpected(request: Request, exc: Exception) -> Response:
        if not is_web(request):
            return await _delegate(Exception, request, exc)
        log.error("unhandled error on a page", exc_info=exc)
        try:
            return await _error_page(request, 500, "Something went wrong", UNEXPECTED_MESSAGE)
        except Exception:  # the error page itself failed: plain words, no template
            return HTMLResponse(f"<h1>Something went wrong</h1><p>{UNEXPECTED_MESSAGE}</p>", 500)

    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(BurrowError, burrow_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
