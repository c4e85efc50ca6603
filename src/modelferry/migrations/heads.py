"""Each store's newest schema revision, and a cheap check that a SQLite file is at it.

Free of alembic and SQLAlchemy: opening a database that is already migrated (every
`modelferry endpoints list`, every endpoint server start) needs neither, and the two
cost about as much start-up time as the rest of such a command. `HEADS` is checked
against the alembic scripts by the tests, so a new migration cannot forget it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = ["HEADS", "VERSION_TABLES", "SchemaUpgrade", "Store", "sqlite_schema_at_head"]

Store = Literal["records", "endpoints"]

#: The newest revision of each store: the head of its alembic scripts.
HEADS: Final[Mapping[Store, str]] = {"records": "0001", "endpoints": "0001"}
#: Where each store records its revision (alembic's version table).
VERSION_TABLES: Final[Mapping[Store, str]] = {
    "records": "modelferry_records_version",
    "endpoints": "modelferry_endpoints_version",
}


@dataclass(frozen=True)
class SchemaUpgrade:
    """What an upgrade did: the revision before (None: no schema yet) and after.

    `unversioned` is True when the database predated migrations: it had the tables but no
    version table, and was stamped at the baseline (`before`) first.
    """

    before: str | None
    after: str
    unversioned: bool = False


def sqlite_schema_at_head(path: Path, store: Store) -> SchemaUpgrade | None:
    """An "up to date" report when the SQLite file at `path` is at the newest revision.

    Read-only, and None in every other case (no file, no version table, an older or a
    newer revision, a file that is no database): then the caller migrates with
    `upgrade_schema`, which also reports what is wrong.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            rows = db.execute(f"SELECT version_num FROM {VERSION_TABLES[store]}").fetchall()
    except sqlite3.Error:
        return None
    head = HEADS[store]
    return SchemaUpgrade(before=head, after=head) if rows == [(head,)] else None
