"""Drives alembic programmatically: the script folders ship inside the package."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.resources import as_file, files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from modelferry.errors import DatabaseSchemaError
from modelferry.migrations.heads import VERSION_TABLES, SchemaUpgrade, Store

#: The revision that is the schema as it was before migrations existed.
BASELINE = "0001"

# alembic's `context` and `op` are process-wide proxies: two threads migrating at once
# would run each other's scripts.
_ALEMBIC_LOCK = threading.Lock()


@dataclass(frozen=True)
class _StoreSchema:
    version_table: str
    # A table that exists in every database of this store, migrated or not.
    marker_table: str
    # Columns added to the tables before migrations existed: (table, column, SQL type).
    added_columns: tuple[tuple[str, str, str], ...]
    # The baseline creates only missing tables, so an unversioned database is brought to
    # it by running it (else it is stamped: it has every table the baseline makes).
    idempotent_baseline: bool = False


_STORES: dict[Store, _StoreSchema] = {
    "records": _StoreSchema(VERSION_TABLES["records"], "deliveries", ()),
    "endpoints": _StoreSchema(
        VERSION_TABLES["endpoints"],
        "endpoints",
        (
            ("endpoints", "pending_releases", "TEXT"),
            ("traffic_history", "release", "TEXT"),
            ("endpoints", "pid_started_at", "REAL"),
        ),
        idempotent_baseline=True,
    ),
}


def upgrade_schema(connection: Connection, store: Store, where: str) -> SchemaUpgrade:
    """Bring the `store` database behind `connection` to the newest revision.

    Run inside a transaction (`engine.begin()`): on SQLite and PostgreSQL the DDL is
    transactional, so a failed upgrade leaves the database as it was.

    Args:
        connection: an open connection to the database.
        store: which of modelferry's databases it is.
        where: the database's URL (password masked) or path, for error messages.

    Raises:
        DatabaseSchemaError: the database is at a revision this modelferry does not know.
    """
    schema = _STORES[store]
    with _ALEMBIC_LOCK, as_file(files("modelferry.migrations") / store) as location:
        config = Config()
        config.set_main_option("script_location", str(location))
        config.attributes["connection"] = connection
        config.attributes["version_table"] = schema.version_table
        scripts = ScriptDirectory.from_config(config)
        head = scripts.get_current_head()
        assert head is not None, f"the {store} migrations have no head revision"
        before = _current_revision(connection, schema.version_table)
        unversioned = before is None and inspect(connection).has_table(schema.marker_table)
        if unversioned:
            _add_missing_columns(connection, schema.added_columns)
            if schema.idempotent_baseline:
                command.upgrade(config, BASELINE)
            else:
                command.stamp(config, BASELINE)
            before = BASELINE
        if before is not None and before not in {s.revision for s in scripts.walk_revisions()}:
            raise DatabaseSchemaError(
                f"the {store} database at {where} is at schema revision {before!r}, which "
                "this modelferry does not know: it was created by a newer modelferry; "
                "upgrade modelferry (pip install -U modelferry)",
                url=where,
            )
        if before != head:
            command.upgrade(config, "head")
    return SchemaUpgrade(before=before, after=head, unversioned=unversioned)


def run_migrations() -> None:
    """The body of each store's alembic `env.py`.

    Migrates the connection `upgrade_schema` passed in (never one made from a URL),
    recording in that store's version table.
    """
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


def _current_revision(connection: Connection, version_table: str) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    return context.get_current_revision()


def _add_missing_columns(connection: Connection, columns: tuple[tuple[str, str, str], ...]) -> None:
    inspector = inspect(connection)
    for table, column, kind in columns:
        if not inspector.has_table(table):
            continue  # created whole, with the column, by the baseline
        present = {found["name"] for found in inspector.get_columns(table)}
        if column not in present:
            # Names come from the constant above, never from input.
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
