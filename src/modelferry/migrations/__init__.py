"""Schema migrations of modelferry's own databases, run with alembic from inside the package.

Two stores, each with its own alembic environment and version table, so they migrate
independently (they may even share a database):

    records    the delivery records (SQLite or PostgreSQL), table `modelferry_records_version`
    endpoints  the local endpoint state (SQLite), table `modelferry_endpoints_version`

Opening a store calls `upgrade_schema`: a fresh database is created at the newest revision;
one written before migrations existed (its tables, no version table) gets the columns later
releases added, is stamped at the baseline and upgraded; one at a revision this release
does not know was written by a newer modelferry and is refused. Users need no alembic.ini:
`modelferry db upgrade` runs the same code. A SQLite file already at the newest revision
is recognised without alembic (`sqlite_schema_at_head`); names are imported on first use,
so that check does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.migrations.heads import SchemaUpgrade, Store, sqlite_schema_at_head
    from modelferry.migrations.runner import upgrade_schema

__all__ = ["SchemaUpgrade", "Store", "sqlite_schema_at_head", "upgrade_schema"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SchemaUpgrade": "heads",
        "Store": "heads",
        "sqlite_schema_at_head": "heads",
        "upgrade_schema": "runner",
    },
)
