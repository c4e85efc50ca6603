"""Score one file in bounded memory: read a chunk of rows, predict, yield, let it go.

Chunks stay in Arrow and numpy from the file to the predictions: no pandas frame per
chunk, so reading and writing cost little next to the model itself.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from modelferry.errors import BatchScoringError
from modelferry.serving.model import ServingModel
from modelferry.serving.schema import FeatureSpec

#: Rows read, predicted and yielded at a time; memory grows with this, not the file.
DEFAULT_CHUNK_ROWS = 100_000

#: Output column holding the name of the file a row came from.
FILE_COLUMN = "file"

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
CSV_SUFFIXES = frozenset({".csv"})

# Parquet is read page by page, through a buffer of this size per column. pyarrow's
# defaults (pre_buffer, no buffer) load every column chunk of a row group whole, whatever
# the batch size: 240 MB for a million rows of 30 doubles, pyarrow's default row group.
# Memory then grew with how a file was written instead of with `chunk_rows`.
_PARQUET_BUFFER_BYTES = 1 << 20

# CSV is parsed a block at a time; chunks are then cut to exactly `chunk_rows` rows.
_CSV_BLOCK_BYTES = 1 << 20

# Values read as missing (NaN) in a CSV: pandas' defaults, so files read as pandas reads them.
_CSV_MISSING = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]  # fmt: skip

# Column names shown in a message, at most; the rest are counted.
_NAMES_SHOWN = 5

# One chunk's feature column, as float64 values, looked up by feature name.
_ColumnReader = Callable[[str], np.ndarray]
# A chunk: its row count, one float64 array per model feature in the model's order, and
# the row ids (text) when an id column is passed through.
_Chunk = tuple[int, list[np.ndarray], pa.Array | None]


def prediction_columns(class_names: Sequence[str]) -> list[str]:
    """Output column of each class's probability: ``predictions_<class>``."""
    return [f"predictions_{name}" for name in class_names]


def prediction_schema(class_names: Sequence[str], id_column: str | None = None) -> pa.Schema:
    """Arrow schema of the predictions: ``file``, the id column if any, one float64 per class."""
    return pa.schema(
        [pa.field(FILE_COLUMN, pa.string()), *probability_schema(class_names, id_column)]
    )


def score_file(
    path: str | Path,
    model: ServingModel,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    label: str | None = None,
    id_column: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Predict every row of a CSV or Parquet file, `chunk_rows` rows at a time.

    Only the model's feature columns are read, and only one chunk is held at a time, so
    memory stays bounded whatever the file size.

    Args:
        path: a ``.csv``, ``.parquet`` or ``.pq`` file with a column per model feature.
        model: the model to score with.
        chunk_rows: the most rows read and predicted at once.
        label: the name written in the ``file`` column; default the file name.
        id_column: a column identifying each row, passed through as text so the
            predictions can be joined to the inputs; never given to the model.

    Yields:
        One record batch per chunk, in file order, of `prediction_schema`: ``file``, the
        id column if given, and ``predictions_<class>`` for each of the model's classes.

    Raises:
        BatchScoringError: the file cannot be read, is of an unknown type, lacks feature
            columns or the id column (named) or holds values that are not numbers; the
            message names the file. Or `id_column` is unusable (see `check_id_column`).
    """
    path = Path(path)
    label = label or path.name
    schema = prediction_schema(model.class_names, id_column)
    name = pa.scalar(label, pa.string())
    chunks = score_probabilities(path, model, chunk_rows, label=label, id_column=id_column)
    for probabilities in chunks:
        arrays = [pa.repeat(name, probabilities.num_rows), *probabilities.columns]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def probability_schema(class_names: Sequence[str], id_column: str | None = None) -> pa.Schema:
    """`prediction_schema` without the ``file`` column."""
    fields = [pa.field(id_column, pa.string())] if id_column is not None else []
    fields += [pa.field(name, pa.float64()) for name in prediction_columns(class_names)]
    return pa.schema(fields)


def check_id_column(model: ServingModel, id_column: str | None) -> None:
    """Refuse an id column the model reads as a feature, or named as an output column.

    Raises:
        BatchScoringError: `id_column` is empty, a feature of `model`, ``file`` or a
            ``predictions_<class>`` column.
    """
    if id_column is None:
        return
    if not id_column.strip():
        raise BatchScoringError("id column is empty; give the name of a column, or none")
    if id_column in model.feature_names:
        raise BatchScoringError(
            f"id column {id_column!r} is a feature of model {model.name} v{model.version}; "
            "give a column that only identifies rows"
        )
    if id_column in (FILE_COLUMN, *prediction_columns(model.class_names)):
        raise BatchScoringError(
            f"id column {id_column!r} has the name of an output column; give another column"
        )


def score_probabilities(
    path: str | Path,
    model: ServingModel,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    label: str | None = None,
    threads: int | None = None,
    id_column: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """`score_file` without the ``file`` column: batches of `probability_schema`.

    For callers that know which file every row came from, such as `run_batch`, and would
    only drop or rebuild a column repeating its name on every row. `threads` caps the
    threads one chunk is predicted with (default: the predictor's choice).
    """
    if chunk_rows < 1:
        raise BatchScoringError(f"chunk_rows must be at least 1, not {chunk_rows}")
    check_id_column(model, id_column)
    path = Path(path)
    label = label or path.name
    schema = probability_schema(model.class_names, id_column)
    classes = len(model.class_names)
    chunks = _feature_chunks(path, model.features, id_column, chunk_rows, label)
    for rows, features, ids in chunks:
        if rows == 0:
            continue
        proba = model.predict_proba_columns(features, threads=threads)
        if proba.shape != (rows, classes):
            raise BatchScoringError(
                f"model {model.name} v{model.version} returned probabilities of shape "
                f"{proba.shape} for {rows} rows of {label} and "
                f"{classes} classes; check the version's class names"
            )
        arrays = [pa.array(proba[:, index]) for index in range(classes)]
        if ids is not None:
            arrays.insert(0, ids)
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _feature_chunks(
    path: Path,
    features: Sequence[FeatureSpec],
    id_column: str | None,
    chunk_rows: int,
    label: str,
) -> Iterator[_Chunk]:
    if path.exists() and not path.is_file():
        # A FIFO or a device would block the reader, or never end.
        raise BatchScoringError(
            f"{label}: not a regular file (a folder, FIFO or device); give CSV or Parquet files"
        )
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        reader = _parquet_chunks
    elif suffix in CSV_SUFFIXES:
        reader = _csv_chunks
    else:
        raise BatchScoringError(
            f"{label}: cannot score a {suffix or 'suffix-less'} file; give .csv, .parquet or .pq"
        )
    try:
        yield from reader(path, features, id_column, chunk_rows, label)
    except BatchScoringError:
        raise
    # pandas' and pyarrow's parse errors are ValueErrors; I/O failures are OSErrors.
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise BatchScoringError(f"{label}: cannot read it: {_one_line(exc)}") from exc


def _parquet_chunks(
    path: Path,
    features: Sequence[FeatureSpec],
    id_column: str | None,
    chunk_rows: int,
    label: str,
) -> Iterator[_Chunk]:
    with pq.ParquetFile(path, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES) as parquet:
        present = _present_columns(parquet.schema_arrow.names, features, id_column, label)
        read = [*present, id_column] if id_column is not None else present
        # No reader threads: files are already read in parallel, one per worker thread.
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=read, use_threads=False)
        for batch in batches:

            def column(name: str, batch: pa.RecordBatch = batch) -> np.ndarray:
                values = batch.column(name).cast(pa.float64())
                return np.asarray(values.to_numpy(zero_copy_only=False))

            arrays = _columns(batch.num_rows, features, present, column, label)
            yield batch.num_rows, arrays, _ids(batch, id_column, label)


def _csv_chunks(
    path: Path,
    features: Sequence[FeatureSpec],
    id_column: str | None,
    chunk_rows: int,
    label: str,
) -> Iterator[_Chunk]:
    header = _csv_header(path)
    present = _present_columns(header, features, id_column, label)
    types = dict.fromkeys(present, pa.float64())
    if id_column is not None:
        # Read as written: an id such as 007 keeps its zeros, and "NA" is an id, not a gap.
        types[id_column] = pa.string()
    read = pa_csv.ReadOptions(use_threads=False, block_size=_CSV_BLOCK_BYTES)
    convert = pa_csv.ConvertOptions(
        include_columns=list(types),
        column_types=types,
        null_values=_CSV_MISSING,
    )
    try:
        # No reader threads: files are already read in parallel, one per worker thread.
        with pa_csv.open_csv(path, read_options=read, convert_options=convert) as reader:
            for batch in _rechunked(reader, chunk_rows):

                def column(name: str, batch: pa.RecordBatch = batch) -> np.ndarray:
                    return np.asarray(batch.column(name).to_numpy(zero_copy_only=False))

                arrays = _columns(batch.num_rows, features, present, column, label)
                yield batch.num_rows, arrays, _ids(batch, id_column, label)
    except pa.ArrowInvalid as exc:
        # pyarrow numbers the column ("In CSV column #3: ..."): name it, as for Parquet.
        found = re.match(r"In CSV column #(\d+): (.*)", str(exc), re.DOTALL)
        if found is None or int(found[1]) >= len(header):
            raise
        raise BatchScoringError(
            f"{label}: column {header[int(found[1])]!r} is not numeric: {_one_line(found[2])}"
        ) from exc


def _csv_header(path: Path) -> list[str]:
    """The CSV's column names: its first line only, split as pyarrow's reader splits it."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        names = next(csv.reader(stream), None)
    if names is None:
        raise ValueError("the file is empty")
    return names


def _rechunked(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """`batches` regrouped into batches of exactly `rows` rows, but for the last."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending = rest.to_batches() if rest.num_rows else []
            held = rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _present_columns(
    available: Sequence[str], features: Sequence[FeatureSpec], id_column: str | None, label: str
) -> list[str]:
    """The model's feature columns the file has; raises naming what it lacks."""
    names = set(available)
    wanted = {f.name for f in features}
    problems = []
    missing = [f.name for f in features if f.required and f.name not in names]
    if missing:
        text = f"missing {len(missing)} of the model's {len(features)} feature columns: "
        text += _listed(missing)
        # What it has instead often shows why: a renamed column, or a file of another kind.
        others = [name for name in available if name not in wanted and name != id_column]
        if others:
            text += f" (its other columns: {_listed(others)})"
        problems.append(text)
    if id_column is not None and id_column not in names:
        problems.append(f"no id column {id_column!r}")
    if problems:
        raise BatchScoringError(f"{label}: {'; '.join(problems)}")
    present = [f.name for f in features if f.name in names]
    if not present:
        raise BatchScoringError(f"{label}: has none of the model's feature columns")
    return present


def _listed(names: Sequence[str]) -> str:
    """``'a', 'b'``, or the first few names and how many more."""
    shown = ", ".join(repr(name) for name in names[:_NAMES_SHOWN])
    rest = len(names) - _NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def _ids(batch: pa.RecordBatch, id_column: str | None, label: str) -> pa.Array | None:
    """The chunk's row ids as text, or None when no id column is passed through."""
    if id_column is None:
        return None
    try:
        return batch.column(id_column).cast(pa.string())
    except pa.ArrowException as exc:
        raise BatchScoringError(
            f"{label}: id column {id_column!r} cannot be written as text: {_one_line(exc)}"
        ) from exc


def _columns(
    rows: int,
    features: Sequence[FeatureSpec],
    present: Sequence[str],
    column: _ColumnReader,
    label: str,
) -> list[np.ndarray]:
    """One float64 array per feature, in the model's order; an absent optional one is NaN."""
    available = set(present)
    arrays = []
    for feature in features:
        if feature.name not in available:
            arrays.append(np.full(rows, np.nan))
            continue
        try:
            arrays.append(column(feature.name))
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise BatchScoringError(
                f"{label}: column {feature.name!r} is not numeric: {_one_line(exc)}"
            ) from exc
    return arrays


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] or type(exc).__name__).rstrip(".")
