"""Alembic environment of the delivery records: see `runner.run_migrations`."""

from __future__ import annotations

from modelferry.migrations.runner import run_migrations

run_migrations()
