"""The schema of the delivery record store.

The tables, the statements written often, the records rows are read into, and the engine
that reaches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from modelferry.delivery.protocol.body import bounded_attributes
from modelferry.delivery.protocol.states import FINAL_STATES

ID = String(255)
metadata = MetaData()

deliveries_table = Table(
    "deliveries",
    metadata,
    Column("delivery_id", ID, primary_key=True),
    Column("device_id", ID, nullable=False),
    Column("project_id", ID, nullable=False),
    Column("package_id", ID, nullable=False),
    Column("package_version", ID, nullable=False),
    Column("model_name", ID),
    Column("model_version", ID),
    Column("state", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("rollout_id", ID),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("error", Text),
    Index("ix_deliveries_device", "device_id", "created_at"),
    Index("ix_deliveries_rollout", "rollout_id"),
)

transitions_table = Table(
    "delivery_transitions",
    metadata,
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "delivery_id",
        ID,
        ForeignKey("deliveries.delivery_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("state", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True)),
    Column("attributes", JSON, nullable=False),
    Column("ignored", Boolean, nullable=False),
    Column("note", Text),
)


# Built once: a rollout writes thousands of transitions, and building a statement costs
# more than running it. `ended_at` is set exactly when a delivery reached a final state.
_columns = deliveries_table.c
ADVANCE = (
    deliveries_table.update()
    .where(_columns.delivery_id == bindparam("b_id"), _columns.ended_at.is_(None))
    .values(state=bindparam("b_state"), updated_at=bindparam("b_at"))
)
END = ADVANCE.values(ended_at=bindparam("b_at"), error=bindparam("b_error"))
CURRENT_STATE = select(_columns.state).where(_columns.delivery_id == bindparam("b_id"))
INSERT_TRANSITION = transitions_table.insert()
INSERT_DELIVERY = deliveries_table.insert()


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt to one device, as recorded."""

    delivery_id: str
    device_id: str
    project_id: str
    package_id: str
    package_version: str
    model_name: str | None
    model_version: str | None
    state: str
    attempt: int
    rollout_id: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    error: str | None

    @property
    def final(self) -> bool:
        """True once the delivery reached a final state."""
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class TransitionRecord:
    """One state a delivery was reported or decided to be in.

    `at` is when we recorded it; `reported_at` is the device's own timestamp, when it
    reported the state. `ignored` transitions did not change the delivery; `note` says why.
    """

    delivery_id: str
    state: str
    at: datetime
    reported_at: datetime | None
    attributes: Mapping[str, Any]
    ignored: bool
    note: str | None


@dataclass(frozen=True)
class InstalledPackage:
    """What a device runs: its latest successful delivery."""

    device_id: str
    project_id: str
    package_id: str
    package_version: str
    model_name: str | None
    model_version: str | None
    delivery_id: str
    installed_at: datetime


def as_utc(moment: datetime) -> datetime:
    """`moment` as timezone-aware UTC."""
    # SQLite keeps no zone: everything is stored as UTC and read back as UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_time(moment: datetime) -> datetime:
    """`moment` in UTC, as stored; naive times are refused."""
    if moment.tzinfo is None:
        raise ValueError("delivery record times must be timezone-aware")
    return moment.astimezone(UTC)


def json_safe(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes as plain, valid JSON values, bounded in size (see `bounded_attributes`)."""
    # Devices send any JSON; what a JSON column could not hold (NaN, 5 MB) is not stored.
    return bounded_attributes(attributes)


def delivery_from_row(row: Row[Any]) -> DeliveryRecord:
    """A `deliveries` row as a record."""
    values = row._mapping
    ended = values["ended_at"]
    return DeliveryRecord(
        delivery_id=values["delivery_id"],
        device_id=values["device_id"],
        project_id=values["project_id"],
        package_id=values["package_id"],
        package_version=values["package_version"],
        model_name=values["model_name"],
        model_version=values["model_version"],
        state=values["state"],
        attempt=values["attempt"],
        rollout_id=values["rollout_id"],
        created_at=as_utc(values["created_at"]),
        updated_at=as_utc(values["updated_at"]),
        ended_at=as_utc(ended) if ended is not None else None,
        error=values["error"],
    )


def create_records_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder, WAL and foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if not database or database == ":memory:":
        # One shared connection, or each thread would see its own empty database.
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL lets the CLI read while a rollout writes; NORMAL is durable across crashes of
        # the process, which is what a record of deliveries needs.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
