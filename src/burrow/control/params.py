"""Path and query parameter types every domain's endpoints share."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

# Ids are BIGINT on PostgreSQL; a larger number can only be "not found", so it is refused as
# invalid input before it reaches the database (where it would be an error, not a 404).
MAX_ID = 2**63 - 1

AccountId = Annotated[int, Path(ge=1, le=MAX_ID, description="The account's id.")]


def id_path(description: str) -> Any:
    """A positive database id in the path."""
    return Path(ge=1, le=MAX_ID, description=description)
