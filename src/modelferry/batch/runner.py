"""`run_batch`: score many files in parallel into one predictions file (and a SQL table).

Worker threads score files (the model and Arrow release the GIL) and spool each file's
probabilities to an Arrow IPC file beside the output (no encoding: writing and reading back
cost next to nothing). The calling thread then streams each finished spool, in input
order, into the one output file and the SQL table. A file that fails part-way therefore
adds no rows at all, and memory holds a few chunks at most.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import SecretStr

from modelferry.batch.inputs import resolve_inputs
from modelferry.batch.outputs import PredictionFile, SqlPredictionTable
from modelferry.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    FILE_COLUMN,
    prediction_schema,
    probability_schema,
    score_probabilities,
)
from modelferry.errors import BatchScoringError
from modelferry.serving.model import ServingModel

logger = logging.getLogger(__name__)

#: Table appended to when a SQL URL is given without a table name.
DEFAULT_SQL_TABLE = "predictions"


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote, and which files it could not score (name → reason)."""

    output_path: Path
    rows_scored: int
    files_scored: int
    failed_files: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    run_id: str = ""
    sql_table: str | None = None

    def summary(self) -> str:
        """The run in one line, naming every failed file."""
        text = (
            f"Scored {self.rows_scored:,} rows from {self.files_scored} file(s) with "
            f"{self.model_name} v{self.model_version} into {self.output_path}"
        )
        if self.sql_table:
            text += f" and SQL table {self.sql_table!r}"
        if self.failed_files:
            failures = "; ".join(f"{name}: {why}" for name, why in self.failed_files.items())
            text += f"; {len(self.failed_files)} file(s) failed: {failures}"
        return text

    def to_markdown(self) -> str:
        """A short report: counts, where the predictions are, and each failed file."""
        lines = [
            f"# Batch scoring: {self.model_name} v{self.model_version}",
            "",
            "| rows scored | files scored | files failed | output |",
            "|---:|---:|---:|---|",
            f"| {self.rows_scored:,} | {self.files_scored} | {len(self.failed_files)} "
            f"| `{self.output_path}` |",
        ]
        if self.sql_table:
            lines += ["", f"Also appended to SQL table `{self.sql_table}`."]
        if self.failed_files:
            lines += ["", "## Failed files", "", "| file | reason |", "|---|---|"]
            for name, why in self.failed_files.items():
                lines.append(f"| `{name}` | {why.replace('|', '/')} |")
        return "\n".join(lines)


def run_batch(
    inputs: str | Path | Sequence[str | Path],
    model: ServingModel,
    output_path: str | Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_workers: int = 2,
    sql_url: SecretStr | str | None = None,
    sql_table: str | None = None,
    run_id: str | None = None,
) -> BatchResult:
    """Score every input file into one predictions file, and optionally a SQL table.

    Args:
        inputs: a file, folder or glob (see `resolve_inputs`), or a list of files.
        model: the model to score with.
        output_path: the predictions file; Parquet if it ends in ``.parquet``/``.pq``,
            else CSV. Replaced if it exists.
        chunk_rows: rows read and predicted at a time per file.
        max_workers: files scored at once.
        sql_url: SQLAlchemy URL of a database to append the predictions to; a secret.
        sql_table: the table to append to (default ``predictions``), with the extra
            columns model_name, model_version, run_id and scored_at.
        run_id: identifies this run in the SQL rows; default a random id.

    Returns:
        Counts, the output path and each failed file with its reason.

    Raises:
        BatchScoringError: no input found, every file failed (nothing is written then),
            or the output file or SQL table could not be written (nothing is kept).
    """
    if chunk_rows < 1 or max_workers < 1:
        raise BatchScoringError(
            f"chunk_rows and max_workers must be at least 1, not {chunk_rows} and {max_workers}"
        )
    files = _input_files(inputs)
    labels = _labels(files)
    output = Path(output_path)
    run_id = run_id or uuid.uuid4().hex
    table = (sql_table or DEFAULT_SQL_TABLE) if sql_url is not None else None
    extra = {
        "model_name": model.name,
        "model_version": model.version,
        "run_id": run_id,
        "scored_at": datetime.now(UTC),
    }
    schema = prediction_schema(model.class_names)
    spooled = probability_schema(model.class_names)
    # Connect before scoring, so a wrong URL fails in seconds rather than after the first file.
    sql = _open_sql(sql_url, table, extra)
    file: PredictionFile | None = None
    failed: dict[str, str] = {}
    rows = scored = 0
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # Spools live beside the output, not in /tmp, which is often a RAM-backed tmpfs.
        with tempfile.TemporaryDirectory(prefix=".modelferry-batch-", dir=output.parent) as tmp:
            spools = [Path(tmp, f"{i}.arrow") for i in range(len(files))]
            results = _score_all(files, labels, spools, model, chunk_rows, spooled, max_workers)
            # closing(): on an error, the workers stop before their spool folder is removed.
            with closing(results):
                for label, spool, outcome in results:
                    if isinstance(outcome, str):
                        failed[label] = outcome
                        logger.warning("Could not score %s: %s", label, outcome)
                        continue
                    if file is None:
                        file = PredictionFile(output, schema)
                    _copy_spool(spool, label, file, sql)
                    spool.unlink()  # free the disk as soon as the rows are in the output
                    rows += outcome
                    scored += 1
        if file is None:
            listed = "; ".join(f"{name}: {why}" for name, why in failed.items())
            raise BatchScoringError(
                f"no file could be scored, nothing was written ({len(failed)} failed): {listed}"
            )
        # SQL first: if its commit fails, the file is dropped too and nothing is half-done.
        if sql is not None:
            sql.commit()
        file.commit()
    except BaseException:
        if file is not None:
            file.abort()
        if sql is not None:
            sql.abort()
        raise
    return BatchResult(output, rows, scored, failed, model.name, model.version, run_id, table)


def _score_all(
    files: Sequence[Path],
    labels: Sequence[str],
    spools: Sequence[Path],
    model: ServingModel,
    chunk_rows: int,
    schema: pa.Schema,
    max_workers: int,
) -> Generator[tuple[str, Path, int | str], None, None]:
    """Score files in worker threads; yield (label, spool, rows or reason) in input order.

    In input order so the output is the same whatever thread finishes first; later files
    keep scoring meanwhile. The cores are shared out between the files scored at once, so
    that their predictions do not start more threads than there are cores.
    """
    threads = max(1, (os.cpu_count() or 1) // min(max_workers, len(files)))
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers, thread_name_prefix="batch-score") as pool:
        futures = [
            pool.submit(_spool_file, path, label, model, chunk_rows, threads, schema, spool, stop)
            for path, label, spool in zip(files, labels, spools, strict=True)
        ]
        try:
            for label, spool, future in zip(labels, spools, futures, strict=True):
                yield label, spool, future.result()
        finally:
            # Only matters when the caller stopped early: workers quit at their next chunk.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _input_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(inputs, str | Path):
        return resolve_inputs(inputs)
    files = list(dict.fromkeys(Path(item) for item in inputs))
    if not files:
        raise BatchScoringError("no input files were given")
    return files


def _labels(files: Sequence[Path]) -> list[str]:
    """Names shown in the ``file`` column: the file name, or a relative path if ambiguous."""
    names = [path.name for path in files]
    if len(set(names)) == len(names):
        return names
    root = os.path.commonpath([path.resolve() for path in files])
    return [str(path.resolve().relative_to(root)) for path in files]


def _spool_file(
    path: Path,
    label: str,
    model: ServingModel,
    chunk_rows: int,
    threads: int,
    schema: pa.Schema,
    spool: Path,
    stop: threading.Event,
) -> int | str:
    """Score one file into `spool`; returns its row count, or why it failed."""
    if stop.is_set():
        return "cancelled: the batch run stopped"
    rows = 0
    try:
        with ipc.new_file(spool, schema) as writer:
            chunks = score_probabilities(path, model, chunk_rows, label=label, threads=threads)
            for batch in chunks:
                if stop.is_set():
                    return "cancelled: the batch run stopped"
                writer.write_batch(batch)
                rows += batch.num_rows
    except BatchScoringError as exc:
        # The result is keyed by the file already; its name need not open the reason too.
        return str(exc).removeprefix(f"{label}: ")
    # Whatever one file does wrong (a predictor error, a full disk) is that file's failure.
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return rows


def _open_sql(
    sql_url: SecretStr | str | None, table: str | None, extra: dict[str, object]
) -> SqlPredictionTable | None:
    if sql_url is None or table is None:
        return None
    secret = sql_url if isinstance(sql_url, SecretStr) else SecretStr(sql_url)
    return SqlPredictionTable(secret, table, extra)


def _copy_spool(
    spool: Path, label: str, file: PredictionFile, sql: SqlPredictionTable | None
) -> None:
    # Memory-mapped: each batch is read from the page cache as it is written out.
    with pa.memory_map(str(spool)) as source, ipc.open_file(source) as spooled:
        for index in range(spooled.num_record_batches):
            batch = spooled.get_batch(index)
            file.write_rows_of(label, batch)
            if sql is not None:
                frame = batch.to_pandas()
                frame.insert(0, FILE_COLUMN, label)
                sql.append(frame)
