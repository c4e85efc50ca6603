"""Load the training data, cached by its inputs and code, so a re-run does not read it again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from modelferry.config import DataConfig, FileDataSource, SqlDataSource
from modelferry.data import Dataset, load_dataset
from tasks.caching import cache_key, task_results_path
from tasks.retry_policy import retry_on_transient

# The code whose every line may change the dataset read from the same source.
DATA_CODE = ("modelferry.data", "modelferry.config", "tasks.data")


def data_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Key of a data load, from its code, library versions, source settings and file.

    The key holds the loading code's fingerprint, the library versions, the source
    settings, plus a file's size and mtime.

    A changed file gets a new key; a SQL source is keyed by its URL (hashed, never stored
    in clear) and query, and its cache expires so fresh rows are read on the next night.
    """
    config: DataConfig = parameters["config"]
    source = config.source
    parts = [config.model_dump_json(exclude={"source"}), source.kind]
    if isinstance(source, FileDataSource):
        stat = source.path.stat() if source.path.exists() else None
        parts += [str(source.path), str(stat.st_size if stat else -1)]
        parts.append(str(stat.st_mtime_ns if stat else -1))
    elif isinstance(source, SqlDataSource):
        parts += [source.url.get_secret_value(), source.query]
    else:
        parts.append(source.model_dump_json())
    return cache_key("modelferry-data", DATA_CODE, parts)


@task(
    name="load-data",
    cache_key_fn=data_cache_key,
    cache_expiration=timedelta(hours=6),
    persist_result=True,
    result_storage=task_results_path(),
    timeout_seconds=900,
    # A database that refused the connection may be back in a moment; bad data will not.
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on_transient,
)
def load_data(config: DataConfig) -> Dataset:
    """Read and validate the data the config names (raises `DataError` when unfit)."""
    return load_dataset(config)
