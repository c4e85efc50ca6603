"""`run_batch`: score many files in parallel into one predictions file (and a SQL table).

Worker threads score files (the model and Arrow release the GIL) and spool each file's
probabilities to an Arrow IPC file beside the output (no encoding: writing and reading back
cost next to nothing). The calling thread then streams each finished spool, in input
order, into the one output file and the SQL table. A file that fails part-way therefore
adds no rows at all, and memory holds a few chunks at most.

A run either writes the predictions of every file it could score, or, when more files
failed than it may skip (`max_failed_files`), nothing at all: a re-run after fixing the
files then appends no row twice.
"""

from __future__ import annotations

import contextvars
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

from modelferry.batch.inputs import estimate_rows, leave_out_predictions, resolve_inputs
from modelferry.batch.outputs import PredictionFile, SqlPredictionTable
from modelferry.batch.progress import FileProgress, RowProgress
from modelferry.batch.scoring import (
    DEFAULT_CHUNK_ROWS,
    FILE_COLUMN,
    check_id_column,
    prediction_schema,
    probability_schema,
    score_probabilities,
)
from modelferry.errors import BatchScoringError
from modelferry.progress import ProgressCallback, ProgressReporter
from modelferry.serving.model import ServingModel

#: Table appended to when a SQL URL is given without a table name.
DEFAULT_SQL_TABLE = "predictions"

# Why a file the run stopped early has no rows; it is neither scored nor bad.
_CANCELLED = "cancelled: the batch run stopped"


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote, and which files it could not score (name → reason).

    `written` is False when more files failed than `max_failed_files` allows, or none
    could be scored: then nothing was written and the rows and files scored are 0.
    `left_out` names the input files skipped as predictions (see `leave_out_predictions`).
    """

    output_path: Path
    rows_scored: int
    files_scored: int
    failed_files: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    run_id: str = ""
    sql_table: str | None = None
    written: bool = True
    max_failed_files: int = 0
    left_out: tuple[str, ...] = ()

    def summary(self) -> str:
        """The run in one line, naming every failed file once."""
        failures = "; ".join(f"{name}: {why}" for name, why in self.failed_files.items())
        failed = len(self.failed_files)
        if not self.written and failed > self.max_failed_files:
            text = (
                f"Nothing was written: {failures}. {failed} file(s) failed and "
                f"max_failed_files is {self.max_failed_files}: fix or remove them, or raise "
                "max_failed_files to score the other files without them"
            )
        elif not self.written:
            text = f"Nothing was written: no file could be scored ({failed} failed): {failures}"
        else:
            text = (
                f"Scored {self.rows_scored:,} rows from {self.files_scored} file(s) with "
                f"{self.model_name} v{self.model_version} into {self.output_path}"
            )
            if self.sql_table:
                text += f" and SQL table {self.sql_table!r}"
            if failures:
                text += f"; skipped {failed} file(s) that could not be scored: {failures}"
        if self.left_out:
            text += f"; left out {len(self.left_out)} predictions file(s): "
            text += ", ".join(self.left_out)
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
        if not self.written:
            lines += ["", "Nothing was written."]
        elif self.sql_table:
            lines += ["", f"Also appended to SQL table `{self.sql_table}`."]
        if self.failed_files:
            lines += ["", "## Failed files", "", "| file | reason |", "|---|---|"]
            for name, why in self.failed_files.items():
                lines.append(f"| `{name}` | {why.replace('|', '/')} |")
        if self.left_out:
            listed = ", ".join(f"`{name}`" for name in self.left_out)
            lines += ["", f"Left out as predictions, not inputs: {listed}."]
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
    max_failed_files: int = 0,
    id_column: str | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> BatchResult:
    """Score every input file into one predictions file, and optionally a SQL table.

    Args:
        inputs: a file, folder or glob (see `resolve_inputs`), or a list of files. The
            output file and earlier predictions files among them are left out.
        model: the model to score with.
        output_path: the predictions file; Parquet if it ends in ``.parquet``/``.pq``,
            else CSV. Replaced if it exists.
        chunk_rows: rows read and predicted at a time per file.
        max_workers: files scored at once.
        sql_url: SQLAlchemy URL of a database to append the predictions to; a secret.
        sql_table: the table to append to (default ``predictions``), with the extra
            columns model_name, model_version, run_id and scored_at.
        run_id: identifies this run in the SQL rows; default a random id.
        max_failed_files: files that may fail while the others' predictions are still
            written; one more stops the run, and nothing is written.
        id_column: a column of every file passed through, as text, after ``file``; a
            file without it fails.
        on_progress: told ``(rows done, rows in the inputs)`` as chunks are scored, at
            most once per percent, from the worker threads; a file counts as done once
            scored or found bad. The total is counted before scoring starts (see
            `estimate_rows`), only when a callback is given. See `modelferry.progress`.

    Returns:
        Counts, the output path and each failed file with its reason; `written` is False
        when too many files failed or none could be scored, and then nothing was written.

    Raises:
        BatchScoringError: bad arguments, no input found (or only predictions files), or
            the output file or SQL table could not be written (nothing is kept).
    """
    if chunk_rows < 1 or max_workers < 1 or max_failed_files < 0:
        raise BatchScoringError(
            "chunk_rows and max_workers must be at least 1 and max_failed_files at least 0, "
            f"not {chunk_rows}, {max_workers} and {max_failed_files}"
        )
    check_id_column(model, id_column)
    output = Path(output_path)
    files, left_out = _input_files(inputs, output, model.class_names)
    labels = _labels(files)
    run_id = run_id or uuid.uuid4().hex
    table = (sql_table or DEFAULT_SQL_TABLE) if sql_url is not None else None
    extra = {
        "model_name": model.name,
        "model_version": model.version,
        "run_id": run_id,
        "scored_at": datetime.now(UTC),
    }
    schema = prediction_schema(model.class_names, id_column)
    spooled = probability_schema(model.class_names, id_column)
    estimates = [estimate_rows(path) for path in files] if on_progress else [0] * len(files)
    reporter = ProgressReporter(on_progress, sum(estimates), what="batch")
    progress = RowProgress(reporter, estimates)
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
            reporter.start()
            results = _score_all(
                files, labels, spools, model, chunk_rows, spooled, max_workers, id_column, progress
            )
            # closing(): on an error, or when too many files failed, the workers stop
            # before their spool folder is removed.
            with closing(results):
                for label, spool, outcome in results:
                    if isinstance(outcome, str):
                        failed[label] = outcome
                        if len(failed) > max_failed_files:
                            break
                        continue
                    if file is None:
                        file = PredictionFile(output, schema)
                    _copy_spool(spool, label, file, sql)
                    spool.unlink()  # free the disk as soon as the rows are in the output
                    rows += outcome
                    scored += 1
        if file is None or len(failed) > max_failed_files:
            if file is not None:
                file.abort()
            if sql is not None:
                sql.abort()
            return BatchResult(
                output, 0, 0, failed, model.name, model.version, run_id, table,
                written=False, max_failed_files=max_failed_files, left_out=left_out,
            )  # fmt: skip
        # SQL first: if its commit fails, the file is dropped too and nothing is half-done.
        if sql is not None:
            sql.commit()
        file.commit()
        reporter.finish()
    except BaseException:
        if file is not None:
            file.abort()
        if sql is not None:
            sql.abort()
        raise
    return BatchResult(
        output, rows, scored, failed, model.name, model.version, run_id, table,
        max_failed_files=max_failed_files, left_out=left_out,
    )  # fmt: skip


def _score_all(
    files: Sequence[Path],
    labels: Sequence[str],
    spools: Sequence[Path],
    model: ServingModel,
    chunk_rows: int,
    schema: pa.Schema,
    max_workers: int,
    id_column: str | None,
    progress: RowProgress,
) -> Generator[tuple[str, Path, int | str], None, None]:
    """Score files in worker threads; yield (label, spool, rows or reason) in input order.

    In input order so the output is the same whatever thread finishes first; later files
    keep scoring meanwhile. The cores are shared out between the files scored at once, so
    that their predictions do not start more threads than there are cores.
    """
    threads = max(1, (os.cpu_count() or 1) // min(max_workers, len(files)))
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers, thread_name_prefix="batch-score") as pool:
        # Each worker runs in a copy of the caller's context: an orchestrator's run context
        # and the bound log ids travel with it, so a library warning logged while a file
        # is scored lands in the run's logs like one logged by the caller.
        futures = [
            pool.submit(
                contextvars.copy_context().run,
                _spool_file,
                path,
                label,
                model,
                chunk_rows,
                threads,
                schema,
                spool,
                stop,
                id_column,
                progress.file(index),
            )
            for index, (path, label, spool) in enumerate(zip(files, labels, spools, strict=True))
        ]
        try:
            for label, spool, future in zip(labels, spools, futures, strict=True):
                yield label, spool, future.result()
        finally:
            # Only matters when the caller stopped early: workers quit at their next chunk.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _input_files(
    inputs: str | Path | Sequence[str | Path], output: Path, class_names: Sequence[str]
) -> tuple[list[Path], tuple[str, ...]]:
    """The files to score, and the names of those left out as predictions."""
    if isinstance(inputs, str | Path):
        files = resolve_inputs(inputs)
    else:
        files = list(dict.fromkeys(Path(item) for item in inputs))
    if not files:
        raise BatchScoringError("no input files were given")
    kept, left_out = leave_out_predictions(files, output, class_names)
    if not kept:
        listed = ", ".join(str(path) for path in left_out)
        raise BatchScoringError(
            f"nothing to score: {listed} hold(s) predictions (the output, or a file with "
            "the columns an earlier run wrote); give the files to score"
        )
    return kept, tuple(path.name for path in left_out)


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
    id_column: str | None,
    progress: FileProgress,
) -> int | str:
    """Score one file into `spool`; returns its row count, or why it failed.

    Its chunks count towards the run's progress as they are spooled, and the whole file
    once it ended, scored or bad (not when the run stopped it).
    """
    if stop.is_set():
        return _CANCELLED
    outcome = _spool_rows(
        path, label, model, chunk_rows, threads, schema, spool, stop, id_column, progress
    )
    if outcome != _CANCELLED:
        progress.ended()
    return outcome


def _spool_rows(
    path: Path,
    label: str,
    model: ServingModel,
    chunk_rows: int,
    threads: int,
    schema: pa.Schema,
    spool: Path,
    stop: threading.Event,
    id_column: str | None,
    progress: FileProgress,
) -> int | str:
    rows = 0
    try:
        with ipc.new_file(spool, schema) as writer:
            chunks = score_probabilities(
                path, model, chunk_rows, label=label, threads=threads, id_column=id_column
            )
            for batch in chunks:
                if stop.is_set():
                    return _CANCELLED
                writer.write_batch(batch)
                rows += batch.num_rows
                progress.scored(batch.num_rows)
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
