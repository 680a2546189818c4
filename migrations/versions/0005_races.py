"""races: at most one open refund request per order

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-07

Twenty requests at the same moment could each store a request for the same order; a partial
unique index on the open states now refuses all but one. Open duplicates that exist already
are closed first: per order the request furthest along stays open (approved, then queued, then
evaluating; the oldest among equals), and the others are refused with a reason saying so.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ux_refund_requests_open_order"
OPEN = "status IN ('evaluating', 'queued', 'approved')"
RANK = {"approved": 0, "queued": 1, "evaluating": 2}


def _close_open_duplicates() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, order_id, status FROM refund_requests "
            "WHERE status IN ('evaluating', 'queued', 'approved') ORDER BY id"
        )
    ).all()
    by_order: dict[int, list[tuple[int, str]]] = {}
    for request_id, order_id, status in rows:
        by_order.setdefault(order_id, []).append((request_id, status))
    close = sa.text(
        "UPDATE refund_requests SET status = 'refused', decided_at = :now, "
        "decision_reason = :reason WHERE id = :id"
    ).bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True)))
    now = datetime.now(UTC)
    for requests in by_order.values():
        if len(requests) < 2:
            continue
        keep = min(requests, key=lambda r: (RANK[r[1]], r[0]))[0]
        for request_id, _status in requests:
            if request_id != keep:
                reason = f"A duplicate of refund request {keep}, made at the same moment."
                bind.execute(close, {"id": request_id, "reason": reason, "now": now})


def upgrade() -> None:
    _close_open_duplicates()
    with op.batch_alter_table("refund_requests", schema=None) as batch_op:
        batch_op.create_index(
            INDEX,
            ["order_id"],
            unique=True,
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("refund_requests", schema=None) as batch_op:
        batch_op.drop_index(INDEX, sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
