"""Scoring request bodies → a float64 feature matrix in the model's column order.

Accepted shapes (the ones Azure ML and MLflow clients send):

- `{"input_data": {"columns": [...], "index": [...], "data": [[...], ...]}}` (Azure ML)
- `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}` (MLflow)
- `{"dataframe_records": [{"col": value, ...}, ...]}` (MLflow)
- `{"inputs": [[...], ...]}` in signature order, or `{"inputs": {"col": [...], ...}}`

Every problem is a `PayloadError` whose message names the column or row at fault; the
common case (numbers only, columns in order) never loops over cells in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from modelferry.serving.schema import FeatureSpec, InputSchema

_FORMATS = ("input_data", "dataframe_split", "dataframe_records", "inputs")
# Above this many rows a bad cell is looked for before the table is built (see _to_matrix);
# below it the regular path is as fast and a bad request costs little.
_FIND_FIRST_ROWS = 1000


class PayloadError(ValueError):
    """A scoring request the model cannot take; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        """Carry the message for the client and the HTTP status for it."""
        super().__init__(message)
        self.status = status


def parse_request(
    body: bytes, schema: InputSchema | Sequence[FeatureSpec], max_rows: int
) -> np.ndarray:
    """Decode and validate a request body; return a C-contiguous float64 matrix.

    Raises:
        PayloadError: bad JSON, unknown shape, missing/extra columns, non-numeric values,
            missing values in required columns, too many rows.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadError(f"expected a JSON object with one of {', '.join(_FORMATS)}")
    found = [key for key in _FORMATS if key in document]
    if len(found) != 1:
        raise PayloadError(
            f"expected exactly one of {', '.join(_FORMATS)}; got keys {sorted(document)}"
        )
    if not isinstance(schema, InputSchema):
        schema = InputSchema(schema)
    key = found[0]
    value = document[key]
    names = schema.names
    if key in {"input_data", "dataframe_split"}:
        if isinstance(value, list):  # Azure ML also takes a bare list of rows
            columns, rows = names, value
        elif isinstance(value, dict) and "data" in value:
            columns, rows = value.get("columns", names), value["data"]
        else:
            raise PayloadError(f"'{key}' must be an object with 'columns' and 'data'")
    elif key == "dataframe_records":
        columns, rows = _records_to_rows(value, names)
    elif isinstance(value, dict):
        columns, rows = _columns_to_rows(value)
    else:
        columns, rows = names, value
    if not isinstance(rows, list) or not isinstance(columns, list):
        raise PayloadError(f"'{key}' data must be a list of rows")
    if not rows:
        raise PayloadError("the request holds no rows")
    if len(rows) > max_rows:
        raise PayloadError(f"the request holds {len(rows)} rows; at most {max_rows} allowed", 413)
    order = _column_order(columns, names)
    matrix = _to_matrix(rows, columns)
    if order is not None:
        matrix = np.ascontiguousarray(matrix[:, order])
    if not np.isfinite(matrix).all() or schema.whole:
        _check_values(matrix, schema)
    return matrix


def _records_to_rows(value: Any, names: list[str]) -> tuple[list[str], list[Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise PayloadError("'dataframe_records' must be a list of objects")
    if not value:
        return names, []
    columns = list(value[0])
    try:
        rows = [[record[c] for c in columns] for record in value]
    except KeyError as exc:
        raise PayloadError(f"a record lacks column {exc.args[0]!r}") from None
    for index, record in enumerate(value):
        if len(record) != len(columns):
            extra = sorted(set(record) - set(columns))
            raise PayloadError(f"record {index} has other columns than the first: {extra}")
    return columns, rows


def _columns_to_rows(value: dict[str, Any]) -> tuple[list[str], list[Any]]:
    columns = list(value)
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise PayloadError("'inputs' as an object must map each column to a list of equal length")
    return columns, [list(row) for row in zip(*value.values(), strict=True)]


def _column_order(columns: list[Any], names: list[str]) -> list[int] | None:
    """Indexes that put request columns in model order; None when already in order."""
    if columns == names:
        return None
    missing = [n for n in names if n not in columns]
    extra = [str(c) for c in columns if c not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing[:10]}")
        if extra:
            parts.append(f"unexpected column(s) {extra[:10]}")
        raise PayloadError("; ".join(parts) + f"; the model takes {len(names)} columns")
    if len(set(columns)) != len(columns):
        raise PayloadError("duplicate column names in the request")
    position = {c: i for i, c in enumerate(columns)}
    return [position[n] for n in names]


def _to_matrix(rows: list[Any], columns: list[Any]) -> np.ndarray:
    if len(rows) > _FIND_FIRST_ROWS:
        # A string among numbers would make numpy turn every number into a string before
        # the request is refused; converting to float stops at the first bad cell instead.
        bad = _first_bad_row(rows, len(columns))
        if bad is not None:
            raise PayloadError(_describe_bad_rows(rows[bad:], columns, start=bad))
    try:
        matrix = np.array(rows)
    except ValueError:
        matrix = None
    if matrix is not None and matrix.ndim == 2 and matrix.shape[1] == len(columns):
        if matrix.dtype.kind in "fiub":
            return np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.dtype.kind == "O":  # nulls among numbers become NaN, checked later
            try:
                return np.array(rows, dtype=np.float64)
            except (TypeError, ValueError):
                pass
    raise PayloadError(_describe_bad_rows(rows, columns))


def _converts(rows: list[Any], width: int) -> bool:
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return matrix.ndim == 2 and matrix.shape[1] == width


def _first_bad_row(rows: list[Any], width: int) -> int | None:
    """The first row that is not `width` numbers, by halving; None when all convert.

    Numeric strings convert here too; the regular path still refuses them.
    """
    if _converts(rows, width):
        return None
    low, high = 0, len(rows)  # rows[low:high] holds a bad row
    while high - low > 1:
        middle = (low + high) // 2
        if _converts(rows[low:middle], width):
            low = middle
        else:
            high = middle
    return low


def _describe_bad_rows(rows: list[Any], columns: list[Any], start: int = 0) -> str:
    """Find the first row or cell at fault; only runs once a request was already refused."""
    for r, row in enumerate(rows, start):
        if not isinstance(row, list) or len(row) != len(columns):
            size = len(row) if isinstance(row, list) else type(row).__name__
            return f"row {r} has {size} values; expected {len(columns)}"
        for c, cell in enumerate(row):
            if cell is not None and not isinstance(cell, int | float):
                return (
                    f"column {columns[c]!r} must be numeric; row {r} holds "
                    f"{type(cell).__name__} {cell!r:.40}"
                )
    return "the rows could not be read as a numeric table"


def _check_values(matrix: np.ndarray, schema: InputSchema) -> None:
    """Find the cell at fault; only runs when a quick whole-matrix check saw a problem."""
    missing = np.isnan(matrix)
    if missing.any():
        optional = set(schema.optional)
        for c, feature in enumerate(schema.features):
            if c not in optional and missing[:, c].any():
                row = int(np.argmax(missing[:, c]))
                raise PayloadError(
                    f"column {feature.name!r} needs a value; row {row} holds null/NaN"
                )
    infinite = np.isinf(matrix)
    if infinite.any():
        c = int(np.argmax(infinite.any(axis=0)))
        raise PayloadError(f"column {schema.names[c]!r} holds an infinite value")
    for c in schema.whole:
        column = matrix[:, c]
        finite = column[~np.isnan(column)]
        if (finite != np.floor(finite)).any():
            raise PayloadError(f"column {schema.names[c]!r} takes whole numbers only")
