"""`batch-score`: score CSV/Parquet files with a registered model, into one predictions file.

Run it by hand from the repository root:

    python -m flows.batch_score --input data/incoming/ --model-name breast-cancer-classifier

It exits 0 when the run ends Completed and 1 when it ends Failed.

In a deployment, give `sql_url` as a Secret block reference, e.g.
``sql_url: "{{ prefect.blocks.secret.predictions-db-url }}"`` in prefect.yaml, so the
URL and its password never sit in the deployment's parameters.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import SecretStr

from flows.current_run import completed, current_flow_run_id, failed
from flows.notifications import notify_failure
from modelferry.batch import DEFAULT_CHUNK_ROWS, DEFAULT_SQL_TABLE, BatchResult
from modelferry.registry import CHAMPION, TrackingSettings
from modelferry.registry.tracking import DEFAULT_HOME
from modelferry.settings import load_settings
from tasks.batch import find_batch_inputs, load_batch_model, publish_batch_report, score_batch
from tasks.mlflow_links import publish_mlflow_links
from tasks.progress import LiveProgressArtifact, artifact_key


@flow(
    name="batch-score",
    log_prints=True,
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
)
def batch_score(
    input: str,
    model_name: str,
    model_alias: str = CHAMPION,
    model_version: str | None = None,
    output: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_workers: int = 2,
    sql_url: SecretStr | str | None = None,
    sql_table: str = DEFAULT_SQL_TABLE,
    tracking_uri: str | None = None,
    max_failed_files: int = 0,
    id_column: str | None = None,
) -> BatchResult:
    """Score every file `input` names with a registered model version.

    Args:
        input: a CSV/Parquet file, a folder of them, or a glob (``data/2026-*/*.parquet``);
            the output and earlier predictions files among them are left out.
        model_name: the registered model.
        model_alias: the alias of the version to use when `model_version` is not given.
        model_version: a version number; wins over `model_alias`.
        output: the predictions file (Parquet if it ends in ``.parquet``, else CSV);
            default ``.modelferry/predictions/<model>-<flow-run-id>.parquet``.
        chunk_rows: rows read and predicted at a time; memory grows with this.
        max_workers: files scored at once.
        sql_url: SQLAlchemy URL of a database to append the predictions to. A secret:
            pass a `SecretStr` (Prefect stores it masked) or a Secret block reference.
        sql_table: the table appended to when `sql_url` is given.
        tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI`, else the
            embedded SQLite store under `.modelferry/`.
        max_failed_files: bad files that may be skipped while the others' predictions are
            written; one more fails the run, and then nothing is written.
        id_column: a column of every input passed through, as text, so predictions can
            be joined to their rows; a file without it is a bad file.

    Returns:
        Completed, with the run's `BatchResult` and its summary as the message; or Failed,
        with nothing written, when more files failed than `max_failed_files` or none could
        be scored. The message names each bad file and why, once.
    """
    logger = get_run_logger()
    flow_run_id = current_flow_run_id()
    settings = TrackingSettings.resolve(tracking_uri)
    secret = SecretStr(sql_url) if isinstance(sql_url, str) else sql_url

    files = find_batch_inputs(input)
    model = load_batch_model(settings, model_name, model_alias, model_version)
    logger.info(
        "Scoring %s with %s v%s, %d rows at a time, %d file(s) at once",
        input,
        model.name,
        model.version,
        chunk_rows,
        max_workers,
    )
    publish_mlflow_links(settings, model.name, model.version, f"batch-{model_name}")
    target = output or str(default_output(model_name, flow_run_id))
    with LiveProgressArtifact(
        artifact_key(f"batch-progress-{model_name}"),
        f"Batch scoring of {input} with {model.name} v{model.version}",
        "rows done",
    ) as progress:
        result = score_batch(
            files,
            model,
            target,
            chunk_rows,
            max_workers,
            secret,
            sql_table,
            flow_run_id,
            max_failed_files,
            id_column,
            progress,
        )
    publish_batch_report(result)
    # The summary is the run's message, which Prefect logs as the run ends: said once.
    if not result.written:
        return failed(result)
    return completed(result)


def default_output(model_name: str, flow_run_id: str) -> Path:
    """`.modelferry/predictions/<model>-<flow-run-id>.parquet`, the name made path-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    return DEFAULT_HOME / "predictions" / f"{safe}-{flow_run_id}.parquet"


def main(argv: list[str] | None = None) -> int:
    """Command line: run the flow once; 0 if it ends Completed, else 1.

    The outcome is the run's final message, logged as it ends; nothing is printed twice.
    """
    parser = argparse.ArgumentParser(prog="python -m flows.batch_score")
    parser.add_argument("--input", required=True, help="file, folder or glob")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-alias", default=CHAMPION)
    parser.add_argument("--model-version")
    parser.add_argument("--output")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--sql-table", default=DEFAULT_SQL_TABLE)
    parser.add_argument("--tracking-uri")
    parser.add_argument(
        "--max-failed-files", type=int, default=0, help="bad files that may be skipped"
    )
    parser.add_argument("--id-column", help="column passed through to join predictions to rows")
    args = parser.parse_args(argv)
    # The SQL URL comes from the environment: a command line is visible to every user.
    sql_url = load_settings().sql_url
    state = batch_score(
        args.input,
        args.model_name,
        args.model_alias,
        args.model_version,
        args.output,
        args.chunk_rows,
        args.max_workers,
        sql_url,
        args.sql_table,
        args.tracking_uri,
        args.max_failed_files,
        args.id_column,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
