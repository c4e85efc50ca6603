"""Batch scoring: files (CSV, Parquet) in, one predictions file and optionally a SQL table out.

Memory is bounded by the chunk size, not the file size; files are scored in parallel; a
file that fails is reported by name, and costs the others nothing as long as no more
files fail than the run may skip.
"""

from modelferry.batch.inputs import SCORABLE_SUFFIXES, leave_out_predictions, resolve_inputs
from modelferry.batch.outputs import PredictionFile, SqlPredictionTable
from modelferry.batch.runner import DEFAULT_SQL_TABLE, BatchResult, run_batch
from modelferry.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    FILE_COLUMN,
    check_id_column,
    prediction_columns,
    prediction_schema,
    probability_schema,
    score_file,
    score_probabilities,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_SQL_TABLE",
    "FILE_COLUMN",
    "SCORABLE_SUFFIXES",
    "BatchResult",
    "PredictionFile",
    "SqlPredictionTable",
    "check_id_column",
    "leave_out_predictions",
    "prediction_columns",
    "prediction_schema",
    "probability_schema",
    "resolve_inputs",
    "run_batch",
    "score_file",
    "score_probabilities",
]
