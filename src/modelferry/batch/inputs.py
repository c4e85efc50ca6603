"""Turn what a user typed (a file, a folder or a glob) into the list of files to score."""

from __future__ import annotations

import glob
from pathlib import Path

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
