"""Fixtures shared by the node agent's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .netns import Lab


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A lab of namespaces, torn down (processes stopped, namespaces deleted) even on failure."""
    with Lab() as lab:
        yield lab
