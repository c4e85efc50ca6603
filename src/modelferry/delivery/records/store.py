"""The delivery record store: every delivery, every state it went through, what is installed.

Two tables, written through SQLAlchemy Core so any database SQLAlchemy speaks will do:
SQLite by default (`.modelferry/deliveries.db`), PostgreSQL in production
(`postgresql+psycopg://...`).

    deliveries            one row per delivery attempt: device, package, model, state, attempt
    delivery_transitions  every state reported or decided, with its time; ignored ones flagged

A final state (`Success`, `Error`, `TimedOut`, `Skipped`) is final: a later state for the
same delivery — a duplicate `Success`, an `Error` after `Success`, anything after
`TimedOut` — is kept as an *ignored* transition and never changes the delivery. The check
is one conditional UPDATE, so two writers cannot both end a delivery.

`DeliveryRecords` blocks; async code writes through `writer.AsyncDeliveryRecords`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from modelferry.delivery.protocol.messages import utc_now
from modelferry.delivery.protocol.states import FINAL_STATES, PENDING, SUCCESS
from modelferry.delivery.records.schema import (
    ADVANCE,
    CURRENT_STATE,
    END,
    INSERT_DELIVERY,
    INSERT_TRANSITION,
    DeliveryRecord,
    InstalledPackage,
    TransitionRecord,
    as_utc,
    create_records_engine,
    deliveries_table,
    delivery_from_row,
    json_safe,
    stored_time,
    transitions_table,
)
from modelferry.errors import DeliveryError

if TYPE_CHECKING:
    from modelferry.migrations import SchemaUpgrade

__all__ = [
    "DEFAULT_RECORDS_URL",
    "DeliveryRecord",
    "DeliveryRecords",
    "InstalledPackage",
    "TransitionRecord",
    "upgrade_records_schema",
]

DEFAULT_RECORDS_URL = "sqlite:///.modelferry/deliveries.db"


def upgrade_records_schema(engine: Engine) -> SchemaUpgrade:
    """Create or migrate the delivery tables behind `engine` to the newest revision.

    Raises:
        DeliveryError: the database cannot be reached or refuses the change.
        DatabaseSchemaError: the database was written by a newer modelferry.
    """
    from modelferry.data.masking import mask_url, scrub
    from modelferry.migrations import upgrade_schema

    secret_url = engine.url.render_as_string(hide_password=False)
    where = mask_url(secret_url)
    try:
        with engine.begin() as connection:
            return upgrade_schema(connection, "records", where)
    except SQLAlchemyError as exc:
        raise DeliveryError(
            f"could not create or migrate the delivery tables at {where}: "
            f"{scrub(str(exc), secret_url)}; check that the database is reachable and "
            "the user may create tables in it"
        ) from None


class DeliveryRecords:
    """Reads and writes delivery records; thread-safe, every write one transaction.

    Args:
        url: a SQLAlchemy URL; default SQLite at `.modelferry/deliveries.db` under the
            working directory. The tables are created when missing, and a database
            written by an earlier release is migrated (see `modelferry.migrations`).

    Raises:
        DeliveryError: the database cannot be reached or refuses the schema (the message
            shows the URL with its password masked).
        DatabaseSchemaError: the database was written by a newer modelferry.
    """

    def __init__(self, url: str = DEFAULT_RECORDS_URL) -> None:
        self._url = url
        self._batch = threading.local()
        self.engine = create_records_engine(url)
        try:
            upgrade_records_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        # The data package loads pandas; only an error message needs its masking.
        from modelferry.data.masking import mask_url

        return mask_url(self._url)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            from modelferry.data.masking import scrub

            raise DeliveryError(
                f"could not {doing} in the delivery records at {self.url}: "
                f"{scrub(str(exc), self._url)}; check that the database is reachable and "
                "the user may write to it"
            ) from None

    @contextmanager
    def _write(self, doing: str) -> Iterator[Connection]:
        shared: Connection | None = getattr(self._batch, "connection", None)
        if shared is not None:
            with self._guard(doing):
                yield shared
            return
        with self._guard(doing), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes this thread makes inside the block share one transaction: all or none.

        A rollout writes thousands of small transitions; one commit for many of them is
        what keeps a fleet's records from lagging behind its devices.
        """
        if getattr(self._batch, "connection", None) is not None:
            yield
            return
        with self._write("record a batch of deliveries") as connection:
            self._batch.connection = connection
            try:
                yield
            finally:
                self._batch.connection = None

    def create(
        self,
        *,
        delivery_id: str,
        device_id: str,
        project_id: str,
        package_id: str,
        package_version: str,
        model_name: str | None = None,
        model_version: str | None = None,
        attempt: int = 1,
        rollout_id: str | None = None,
        state: str = PENDING,
        error: str | None = None,
        at: datetime | None = None,
    ) -> DeliveryRecord:
        """Record a new delivery in `state` (normally `Pending`) and its first transition."""
        moment = stored_time(at or utc_now())
        record = DeliveryRecord(
            delivery_id=delivery_id,
            device_id=device_id,
            project_id=project_id,
            package_id=package_id,
            package_version=package_version,
            model_name=model_name,
            model_version=model_version,
            state=state,
            attempt=attempt,
            rollout_id=rollout_id,
            created_at=moment,
            updated_at=moment,
            ended_at=moment if state in FINAL_STATES else None,
            error=error,
        )
        with self._write(f"record delivery {delivery_id!r}") as connection:
            connection.execute(INSERT_DELIVERY, asdict(record))
            connection.execute(
                INSERT_TRANSITION,
                {
                    "delivery_id": delivery_id,
                    "state": state,
                    "at": moment,
                    "reported_at": None,
                    "attributes": {},
                    "ignored": False,
                    "note": error,
                },
            )
        return record

    def transition(
        self,
        delivery_id: str,
        state: str,
        *,
        at: datetime | None = None,
        reported_at: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        error: str | None = None,
        ignore: str | None = None,
    ) -> bool:
        """Record that a delivery is now in `state`.

        Args:
            delivery_id: the delivery.
            state: the new state; a final state also sets `ended_at` (and `error`).
            at: when it happened; default now.
            reported_at: the device's own timestamp for a reported state.
            attributes: what came with the state (progress, reason, versions).
            error: what went wrong, for `Error` and `TimedOut`.
            ignore: record the transition without applying it, for this reason (e.g. a
                report older than the current state).

        Returns:
            True when the delivery changed; False when the transition was only recorded as
            ignored (`ignore` was given, or the delivery had already ended).

        Raises:
            DeliveryError: no delivery has that id, or the database failed.
        """
        moment = stored_time(at or utc_now())
        with self._write(f"record state {state!r} of delivery {delivery_id!r}") as connection:
            applied = False
            if ignore is None:
                # The final-state check and the change are one statement: of two writers
                # ending the same delivery, exactly one wins.
                change = END if state in FINAL_STATES else ADVANCE
                params = {"b_id": delivery_id, "b_state": state, "b_at": moment, "b_error": error}
                applied = connection.execute(change, params).rowcount == 1
                if not applied:
                    current = connection.execute(CURRENT_STATE, {"b_id": delivery_id}).scalar()
                    if current is None:
                        raise DeliveryError(f"no delivery {delivery_id!r} is recorded")
                    ignore = f"delivery had already ended as {current}"
            connection.execute(
                INSERT_TRANSITION,
                {
                    "delivery_id": delivery_id,
                    "state": state,
                    "at": moment,
                    "reported_at": stored_time(reported_at) if reported_at else None,
                    "attributes": json_safe(attributes),
                    "ignored": not applied,
                    "note": ignore if not applied else error,
                },
            )
        return applied

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        """The delivery with this id, or None."""
        query = select(deliveries_table).where(deliveries_table.c.delivery_id == delivery_id)
        with self._guard(f"read delivery {delivery_id!r}"), self.engine.connect() as connection:
            row = connection.execute(query).first()
        return delivery_from_row(row) if row is not None else None

    def history(self, device_id: str, limit: int | None = None) -> list[DeliveryRecord]:
        """A device's deliveries, newest first."""
        table = deliveries_table
        query = (
            select(table)
            .where(table.c.device_id == device_id)
            .order_by(table.c.created_at.desc(), table.c.attempt.desc())
            .limit(limit)
        )
        with self._guard(f"read the history of {device_id!r}"), self.engine.connect() as db:
            return [delivery_from_row(row) for row in db.execute(query)]

    def rollout(self, rollout_id: str) -> list[DeliveryRecord]:
        """Every delivery attempt one rollout made, oldest first."""
        table = deliveries_table
        query = (
            select(table)
            .where(table.c.rollout_id == rollout_id)
            .order_by(table.c.created_at, table.c.device_id, table.c.attempt)
        )
        with self._guard(f"read rollout {rollout_id!r}"), self.engine.connect() as db:
            return [delivery_from_row(row) for row in db.execute(query)]

    def transitions(self, delivery_id: str) -> list[TransitionRecord]:
        """Every transition of a delivery, in the order recorded (ignored ones included)."""
        table = transitions_table
        query = select(table).where(table.c.delivery_id == delivery_id).order_by(table.c.id)
        with self._guard(f"read transitions of {delivery_id!r}"), self.engine.connect() as db:
            rows = db.execute(query).all()
        return [
            TransitionRecord(
                delivery_id=row.delivery_id,
                state=row.state,
                at=as_utc(row.at),
                reported_at=as_utc(row.reported_at) if row.reported_at is not None else None,
                attributes=row.attributes,
                ignored=row.ignored,
                note=row.note,
            )
            for row in rows
        ]

    def installed(self, project_id: str | None = None) -> list[InstalledPackage]:
        """Which package and model version each device runs: its latest `Success`, by device.

        Args:
            project_id: only deliveries of this project; default all.
        """
        table = deliveries_table
        latest = func.row_number().over(
            partition_by=table.c.device_id,
            order_by=(table.c.ended_at.desc(), table.c.created_at.desc()),
        )
        ranked = select(table, latest.label("rank")).where(table.c.state == SUCCESS)
        if project_id is not None:
            ranked = ranked.where(table.c.project_id == project_id)
        inner = ranked.subquery()
        query = select(inner).where(inner.c.rank == 1).order_by(inner.c.device_id)
        with self._guard("read installed packages"), self.engine.connect() as db:
            rows = db.execute(query).all()
        return [
            InstalledPackage(
                device_id=row.device_id,
                project_id=row.project_id,
                package_id=row.package_id,
                package_version=row.package_version,
                model_name=row.model_name,
                model_version=row.model_version,
                delivery_id=row.delivery_id,
                installed_at=as_utc(row.ended_at),
            )
            for row in rows
        ]
