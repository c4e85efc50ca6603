"""Batch scoring steps: find the inputs, load the model, score, report.

Nothing here is cached: the same files may hold new rows, and a re-run must score again.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from modelferry.batch import BatchResult, resolve_inputs, run_batch
from modelferry.errors import BatchScoringError
from modelferry.progress import ProgressCallback
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.serving.model import ServingModel, load_serving_model, with_compiled_trees
from tasks.retry_policy import TRANSIENT_RETRIES, TRANSIENT_RETRY_DELAYS, retry_on_transient

#: The longest a batch may score before its task is failed; large backfills may need more.
BATCH_TIMEOUT_SECONDS = 4 * 3600


@task(name="find-batch-inputs", cache_policy=NO_CACHE, timeout_seconds=300)
def find_batch_inputs(spec: str) -> list[Path]:
    """The files a file, folder or glob names (raises `BatchScoringError` when none)."""
    return resolve_inputs(spec)


@task(
    name="load-batch-model",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_on_transient,
    timeout_seconds=900,
)
def load_batch_model(
    settings: TrackingSettings, model_name: str, model_alias: str, model_version: str | None
) -> ServingModel:
    """Load `model_version` if given, else the version `model_alias` points at.

    LightGBM trees are compiled to native code for speed (see `with_compiled_trees`).
    """
    registry = ModelRegistry(settings)
    if model_version:
        version = registry.get(model_name, model_version)
    else:
        found = registry.get_by_alias(model_name, model_alias)
        if found is None:
            raise BatchScoringError(
                f"model {model_name!r} has no version aliased {model_alias!r}; register and "
                "approve one with train-and-register, or pass model_version"
            )
        version = found
    # Batches score millions of rows: LightGBM trees are compiled to native code (checked
    # against LightGBM first, cached per model); anything else scores as it is.
    return with_compiled_trees(load_serving_model(registry, version))


@task(
    name="score-batch",
    cache_policy=NO_CACHE,
    # The output and SQL rows are all-or-nothing, so a re-run after a database outage
    # cannot duplicate rows; bad input fails the same way every time and is not retried.
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=retry_on_transient,
    timeout_seconds=BATCH_TIMEOUT_SECONDS,
)
def score_batch(
    files: list[Path],
    model: ServingModel,
    output: str,
    chunk_rows: int,
    max_workers: int,
    sql_url: SecretStr | None,
    sql_table: str,
    run_id: str,
    max_failed_files: int,
    id_column: str | None,
    on_progress: ProgressCallback | None = None,
) -> BatchResult:
    """Score `files` into `output` (and the SQL table when `sql_url` is given).

    Bad files do not fail the task: the result names them, and the flow decides the run's
    state from it, so each reason is reported once. `on_progress` is told (rows done,
    rows) from the worker threads: it must not block.
    """
    return run_batch(
        files,
        model,
        output,
        chunk_rows=chunk_rows,
        max_workers=max_workers,
        sql_url=sql_url,
        sql_table=sql_table,
        run_id=run_id,
        max_failed_files=max_failed_files,
        id_column=id_column,
        on_progress=on_progress,
    )


@task(name="publish-batch-report", cache_policy=NO_CACHE)
def publish_batch_report(result: BatchResult) -> str:
    """Publish the run's counts and failed files as a markdown artifact; returns the markdown."""
    markdown = result.to_markdown()
    # Artifact keys allow lowercase letters, digits and dashes only.
    key = re.sub(r"[^a-z0-9-]+", "-", f"batch-{result.model_name.lower()}").strip("-")
    create_markdown_artifact(
        markdown=markdown,
        key=key,
        description=f"Batch scoring with {result.model_name} v{result.model_version}",
    )
    return markdown
