"""Errors that carry their meaning; the edge (API, web, CLI) translates them.

Each domain declares its own subclasses at the top of its ``service.py``.
"""

from __future__ import annotations

from typing import Any

# RFC 9457's own members of a problem body: an error's extras may not reuse their names.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class BurrowError(Exception):
    """An error a customer or operator can act on."""

    status: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        clash = RESERVED_MEMBERS.intersection(extra)
        if clash:
            raise TypeError(f"problem members {sorted(clash)} are the problem's own; rename them")
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        if self.field:
            body["field"] = self.field
        body.update(
            type=f"https://burrow.invalid/problems/{self.type_slug}",
            title=self.title,
            status=self.status,
            detail=self.message,
        )
        return body


class InvalidInput(BurrowError):
    status = 422
    title = "Invalid input"
    type_slug = "invalid-input"


class NotAuthenticated(BurrowError):
    status = 401
    title = "Not signed in"
    type_slug = "not-authenticated"


class Forbidden(BurrowError):
    status = 403
    title = "Not allowed"
    type_slug = "forbidden"


class CrossSiteRequest(Forbidden):
    type_slug = "cross-site-request"

    def __init__(self) -> None:
        super().__init__(
            "This request came from another website, so it was refused. Use the control "
            "panel, or send your session token as a bearer token from your own program."
        )


class NotFound(BurrowError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(BurrowError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Busy(BurrowError):
    """A moment's overload (a lock, a connection not had in time): retry shortly."""

    status = 503
    title = "Busy"
    type_slug = "busy"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyRequests(BurrowError):
    status = 429
    title = "Too many attempts"
    type_slug = "too-many-requests"

    def __init__(self, message: str, *, retry_after: float, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after
