"""`batch-score`: score CSV/Parquet files with a registered model, into one predictions file.

Run it by hand from the repository root:

    python -m flows.batch_score --input data/incoming/ --model-name breast-cancer-classifier

In a deployment, give `sql_url` as a Secret block reference, e.g.
``sql_url: "{{ prefect.blocks.secret.predictions-db-url }}"`` in prefect.yaml, so the
URL and its password never sit in the deployment's parameters.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Completed
from pydantic import SecretStr

from flows.notifications import notify_failure
from modelferry.batch import DEFAULT_CHUNK_ROWS, DEFAULT_SQL_TABLE, BatchResult
from modelferry.registry import CHAMPION, TrackingSettings
from modelferry.registry.tracking import DEFAULT_HOME
from tasks.batch import find_batch_inputs, load_batch_model, publish_batch_report, score_batch


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
) -> BatchResult:
    """Score every file `input` names with a registered model version.

    Args:
        input: a CSV/Parquet file, a folder of them, or a glob (``data/2026-*/*.parquet``).
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

    Returns:
        The run's `BatchResult`. The run ends Failed when no file could be scored, and
        Completed with a message naming the failed files when only some could.
    """
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    settings = TrackingSettings.resolve(tracking_uri)
    secret = SecretStr(sql_url) if isinstance(sql_url, str) else sql_url

    files = find_batch_inputs(input)
    model = load_batch_model(settings, model_name, model_alias, model_version)
    logger.info(
        "Scoring %d file(s) with %s v%s, %d rows at a time, %d at once",
        len(files),
        model.name,
        model.version,
        chunk_rows,
        max_workers,
    )
    target = output or str(default_output(model_name, flow_run_id))
    result = score_batch(
        files, model, target, chunk_rows, max_workers, secret, sql_table, flow_run_id
    )
    logger.info(result.summary())
    publish_batch_report(result)
    if result.failed_files:
        logger.warning("%d file(s) could not be scored", len(result.failed_files))
    return Completed(message=result.summary(), data=result)  # type: ignore[return-value]


def default_output(model_name: str, flow_run_id: str) -> Path:
    """`.modelferry/predictions/<model>-<flow-run-id>.parquet`, the name made path-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    return DEFAULT_HOME / "predictions" / f"{safe}-{flow_run_id}.parquet"


def main(argv: list[str] | None = None) -> int:
    """Command line: run the flow once, print the summary."""
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
    args = parser.parse_args(argv)
    # The SQL URL comes from the environment: a command line is visible to every user.
    sql_url = os.environ.get("MODELFERRY_SQL_URL")
    result = batch_score(
        args.input,
        args.model_name,
        args.model_alias,
        args.model_version,
        args.output,
        args.chunk_rows,
        args.max_workers,
        SecretStr(sql_url) if sql_url else None,
        args.sql_table,
        args.tracking_uri,
    )
    print(result.summary())
    return 1 if result.failed_files else 0


if __name__ == "__main__":
    sys.exit(main())
