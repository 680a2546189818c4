"""Only services write the admin audit trail: no edge (an API endpoints module, a web page, the
node API, a command of the CLI) records an action itself, so none can forget it or write it
in another unit of work than the change. The edges pass the actor to a service method that
records itself (see ``burrow.control.audit.service``)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "burrow"
AUDIT_MODULE = "burrow.control.audit.service"
# Names that write the trail (or its rows) when an edge holds them.
WRITERS = {"AdminAuditService", "AdminActionRepository", "AdminAction"}
# Edges whose actions are still to move into their services (empty: keep it so).
STILL_TO_MOVE: set[str] = set()


def _edges() -> list[Path]:
    control = SRC / "control"
    files = sorted(control.glob("*/endpoints.py"))
    for room in (control / "web", control / "node_api", SRC / "cli"):
        files += sorted(room.rglob("*.py"))
    return files


def direct_records(source: str) -> list[str]:
    """Where ``source`` writes the trail itself: ``admin_audit.record`` under any alias or
    module path, or the service, repository or row class of the trail."""
    tree = ast.parse(source)
    audit_names = {"admin_audit"}  # the service's instance, under any alias it was given
    modules = set()  # names the audit module itself was imported as
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == AUDIT_MODULE:
            audit_names |= {a.asname or a.name for a in node.names if a.name == "admin_audit"}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == AUDIT_MODULE and a.asname}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "record":
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in audit_names:
                found.append(f"line {node.lineno}: {owner.id}.record")
            elif isinstance(owner, ast.Attribute) and owner.attr == "admin_audit":
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Attribute) and node.attr == "admin_audit":
            if isinstance(node.value, ast.Name) and node.value.id in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Name) and node.id in WRITERS:
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.alias) and node.name in WRITERS:
            found.append(f"line {getattr(node, 'lineno', '?')}: import {node.name}")
    return sorted(set(found))


def test_no_edge_writes_the_audit_trail_itself() -> None:
    edges = _edges()
    assert len(edges) > 20  # the globs still find the edges
    offenders = {
        str(path.relative_to(SRC.parent)): found
        for path in edges
        if (found := direct_records(path.read_text(encoding="utf-8")))
    }
    late = {path: found for path, found in offenders.items() if path not in STILL_TO_MOVE}
    assert late == {}, (
        "These edges write the admin audit trail themselves; make the action a service "
        f"method that takes the actor and records itself: {late}"
    )
    assert set(offenders) == STILL_TO_MOVE, "moved: take it off STILL_TO_MOVE"


def test_the_check_sees_every_spelling_of_a_direct_record() -> None:
    spelled = {
        "from burrow.control.audit.service import admin_audit\n"
        "async def f(s, a):\n    await admin_audit.record(s, a, 'x.y', 't', 1)\n": 1,
        "from burrow.control.audit.service import admin_audit as trail\nwrite = trail.record\n": 1,
        "import burrow.control.audit.service as audit\n"
        "async def f(s, a):\n    await audit.admin_audit.record(s, a, 'x.y', 't', 1)\n": 1,
        "from burrow.control.audit.repository import AdminActionRepository\n": 1,
        "from burrow.control.models import AdminAction\nrow = AdminAction(action='x')\n": 2,
        # Reading the trail is fine, and so is another service's own ``record``.
        "from burrow.control.audit.service import admin_audit\n"
        "async def f(s):\n    await admin_audit.search(s)\n    await usage.record(s)\n": 0,
    }
    for source, expected in spelled.items():
        assert len(direct_records(source)) >= expected, source
        if expected == 0:
            assert direct_records(source) == [], source
