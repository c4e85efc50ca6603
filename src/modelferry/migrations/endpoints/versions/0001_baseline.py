"""Baseline: the local endpoint state tables, with every column added before migrations.

Revision ID: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TABLES = (
    """CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    port INTEGER NOT NULL,
    pid INTEGER,
    scoring_key TEXT NOT NULL,
    admin_token TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    weights TEXT NOT NULL DEFAULT '{}',
    mirror TEXT NOT NULL DEFAULT '{}',
    tracking_uri TEXT NOT NULL,
    registry_uri TEXT,
    pending_releases TEXT,
    pid_started_at REAL
)""",
    """CREATE TABLE IF NOT EXISTS deployments (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (endpoint, name)
)""",
    """CREATE TABLE IF NOT EXISTS traffic_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    weights TEXT NOT NULL,
    mirror TEXT NOT NULL,
    replaced_at TEXT NOT NULL DEFAULT (datetime('now')),
    release TEXT
)""",
)


def upgrade() -> None:
    """Create `endpoints`, `deployments` and `traffic_history` where they are missing.

    `IF NOT EXISTS`: a state file from before migrations is brought to this baseline by
    running it, which adds only the tables that file lacks.
    """
    for statement in _TABLES:
        op.execute(statement)


def downgrade() -> None:
    """Drop the endpoint state tables."""
    for table in ("traffic_history", "deployments", "endpoints"):
        op.drop_table(table)
