"""Migrations of the delivery records: their alembic environment and revisions."""
