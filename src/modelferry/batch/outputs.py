"""Where a batch run's predictions go: one streamed file, and optionally a SQL table.

Both sinks are all-or-nothing: the file appears under its name only when committed, and
the SQL rows are inserted in one transaction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, RootTransaction, create_engine
from sqlalchemy.exc import DBAPIError

from modelferry.batch.scoring import FILE_COLUMN, PARQUET_SUFFIXES
from modelferry.data.masking import mask_url, scrub
from modelferry.errors import BatchScoringError

_T = TypeVar("_T")

# A spreadsheet opening the CSV runs a cell starting with one of these as a formula
# (OWASP "CSV injection"); a leading single quote makes it plain text. Only text cells
# are touched: a probability of -0.5 is a number, not a formula.
_FORMULA_START = r"^([=+\-@\t\r])"
_FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")


def _neutralise_text(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_CHARS) else text


def _neutralise_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = [
        pc.replace_substring_regex(column, pattern=_FORMULA_START, replacement=r"'\1")
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


class PredictionFile:
    """Streams record batches into one Parquet (``.parquet``/``.pq``) or CSV file.

    Batches go to a hidden partial file beside `path`, renamed to `path` on `commit`, so a
    failed run never leaves a truncated file that looks finished.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        """Create the partial file (and `path`'s folder) and write its header."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
        self._writer: Any
        self._parquet = path.suffix.lower() in PARQUET_SUFFIXES
        if self._parquet:
            # The file names go in as a dictionary, already encoded (see `write_rows_of`),
            # and the file keeps no Arrow schema, so readers see plain strings again.
            self._written_schema = schema.set(
                schema.get_field_index(FILE_COLUMN),
                pa.field(FILE_COLUMN, pa.dictionary(pa.int32(), pa.string())),
            )
            # Probabilities rarely repeat: trying a dictionary on them first made writing
            # 2.5 times slower and the file larger. Nor do they compress: snappy left them
            # no smaller, for 4 % of a batch run's CPU time. Only file names are compressed.
            self._writer = pq.ParquetWriter(
                self._partial,
                self._written_schema,
                use_dictionary=[FILE_COLUMN],
                compression={
                    name: "snappy" if name == FILE_COLUMN else "none" for name in schema.names
                },
                store_schema=False,
            )
        else:
            self._written_schema = schema
            self._writer = pa_csv.CSVWriter(self._partial, schema)
        self._zeros = pa.array(np.zeros(0, dtype=np.int32))
        self._open = True

    def write(self, batch: pa.RecordBatch) -> None:
        """Append rows of the file's schema."""
        batch = batch.cast(self._written_schema)
        self._writer.write_batch(batch if self._parquet else _neutralise_batch(batch))

    def write_rows_of(self, label: str, probabilities: pa.RecordBatch) -> None:
        """Append rows that all came from file `label`: `probabilities` is every other column.

        The file column is built here rather than by hashing the same name once per row: for
        Parquet as a one-entry dictionary, for CSV as the name repeated. Text columns among
        `probabilities` (a passed-through id) are neutralised in CSV as the name is.
        """
        rows = probabilities.num_rows
        if self._parquet:
            if len(self._zeros) < rows:
                self._zeros = pa.array(np.zeros(rows, dtype=np.int32))
            names: pa.Array = pa.DictionaryArray.from_arrays(
                self._zeros.slice(0, rows), pa.array([label], pa.string())
            )
        else:
            names = pa.repeat(pa.scalar(_neutralise_text(label), pa.string()), rows)
            probabilities = _neutralise_batch(probabilities)
        arrays = list(probabilities.columns)
        arrays.insert(self._written_schema.get_field_index(FILE_COLUMN), names)
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self._written_schema))

    def commit(self) -> None:
        """Finish the file and give it its name (replacing any file of that name)."""
        self._close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Drop everything written."""
        self._close()
        self._partial.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()


class SqlPredictionTable:
    """Appends predictions to a SQL table, all of one run in a single transaction.

    The table is created on the first append if missing. The URL is a secret: it is
    unwrapped only to build the engine, and every error message carries it masked.
    """

    def __init__(self, url: SecretStr, table: str, extra_columns: dict[str, Any]) -> None:
        """Connect and begin the transaction.

        Args:
            url: SQLAlchemy URL, e.g. ``sqlite:///predictions.db`` or
                ``postgresql+psycopg://user:password@host:5432/db``.
            table: the table to append to.
            extra_columns: constant columns added to every row (model, version, run id).

        Raises:
            BatchScoringError: the URL is unusable or the database cannot be reached.
        """
        self.table = table
        self._url = url
        self._extra = extra_columns
        self._engine: Engine = self._attempt("use the URL", lambda: create_engine(_raw(url)))
        try:
            self._connection: Connection = self._attempt("connect", self._engine.connect)
            self._transaction: RootTransaction = self._attempt("begin", self._connection.begin)
        except BatchScoringError:
            self._engine.dispose()
            raise

    @property
    def shown_url(self) -> str:
        """The URL with its password masked."""
        return mask_url(_raw(self._url))

    def append(self, frame: pd.DataFrame) -> None:
        """Insert `frame`'s rows, plus the extra columns, within the run's transaction."""
        rows = frame.assign(**self._extra)
        self._attempt(
            f"append to table {self.table!r}",
            lambda: rows.to_sql(self.table, self._connection, if_exists="append", index=False),
        )

    def commit(self) -> None:
        """Make the run's rows visible, then close the connection."""
        try:
            self._attempt("commit", self._transaction.commit)
        finally:
            self._dispose()

    def abort(self) -> None:
        """Roll back every row of this run, then close the connection."""
        # The connection may be gone already; then nothing was committed either.
        with suppress(Exception):
            self._transaction.rollback()
        self._dispose()

    def _dispose(self) -> None:
        self._connection.close()
        self._engine.dispose()

    def _attempt(self, doing: str, action: Callable[[], _T]) -> _T:
        try:
            return action()
        # Any driver error may echo the URL or its password: every one is scrubbed.
        except Exception as exc:
            reason = scrub(_describe(exc), _raw(self._url))
        # Raised outside the `except` so no chained driver exception carries the secret.
        raise BatchScoringError(
            f"could not {doing} at {mask_url(_raw(self._url))} (predictions table "
            f"{self.table!r}): {reason}; check the sql_url, that the database is reachable, "
            "and that an existing table has the same columns"
        )


def _raw(url: SecretStr) -> str:
    return url.get_secret_value()


def _describe(exc: BaseException) -> str:
    # pandas wraps SQLAlchemy's error; the driver's own message says what went wrong.
    if isinstance(exc.__cause__, DBAPIError):
        exc = exc.__cause__
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).split("(Background on this error at:")[0]
    return (" ".join(text.split())[:300] or type(exc).__name__).rstrip(".")
