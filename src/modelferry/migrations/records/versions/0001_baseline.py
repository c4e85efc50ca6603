"""Baseline: the delivery record tables as the first release created them.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(255)
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `deliveries` and `delivery_transitions` with their indexes."""
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", _ID, primary_key=True),
        sa.Column("device_id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("package_id", _ID, nullable=False),
        sa.Column("package_version", _ID, nullable=False),
        sa.Column("model_name", _ID),
        sa.Column("model_version", _ID),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("rollout_id", _ID),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_deliveries_device", "deliveries", ["device_id", "created_at"])
    op.create_index("ix_deliveries_rollout", "deliveries", ["rollout_id"])
    op.create_table(
        "delivery_transitions",
        # SQLite only auto-increments an INTEGER PRIMARY KEY.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column(
            "delivery_id",
            _ID,
            sa.ForeignKey("deliveries.delivery_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("reported_at", _TIME),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("ignored", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_delivery_transitions_delivery_id", "delivery_transitions", ["delivery_id"])


def downgrade() -> None:
    """Drop the delivery record tables."""
    op.drop_table("delivery_transitions")
    op.drop_table("deliveries")
