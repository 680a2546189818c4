"""The OpenAPI document at /api/docs describes every endpoint and how it can fail."""

from __future__ import annotations

import httpx


async def test_every_operation_documents_its_errors(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    undocumented = []
    for path, item in document["paths"].items():
        if path == "/healthz":
            continue
        for method, operation in item.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            errors = {
                code: response
                for code, response in operation["responses"].items()
                if code.startswith("4")
            }
            problem_errors = [
                code
                for code, response in errors.items()
                if "application/problem+json" in response.get("content", {})
            ]
            takes_input = (
                operation.get("parameters")
                or operation.get("requestBody")
                or operation.get("security")
            )
            if takes_input and not problem_errors:
                undocumented.append(f"{method.upper()} {path}")
    assert not undocumented, f"operations without problem+json error responses: {undocumented}"


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
