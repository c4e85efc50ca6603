"""The local backend's state: which endpoints exist, on which port, serving what.

One small SQLite file is shared by the CLI, the flows and the endpoint server processes,
so all of them — and a restarted machine — agree on what runs where. Only the backend
writes; server processes read it when told to reload.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from modelferry.endpoints.spec import DeploymentStatus, TrafficSplit
from modelferry.errors import EndpointError, InvalidEndpointSpecError

if TYPE_CHECKING:
    from modelferry.migrations import SchemaUpgrade

_ENDPOINT_COLUMNS = (
    "name, port, pid, scoring_key, admin_token, description, tags, weights, mirror, "
    "tracking_uri, registry_uri, pid_started_at"
)


def upgrade_endpoint_schema(path: Path) -> SchemaUpgrade:
    """Create or migrate the state tables in the SQLite file at `path` to the newest revision.

    A file written before migrations existed gains the columns added since, keeping every
    endpoint and its history. The file is made readable by its owner only.
    """
    from modelferry.migrations import sqlite_schema_at_head

    # Most opens find the file migrated: that needs no alembic nor SQLAlchemy (start-up).
    if (at_head := sqlite_schema_at_head(path, "endpoints")) is not None:
        path.chmod(0o600)
        return at_head

    from sqlalchemy import Connection, create_engine, event

    from modelferry.migrations import upgrade_schema

    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    # The driver would begin a transaction only at the first write, and not for DDL:
    # an explicit BEGIN IMMEDIATE makes the migration one transaction and lets the CLI,
    # the flows and the servers, opening the file at once, migrate it one after another.
    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as connection:
            upgrade = upgrade_schema(connection, "endpoints", str(path))
    finally:
        engine.dispose()
    # Scoring keys live here: only the owner may read the file.
    path.chmod(0o600)
    return upgrade


@dataclass(frozen=True)
class EndpointRecord:
    """One endpoint row; the keys are secrets and never printed.

    `pid_started_at` is when the server process `pid` started (seconds since the epoch):
    with it, a process that later got the same pid is not taken for the server. None
    when no server was started, or the row was written before start times were kept.
    """

    name: str
    port: int
    pid: int | None
    scoring_key: SecretStr
    admin_token: SecretStr
    description: str
    tags: dict[str, str]
    traffic: TrafficSplit
    tracking_uri: str
    registry_uri: str | None
    pid_started_at: float | None = None


@dataclass(frozen=True)
class TrafficChange:
    """One history entry: the split a traffic change replaced.

    `release` names the release the change began (e.g. "green (v2)"), None for a later
    step of it or a change by hand.
    """

    replaced: TrafficSplit
    release: str | None


@dataclass(frozen=True)
class DeploymentRecord:
    """One deployment row."""

    endpoint: str
    name: str
    model_name: str
    model_version: str
    status: DeploymentStatus
    detail: str = ""


class EndpointStateStore:
    """Reads and writes the state file; every write is one transaction."""

    def __init__(self, path: Path) -> None:
        """Open the state database at `path`, creating or migrating its tables.

        Raises:
            DatabaseSchemaError: the file was written by a newer modelferry.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        upgrade_endpoint_schema(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db
        finally:
            db.close()

    def get_endpoint(self, name: str) -> EndpointRecord | None:
        """The endpoint named `name`, or None."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE name = ?", (name,)
            ).fetchone()
        return _endpoint(row, self.path) if row else None

    def list_endpoints(self) -> list[EndpointRecord]:
        """Every endpoint, by name."""
        with self._connect() as db:
            rows = db.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints ORDER BY name").fetchall()
        return [_endpoint(row, self.path) for row in rows]

    def put_endpoint(self, record: EndpointRecord) -> None:
        """Insert an endpoint row, or update it (its deployments are kept).

        The keys are written only when the row is inserted: a record read before a key
        rotation (`set_scoring_key`) and written back after it cannot bring the old key back.
        """
        with self._connect() as db:
            db.execute(
                """INSERT INTO endpoints (name, port, pid, scoring_key, admin_token,
                       description, tags, weights, mirror, tracking_uri, registry_uri,
                       pid_started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET port = excluded.port, pid = excluded.pid,
                       pid_started_at = excluded.pid_started_at,
                       description = excluded.description, tags = excluded.tags,
                       weights = excluded.weights, mirror = excluded.mirror,
                       tracking_uri = excluded.tracking_uri,
                       registry_uri = excluded.registry_uri""",
                (
                    record.name,
                    record.port,
                    record.pid,
                    record.scoring_key.get_secret_value(),
                    record.admin_token.get_secret_value(),
                    record.description,
                    json.dumps(record.tags),
                    json.dumps(dict(record.traffic.weights)),
                    json.dumps(dict(record.traffic.mirror)),
                    record.tracking_uri,
                    record.registry_uri,
                    record.pid_started_at,
                ),
            )

    def mark_release(self, endpoint: str, deployments: Iterable[str]) -> None:
        """Note that `deployments` hold a model version that has not had traffic yet.

        The next change that gives one of them traffic begins its release.
        """
        with self._connect() as db:
            pending = _pending(db, endpoint) | set(deployments)
            db.execute(
                "UPDATE endpoints SET pending_releases = ? WHERE name = ?",
                (json.dumps(sorted(pending)), endpoint),
            )

    def push_traffic(
        self, endpoint: str, replaced: TrafficSplit, new: TrafficSplit, labels: dict[str, str]
    ) -> None:
        """Remember the split `new` replaces, so it can be rolled back to.

        If `new` gives traffic to deployments awaiting their release (see `mark_release`)
        and `replaced` gave them none, the entry begins their release, labelled with
        `labels[deployment]`.
        """
        with self._connect() as db:
            pending = _pending(db, endpoint)
            released = sorted(
                name
                for name in pending
                if new.weights.get(name, 0) > 0 and replaced.weights.get(name, 0) == 0
            )
            if released:
                db.execute(
                    "UPDATE endpoints SET pending_releases = ? WHERE name = ?",
                    (json.dumps(sorted(pending - set(released))), endpoint),
                )
            db.execute(
                "INSERT INTO traffic_history (endpoint, weights, mirror, release) "
                "VALUES (?, ?, ?, ?)",
                (
                    endpoint,
                    json.dumps(dict(replaced.weights)),
                    json.dumps(dict(replaced.mirror)),
                    " and ".join(labels.get(n, n) for n in released) or None,
                ),
            )

    def traffic_history(self, endpoint: str) -> list[TrafficChange]:
        """The endpoint's recorded traffic changes, most recent first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT weights, mirror, release FROM traffic_history WHERE endpoint = ? "
                "ORDER BY id DESC",
                (endpoint,),
            ).fetchall()
        where = _Field(self.path, endpoint, "traffic_history")
        return [TrafficChange(_split(where, w, m), release) for w, m, release in rows]

    def drop_traffic_history(self, endpoint: str, count: int) -> None:
        """Forget the `count` most recent traffic changes (they were rolled back)."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM traffic_history WHERE id IN (SELECT id FROM traffic_history "
                "WHERE endpoint = ? ORDER BY id DESC LIMIT ?)",
                (endpoint, count),
            )

    def set_scoring_key(self, endpoint: str, key: SecretStr) -> None:
        """Replace the endpoint's scoring key."""
        with self._connect() as db:
            db.execute(
                "UPDATE endpoints SET scoring_key = ? WHERE name = ?",
                (key.get_secret_value(), endpoint),
            )

    def delete_endpoint(self, name: str) -> None:
        """Remove an endpoint, its deployments and history (nothing if it is not there)."""
        with self._connect() as db:
            db.execute("DELETE FROM traffic_history WHERE endpoint = ?", (name,))
            db.execute("DELETE FROM deployments WHERE endpoint = ?", (name,))
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    def list_deployments(self, endpoint: str) -> list[DeploymentRecord]:
        """The endpoint's deployments, by name."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT endpoint, name, model_name, model_version, status, detail "
                "FROM deployments WHERE endpoint = ? ORDER BY name",
                (endpoint,),
            ).fetchall()
        return [DeploymentRecord(*row) for row in rows]

    def put_deployment(self, record: DeploymentRecord) -> None:
        """Insert or replace a deployment row."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.endpoint,
                    record.name,
                    record.model_name,
                    record.model_version,
                    record.status,
                    record.detail,
                ),
            )

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Remove one deployment row (nothing if it is not there)."""
        with self._connect() as db:
            db.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name))


def _pending(db: sqlite3.Connection, endpoint: str) -> set[str]:
    row = db.execute(
        "SELECT pending_releases FROM endpoints WHERE name = ?", (endpoint,)
    ).fetchone()
    return set(json.loads(row[0])) if row and row[0] else set()


def _endpoint(row: tuple[object, ...], path: Path) -> EndpointRecord:
    (name, port, pid, key, token, description, tags, weights, mirror, uri, registry, started) = row
    where = _Field(path, str(name), "endpoints")
    return EndpointRecord(
        name=str(name),
        port=int(str(port)),
        pid=int(str(pid)) if pid is not None else None,
        scoring_key=SecretStr(str(key)),
        admin_token=SecretStr(str(token)),
        description=str(description),
        tags=_mapping(where, "tags", tags, str),
        traffic=_split(where, weights, mirror),
        tracking_uri=str(uri),
        registry_uri=str(registry) if registry is not None else None,
        pid_started_at=float(str(started)) if started is not None else None,
    )


@dataclass(frozen=True)
class _Field:
    """Where a stored value was read: for errors that say how to mend the file."""

    path: Path
    endpoint: str
    table: str


def _split(where: _Field, weights: object, mirror: object) -> TrafficSplit:
    split = (_mapping(where, "weights", weights, int), _mapping(where, "mirror", mirror, int))
    try:
        return TrafficSplit(*split)
    except InvalidEndpointSpecError as exc:
        problem, stored = str(exc), f"weights {split[0]}, mirror {split[1]}"
        raise _unreadable(where, ("weights", "mirror"), stored, problem) from exc


def _mapping(
    where: _Field, column: str, raw: object, kind: type[int] | type[str]
) -> dict[str, Any]:
    """The JSON object in `column`: names to `kind` values (the file can be edited by hand)."""
    try:
        value = json.loads(str(raw))
    except ValueError:
        value = None
    valid = isinstance(value, dict) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value.values()
    )
    if not valid:
        expected = "names to whole percentages" if kind is int else "names to text"
        raise _unreadable(where, (column,), raw, f"expected a JSON object of {expected}")
    return dict(value)


def _unreadable(
    where: _Field, columns: tuple[str, ...], raw: object, problem: str
) -> EndpointError:
    if where.table == "endpoints":
        reset = ", ".join(f"{column} = '{{}}'" for column in columns)
        mend = f"UPDATE endpoints SET {reset} WHERE name = '{where.endpoint}'"
    else:  # forgets what `endpoints rollback` could undo, nothing else
        mend = f"DELETE FROM traffic_history WHERE endpoint = '{where.endpoint}'"
    return EndpointError(
        f"endpoint {where.endpoint!r}: the state file {where.path} holds an unreadable "
        f"{where.table}.{'/'.join(columns)} ({str(raw)!r:.80}: {problem}); it was edited "
        "or damaged. "
        f'Mend it, e.g. sqlite3 {where.path} "{mend}", then check the endpoint with '
        f"`modelferry endpoints show {where.endpoint}`"
    )
