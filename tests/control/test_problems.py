"""Every problem+json body's ``status`` is the HTTP status it is sent with."""

from __future__ import annotations

import importlib
import pkgutil
import socket
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

import burrow.control
from burrow.control import problems
from burrow.control.errors import RESERVED_MEMBERS, BurrowError, Conflict
from burrow.control.live import Kind, RedisLiveStore
from burrow.control.models import PrivacyRequest, PrivacyRequestStatus
from burrow.control.privacy.service import PrivacyRequestClosed


def _all_error_classes() -> list[type[BurrowError]]:
    for module in pkgutil.walk_packages(burrow.control.__path__, "burrow.control."):
        importlib.import_module(module.name)
    found: list[type[BurrowError]] = []
    todo: list[type[BurrowError]] = [BurrowError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/api/v1/x", "headers": []})


async def test_a_closed_privacy_request_answers_409_with_status_409() -> None:
    closed = PrivacyRequest(id=7, status=PrivacyRequestStatus.done)
    response = await problems._burrow_error(_request(), PrivacyRequestClosed(closed))
    body = httpx.Response(response.status_code, content=response.body).json()
    assert response.status_code == 409
    assert body["status"] == 409
    assert body["request_status"] == "done"


def test_an_error_cannot_take_a_problem_members_name() -> None:
    for member in sorted(RESERVED_MEMBERS):
        with pytest.raises(TypeError, match="problem's own"):
            Conflict("taken", **{member: "x"})


@pytest.mark.parametrize("kind", _all_error_classes(), ids=lambda k: k.__qualname__)
def test_every_error_class_declares_an_error_status(kind: type[BurrowError]) -> None:
    assert isinstance(kind.status, int)
    assert 400 <= kind.status <= 599
    assert kind.title


def test_the_renderer_keeps_the_http_status_whatever_extras_hold() -> None:
    response = problems.problem(409, "Conflict", "already done", type="x", instance="y")
    body = httpx.Response(response.status_code, content=response.body).json()
    assert body["status"] == response.status_code == 409
    assert body["type"].startswith("https://burrow.invalid/problems/")
    assert "instance" not in body


def _problem_responses(document: dict[str, Any]) -> list[tuple[str, str, int, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {}).get(problems.PROBLEM_JSON)
                if content is not None:
                    found.append((path, method, int(code), content))
    return found


def test_every_openapi_error_example_has_its_own_status(app: FastAPI) -> None:
    found = _problem_responses(app.openapi())
    assert len(found) > 20
    for path, method, code, content in found:
        example = content.get("example")
        assert example is not None, f"{method} {path} {code}: no example"
        assert example["status"] == code, f"{method} {path} {code}: example says {example}"


async def test_an_unreachable_live_store_is_a_503_to_retry_not_a_500() -> None:
    """Redis down (or no free connection in time) is a moment's trouble: 503, Retry-After."""
    app = FastAPI()
    problems.install(app)
    dead = RedisLiveStore.from_url(f"redis://127.0.0.1:{_closed_port()}/0")

    @app.get("/live")
    async def live() -> list[int]:
        return await dead.stamps(Kind("test:", int, versioned=True), ["a"])

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/live")
    await dead.close()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(problems.PROBLEM_JSON)
    assert response.headers["retry-after"] == "2"
    assert response.json()["status"] == 503
    assert "try again" in response.json()["detail"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
