"""Alembic environment: runs on the connection `upgrade_schema` passes in, never from a URL."""

from __future__ import annotations

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    version_table=config.attributes["version_table"],
    # SQLite alters a table by copying it; batch mode lets a migration do that.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
