"""``burrow admin`` and ``burrow account`` commands. (to be built)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
