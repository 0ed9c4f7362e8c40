"""Baseline: the schema the release before migrations made with ``metadata.create_all``.

A database made by that release (its tables, no revision table) is stamped at this
revision rather than upgraded through it. Frozen: later changes are later revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _state_tables() -> None:
    op.create_table(
        "model_state",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def _intake_tables() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "triggers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("dedup_key", sa.String(500), unique=True, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("notification_id", sa.Integer, nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("cycle_id", sa.String(200), nullable=True),
        sa.Column("processed_at", _TS, nullable=True),
    )
    op.create_index("ix_triggers_model", "triggers", ["model"])


def _history_tables() -> None:
    op.create_table(
        "cycles",
        sa.Column("cycle_id", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("challenger", sa.Integer, nullable=True),
        sa.Column("champion", sa.Integer, nullable=True),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_cycles_model", "cycles", ["model"])
    op.create_table(
        "decisions",
        sa.Column("cycle_id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_decisions_model", "decisions", ["model"])


def upgrade() -> None:
    _state_tables()
    _intake_tables()
    _history_tables()


def downgrade() -> None:
    for table in ("decisions", "cycles", "triggers", "notifications", "leases", "model_state"):
        op.drop_table(table)
