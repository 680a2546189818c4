"""Rendering every error as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from burrow.control.errors import RESERVED_MEMBERS, BurrowError
from burrow.control.live.store import LiveStoreBusy
from burrow.control.plain_words import field_message

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# The schema every error response shares, for the OpenAPI document.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the given error statuses."""
    texts = {
        400: "Bad request",
        401: "Not signed in, or the token expired",
        403: "Not allowed for this caller",
        404: "Not found (or not yours)",
        409: "Conflicts with the current state",
        422: "Invalid input",
        410: "Gone",
        413: "The request body is too large",
        429: "Too many attempts; retry later",
    }
    return {
        status: {
            "description": texts.get(status, "Error"),
            "content": {
                PROBLEM_JSON: {
                    "schema": PROBLEM_SCHEMA,
                    "example": problem_body(
                        status, texts.get(status, "Error"), texts.get(status, "Error") + "."
                    ),
                }
            },
        }
        for status in statuses
    }


def problem_body(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem body whose ``status`` is the HTTP status, whatever ``extra`` holds."""
    return {
        **{k: v for k, v in extra.items() if k not in RESERVED_MEMBERS},
        "type": f"https://burrow.invalid/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
    }


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = problem_body(status, title, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


async def _burrow_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BurrowError)
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))  # never early
    return JSONResponse(
        exc.problem(), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers
    )


def _body_model(request: Request) -> type[BaseModel] | None:
    """The request body's schema of the matched operation (its own field messages), if any."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(body_field, "field_info", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    model = _body_model(request)
    for err in exc.errors():
        field = _field_of(tuple(err.get("loc", ())))
        message = field_message(model, field.split(".")[0], dict(err))
        errors.append({"field": field, "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
    return problem(422, "Invalid input", detail, errors=errors)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Not signed in"}
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and detail == "Not Found":
        detail = "There is nothing at this address."
    response = problem(exc.status_code, titles.get(exc.status_code, "Error"), detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _live_store_unreachable(request: Request, exc: Exception) -> JSONResponse:
    # Redis could not be reached, or every connection stayed busy past the wait: a moment's
    # trouble the caller can retry, not a fault of the request.
    log.warning("live store unavailable: %s", type(exc).__name__)
    return await _burrow_error(request, LiveStoreBusy())


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the operator's log (no request data in it), never to the caller.
    log.error("unhandled error", exc_info=exc)
    return problem(500, "Internal error", "Something went wrong on our side; please try again.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(BurrowError, _burrow_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _live_store_unreachable)
    app.add_exception_handler(RedisTimeoutError, _live_store_unreachable)
    app.add_exception_handler(Exception, _unexpected)
