"""Schema migrations of modelferry's own databases, run with alembic from inside the package.

Two stores, each with its own alembic environment and version table, so they migrate
independently (they may even share a database):

    records    the delivery records (SQLite or PostgreSQL), table `modelferry_records_version`
    endpoints  the local endpoint state (SQLite), table `modelferry_endpoints_version`

Opening a store calls `upgrade_schema`: a fresh database is created at the newest revision;
one written before migrations existed (its tables, no version table) gets the columns later
releases added, is stamped at the baseline and upgraded; one at a revision this release
does not know was written by a newer modelferry and is refused. Users need no alembic.ini:
`modelferry db upgrade` runs the same code.
"""

from modelferry.migrations.runner import SchemaUpgrade, Store, upgrade_schema

__all__ = ["SchemaUpgrade", "Store", "upgrade_schema"]
