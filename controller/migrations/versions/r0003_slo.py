"""The SLO tables: each SLO evaluation of a model, and each exhausted error budget.

``slo_evaluations`` is the history the error budget is computed from (controller/slo.py):
one row per evaluation (good, bad or unknown), kept for the SLO's period. ``slo_exhaustions``
records when a budget ran out and what the controller did (a retrain trigger, a ticket, or
nothing), so that one exhaustion asks once per period, across restarts and replicas.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "slo_evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("slo", sa.String(100), nullable=False),
        sa.Column("evaluated_at", _TS, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("objective", sa.Float, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_index("ix_slo_evaluations_model_slo_at", "slo_evaluations",
                    ["model", "slo", "evaluated_at"])
    op.create_table(
        "slo_exhaustions",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("slo", sa.String(100), primary_key=True),
        sa.Column("exhausted_at", _TS, primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("remaining", sa.Float, nullable=False),
        sa.Column("trigger_id", sa.Integer, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("slo_exhaustions")
    op.drop_index("ix_slo_evaluations_model_slo_at", table_name="slo_evaluations")
    op.drop_table("slo_evaluations")
