"""Indexes for the pending-trigger scan and the retention purge.

``Store.pending_triggers`` filters triggers by (model, status) on every pass, and
``Store.purge`` deletes old notifications by ``received_at``; without these both scan
their whole table, which grows with every webhook.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_triggers_model_status", "triggers", ["model", "status"])
    op.create_index("ix_notifications_received_at", "notifications", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_received_at", table_name="notifications")
    op.drop_index("ix_triggers_model_status", table_name="triggers")
