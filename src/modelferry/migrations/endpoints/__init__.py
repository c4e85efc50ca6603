"""Migrations of the local endpoint state: its alembic environment and revisions."""
