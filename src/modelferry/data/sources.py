"""Read the raw table from each kind of data source, turning failures into `DataError`."""

from __future__ import annotations

import re
from typing import Literal

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from modelferry.config import BundledDataSource, DataSource, FileDataSource, SqlDataSource
from modelferry.data.masking import mask_url, scrub
from modelferry.errors import DataError

# sklearn names the label column of its bundled datasets "target".
_SKLEARN_LABEL = "target"

# Literals, quoted names and comments, which may hold ";" or keywords without meaning them.
_SQL_INERT = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/", re.S
)
_QUERY_KEYWORDS = frozenset({"select", "with", "values"})
# Run before the query on the same connection, so the database itself refuses writes.
_READ_ONLY_SETUP = {
    "postgresql": "SET TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def source_uri(source: DataSource) -> str:
    """Return where `source` reads from, safe to log (passwords masked).

    Args:
        source: The configured data source.

    Returns:
        e.g. ``sklearn://breast_cancer``, ``file:///abs/data.csv`` or
        ``postgresql+psycopg://user:***@host:5432/db``.
    """
    if isinstance(source, BundledDataSource):
        return f"sklearn://{source.name}"
    if isinstance(source, FileDataSource):
        return source.path.resolve().as_uri()
    return mask_url(source.url.get_secret_value())


def read_source(source: DataSource, label_column: str) -> pd.DataFrame:
    """Read the raw table from `source`.

    Args:
        source: The configured data source.
        label_column: Name the label column should have; only the bundled source, whose
            label column sklearn names itself, uses it.

    Returns:
        The table as read, not yet validated.

    Raises:
        DataError: the source cannot be reached or read.
    """
    if isinstance(source, BundledDataSource):
        return read_bundled(source, label_column)
    if isinstance(source, FileDataSource):
        return read_file(source)
    return read_sql(source)


def read_bundled(source: BundledDataSource, label_column: str) -> pd.DataFrame:
    """Load a dataset that ships with scikit-learn, label column renamed to `label_column`.

    Raises:
        DataError: `label_column` is already the name of one of the dataset's features.
    """
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    if label_column != _SKLEARN_LABEL and label_column in frame.columns:
        raise DataError(
            f"{source_uri(source)}: data.label_column {label_column!r} is the name of a "
            "feature column of this dataset; choose another name for the label, "
            f"e.g. {_SKLEARN_LABEL!r}"
        )
    return frame.rename(columns={_SKLEARN_LABEL: label_column})


def read_file(source: FileDataSource) -> pd.DataFrame:
    """Read a CSV or Parquet file.

    Raises:
        DataError: the file is missing, is not a file, cannot be opened or is not valid
            CSV/Parquet.
    """
    path = source.path.resolve()
    fmt = source.resolved_format
    if not path.exists():
        raise DataError(
            f"data file {str(path)!r} does not exist; check data.source.path (a relative "
            "path is resolved against the config file's folder)"
        )
    if not path.is_file():
        raise DataError(
            f"data file {str(path)!r} is not a file; point data.source.path at a {fmt.upper()} file"
        )
    try:
        if fmt == "csv":
            # low_memory=False infers each column's dtype from all rows, not per chunk,
            # so a column never comes back with mixed types.
            return pd.read_csv(path, low_memory=False)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"data file {str(path)!r} is empty; it needs a header row and data rows"
        ) from exc
    except PermissionError as exc:
        raise DataError(
            f"data file {str(path)!r} cannot be read: {exc.strerror}; give this process "
            "read permission on it"
        ) from exc
    # pandas' and pyarrow's parse errors are ValueErrors; I/O failures are OSErrors.
    except (ValueError, OSError) as exc:
        raise DataError(
            f"data file {str(path)!r} is not readable as {fmt.upper()}: {_one_line(exc)}; "
            f"check the file is intact and really {fmt.upper()} (data.source.format "
            "overrides the suffix)"
        ) from exc


def read_sql(source: SqlDataSource) -> pd.DataFrame:
    """Run the configured query and return its result.

    The engine is disposed before returning. No message raised here contains the URL's
    password, and the `DataError` chains no driver exception that might.

    Raises:
        DataError: the URL is unusable, the database cannot be reached, or the query fails.
    """
    url = source.url.get_secret_value()
    refusal = _query_refusal(source.query)
    if refusal is not None:
        raise DataError(
            f"data.source.query for {mask_url(url)} is refused: {refusal}; give a single "
            "query (SELECT, WITH ... SELECT or VALUES) that only reads"
        )
    result = _run_query(url, source.query)
    if isinstance(result, pd.DataFrame):
        return result
    # Raised here, outside any `except` block, so the DataError has no __context__.
    stage, reason = result
    shown = mask_url(url)
    reason = scrub(reason, url)
    if stage == "url":
        raise DataError(
            f"cannot use data.source.url {shown!r}: {reason}; give a SQLAlchemy URL with an "
            "installed driver, e.g. 'postgresql+psycopg://user@host:5432/db' or "
            "'sqlite:///data.db'"
        )
    if stage == "connect":
        raise DataError(
            f"cannot connect to {shown}: {reason}; check that the database is running and "
            "that the host, port, database name and credentials in data.source.url are right"
        )
    raise DataError(
        f"the query in data.source.query failed against {shown}: {reason}; fix the query "
        "(it must be a SELECT that returns rows) or the tables it reads"
    )


def _run_query(
    url: str, query: str
) -> pd.DataFrame | tuple[Literal["url", "connect", "query"], str]:
    """Return the query's result, or the stage that failed and the unscrubbed reason."""
    try:
        engine = create_engine(url)
    # A missing driver surfaces as ImportError; a malformed URL as ArgumentError or
    # ValueError (e.g. a non-numeric port).
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        return "url", _one_line(exc)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            return "connect", _describe_sql_error(exc)
        with connection:
            # no_parameters runs the query exactly as written: drivers such as psycopg
            # would otherwise read a literal '%' as a placeholder.
            connection = connection.execution_options(no_parameters=True)
            try:
                setup = _READ_ONLY_SETUP.get(engine.dialect.name)
                if setup is not None:
                    connection.exec_driver_sql(setup)
                return pd.read_sql_query(query, connection)
            except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
                return "query", _describe_sql_error(exc)
    finally:
        engine.dispose()


def _query_refusal(query: str) -> str | None:
    """Say why `query` is not one read-only query, or return None if it is.

    The database's read-only mode is what stops writes; this check refuses stacked
    statements (which some drivers run one after another) before anything reaches it.
    """
    bare = _SQL_INERT.sub(" ", query).strip().rstrip(";").strip()
    if ";" in bare:
        return "it holds more than one statement (a ';' between them); it must be a single query"
    words = bare.lstrip("( \t\r\n").split(None, 1)
    first = words[0].lower() if words else ""
    if first not in _QUERY_KEYWORDS:
        shown = first[:20] or "nothing"
        return f"it starts with {shown!r}, not SELECT, WITH or VALUES; it must be a single query"
    return None


def _describe_sql_error(exc: BaseException) -> str:
    # pandas wraps SQLAlchemy's error and repeats the whole query; the driver's own
    # message is what says what went wrong.
    if isinstance(exc, pd.errors.DatabaseError) and isinstance(exc.__cause__, SQLAlchemyError):
        exc = exc.__cause__
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return _one_line(exc.orig)
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).split("(Background on this error at:")[0]
    # One line, and no closing period: the caller appends "; what to do".
    return " ".join(text.split()).rstrip(".") or type(exc).__name__
