"""The batch benchmark's input: Parquet files and one CSV of the model's 30 features.

Rows are the breast-cancer rows the model was trained on, drawn at random and each value
scaled by a random factor around 1, so the trees take varied paths; a fixed seed makes
every run score the same numbers. Generated with numpy, one file at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from bench.common.models import BenchModel

SEED = 20261122
# Each feature is scaled by 1 + SPREAD * N(0, 1), per value.
SPREAD = 0.1


def feature_rows(model: BenchModel, rows: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` rows of the model's features, float64, C order."""
    picked = model.rows[rng.integers(0, len(model.rows), size=rows)]
    picked *= rng.normal(1.0, SPREAD, size=picked.shape)
    return picked


def _table(columns: Sequence[str], matrix: np.ndarray) -> pa.Table:
    return pa.table({name: matrix[:, i] for i, name in enumerate(columns)})


def write_parquet_files(model: BenchModel, folder: Path, rows: int, files: int) -> list[Path]:
    """`files` Parquet files of `rows` rows in all, written with pyarrow's defaults.

    The defaults (snappy, row groups of up to 1,048,576 rows) are what a user who calls
    `pq.write_table` gets, so the scorer meets the row-group sizes it will meet in practice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    sizes = [rows // files + (1 if i < rows % files else 0) for i in range(files)]
    paths = []
    for index, size in enumerate(sizes):
        path = folder / f"part-{index:03d}.parquet"
        pq.write_table(_table(model.columns, feature_rows(model, size, rng)), path)
        paths.append(path)
    return paths


def write_csv(model: BenchModel, path: Path, rows: int) -> Path:
    """One CSV of `rows` rows with a header, as `mlflow models predict -t csv` reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED + 1)
    pa_csv.write_csv(_table(model.columns, feature_rows(model, rows, rng)), path)
    return path
