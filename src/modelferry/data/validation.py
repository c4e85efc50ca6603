"""Check a raw table can train a binary classifier, and encode its labels as 0/1."""

from __future__ import annotations

from decimal import Decimal
from numbers import Real
from typing import Any

import pandas as pd

from modelferry.config import DataConfig
from modelferry.errors import DataError

# Long column lists are cut off in messages; the first few say enough.
_MAX_LISTED = 30


def prepare_frame(frame: pd.DataFrame, config: DataConfig, source_uri: str) -> pd.DataFrame:
    """Validate a raw table and return it with the label column encoded as int 0/1.

    Checks, in order: the table has rows; column names are unique; the label column is
    present and has a value in every row; the labels are the two class names or 0/1 and
    both classes occur; no feature column is entirely empty; every feature is numeric;
    there are at least `config.min_rows` rows.

    Args:
        frame: The table as read from the source.
        config: The data section of the model config.
        source_uri: Where the table came from (password masked), for messages.

    Returns:
        A new frame with a fresh 0..n-1 index, string column names and an int64 label
        column; feature columns are unchanged.

    Raises:
        DataError: the table fails a check; the message says what is wrong and what to do.
    """
    label = config.label_column
    frame = frame.reset_index(drop=True)
    frame.columns = pd.Index([str(name) for name in frame.columns])
    if frame.empty:
        raise DataError(
            f"{source_uri}: the data has no rows (columns: {_names(frame.columns)}); "
            "point data.source at data that holds the training rows"
        )
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise DataError(
            f"{source_uri}: column name(s) {_names(duplicated)} occur more than once; "
            "give every column a unique name (e.g. alias them in the SQL query)"
        )
    if label not in frame.columns:
        raise DataError(
            f"{source_uri}: label column {label!r} (data.label_column) is not in the "
            f"data; columns present: {_names(frame.columns)}"
        )
    missing = int(frame[label].isna().sum())
    if missing:
        raise DataError(
            f"{source_uri}: {missing} of {len(frame)} rows have no value in label column "
            f"{label!r}; fill in their labels or drop those rows"
        )
    frame[label] = _encode_labels(frame[label], config, source_uri)
    _check_features(frame.drop(columns=[label]), source_uri)
    if len(frame) < config.min_rows:
        raise DataError(
            f"{source_uri}: the data has {len(frame)} rows but at least {config.min_rows} "
            "are needed (data.min_rows) to split it into training, validation and test "
            "sets; add rows or lower data.min_rows"
        )
    return frame


def _encode_labels(labels: pd.Series[Any], config: DataConfig, source_uri: str) -> pd.Series[int]:
    column = config.label_column
    class_names = config.class_names
    values: list[Any] = labels.drop_duplicates().tolist()
    if all(isinstance(value, str) for value in values) and set(values) <= set(class_names):
        # Position in class_names is the label: class_names[1] is the positive class.
        encoded = (labels == class_names[1]).astype("int64")
    elif all(_is_zero_or_one(value) for value in values):
        encoded = (labels == 1).astype("int64")
    else:
        found = ", ".join(sorted(repr(value) for value in values)[:_MAX_LISTED])
        raise DataError(
            f"{source_uri}: label column {column!r} holds {len(values)} distinct value(s): "
            f"{found}; allowed are the two class names {class_names[0]!r} and "
            f"{class_names[1]!r} (data.class_names, mapped to 0 and 1) or the numbers 0 "
            "and 1; recode the labels or set data.class_names"
        )
    if encoded.nunique() < 2:
        present = int(encoded.iloc[0])
        raise DataError(
            f"{source_uri}: label column {column!r} holds only one class "
            f"({present} = {class_names[present]!r}) in all {len(encoded)} rows; a "
            "classifier needs examples of both classes"
        )
    return encoded


def _is_zero_or_one(value: Any) -> bool:
    # bool is a Real, so True/False pass; Decimal comes from SQL NUMERIC columns.
    return isinstance(value, Real | Decimal) and value in (0, 1)


def _check_features(features: pd.DataFrame, source_uri: str) -> None:
    if features.columns.empty:
        raise DataError(f"{source_uri}: the data holds only the label column; add feature columns")
    # Before the dtype check: a column of SQL NULLs comes back as object dtype, and
    # "entirely empty" is the truer thing to say about it.
    empty = [str(name) for name in features.columns if features[name].isna().all()]
    if empty:
        raise DataError(
            f"{source_uri}: feature column(s) {_names(empty)} hold no values at all (every "
            "row is empty/NaN); drop them or fill them in"
        )
    non_numeric = {
        str(name): str(dtype)
        for name, dtype in features.dtypes.items()
        if not pd.api.types.is_numeric_dtype(dtype)
    }
    if non_numeric:
        listed = ", ".join(f"{name!r} ({dtype})" for name, dtype in non_numeric.items())
        raise DataError(
            f"{source_uri}: feature column(s) {listed} are not numeric; encode them as "
            "numbers (e.g. one-hot or ordinal codes) or drop them from the data"
        )


def _names(names: Any) -> str:
    listed = [repr(str(name)) for name in names]
    if not listed:
        return "(none)"
    shown = ", ".join(listed[:_MAX_LISTED])
    if len(listed) > _MAX_LISTED:
        shown += f", ... and {len(listed) - _MAX_LISTED} more"
    return shown
