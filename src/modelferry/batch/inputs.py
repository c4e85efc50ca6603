"""Turn what a user typed (a file, a folder or a glob) into the list of files to score."""

from __future__ import annotations

import csv
import glob
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from modelferry.batch.scoring import (
    CSV_SUFFIXES,
    FILE_COLUMN,
    PARQUET_SUFFIXES,
    prediction_columns,
)
from modelferry.errors import BatchScoringError

#: File types a folder is searched for; anything else in it is left alone.
SCORABLE_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})

_GLOB_CHARS = frozenset("*?[")


def resolve_inputs(spec: str | Path) -> list[Path]:
    """The files named by `spec`, sorted.

    Args:
        spec: one file; a folder (every ``*.csv``, ``*.parquet`` and ``*.pq`` directly
            inside it); or a glob such as ``data/2026-*/*.parquet`` (``**`` recurses).

    Returns:
        The matching files, sorted by path, without duplicates.

    Raises:
        BatchScoringError: nothing matched; the message names the pattern.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            child
            for child in path.iterdir()
            if child.is_file() and child.suffix.lower() in SCORABLE_SUFFIXES
        )
        if not found:
            kinds = ", ".join(sorted(f"*{suffix}" for suffix in SCORABLE_SUFFIXES))
            raise BatchScoringError(f"folder {text!r} holds no file to score ({kinds})")
        return found
    if not _GLOB_CHARS.intersection(text):
        raise BatchScoringError(f"no file or folder {text!r}; check the input path")
    matches = glob.glob(str(path), recursive=True)
    found = sorted({Path(match) for match in matches if Path(match).is_file()})
    if not found:
        raise BatchScoringError(f"no file matches {text!r}; check the input pattern")
    return found


def leave_out_predictions(
    files: Sequence[Path], output: Path, class_names: Sequence[str]
) -> tuple[list[Path], list[Path]]:
    """Split `files` into those to score and those that are predictions, not inputs.

    A predictions file is the run's own `output`, or any file with a ``file`` column and
    a ``predictions_<class>`` column for each of the model's classes: what an earlier
    run wrote, perhaps into the folder now being scored. A file whose columns cannot be
    read is kept: scoring it reports why.

    Returns:
        The files to score and the files left out, both in the order given.
    """
    target = output.resolve()
    marks = {FILE_COLUMN, *prediction_columns(class_names)}
    kept: list[Path] = []
    left_out: list[Path] = []
    for path in files:
        earlier = path.resolve() == target or marks <= set(_column_names(path))
        (left_out if earlier else kept).append(path)
    return kept, left_out


def _column_names(path: Path) -> list[str]:
    """The file's column names, or none if it cannot be read as a CSV or Parquet file."""
    if not path.is_file():
        # Opening a FIFO would wait for a writer forever; scoring says why it is refused.
        return []
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return list(pq.read_schema(path).names)
        with path.open(newline="", encoding="utf-8-sig") as stream:
            return next(csv.reader(stream), [])
    # Unreadable here means unreadable when scored, where the reason is reported.
    except (OSError, ValueError, csv.Error, pa.ArrowException):
        return []


# Read a CSV this much at a time when counting its lines.
_COUNT_BLOCK_BYTES = 1 << 20


def estimate_rows(path: Path) -> int:
    """About how many rows a file holds, found cheaply: what progress is measured in.

    Exact for Parquet (its footer says). A CSV's lines are counted, less the header, at
    disk speed (several times faster than parsing, let alone scoring, them): a quoted
    value spanning lines or a blank line makes it an estimate. A file that cannot be read
    (scoring reports why) or is not a regular file is 0.
    """
    if not path.is_file():
        return 0
    try:
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows)
        if suffix not in CSV_SUFFIXES:
            return 0
        lines = 0
        last = b"\n"
        with path.open("rb") as stream:
            while block := stream.read(_COUNT_BLOCK_BYTES):
                lines += block.count(b"\n")
                last = block[-1:]
        # A last line without a newline is a row too; the first line is the header.
        return max(0, lines + (last != b"\n") - 1)
    except (OSError, ValueError, pa.ArrowException):
        return 0
