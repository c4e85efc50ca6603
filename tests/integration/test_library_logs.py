"""A warning the library logs during a flow run is in that run's logs on the server."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from sklearn.datasets import load_breast_cancer

from flows.train_and_register import train_and_register
from modelferry.serving.model import COMPILED_MODELS_ENV
from tests.integration.flow_helpers import REPO, api_filter, write_config

pytestmark = pytest.mark.integration

MODEL = "breast-cancer-classifier"
# What each entry point would otherwise inherit from the test process or a developer's shell.
PREFECT_LOGGING_VARIABLES = (
    "PREFECT_LOGGING_EXTRA_LOGGERS",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW",
)


async def _read_logs(flow_run_id: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
        )


def test_a_library_warning_during_a_command_line_run_is_in_the_runs_logs(
    prefect_harness: str, tmp_path: Path, mlflow_uri: str
) -> None:
    """The batch falls back from compiled trees to LightGBM's own predictor when the
    compiled-model folder cannot be created, and `modelferry.serving.model` warns."""
    assert train_and_register(str(write_config(tmp_path)), tracking_uri=mlflow_uri).approved
    data = tmp_path / "rows.parquet"
    load_breast_cancer(as_frame=True).data.iloc[:50].to_parquet(data, index=False)
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in PREFECT_LOGGING_VARIABLES}
    env |= {
        "PREFECT_API_URL": prefect_harness,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        COMPILED_MODELS_ENV: str(not_a_folder / "compiled-models"),
    }
    args = ["--input", str(data), "--model-name", MODEL, "--tracking-uri", mlflow_uri]
    args += ["--output", str(tmp_path / "predictions.parquet")]

    done = subprocess.run(
        [sys.executable, "-m", "flows.batch_score", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert "with LightGBM's own predictor" in console  # the console always had it
    name = re.search(r"Beginning flow run '([^']+)'", console)
    assert name is not None, console
    run = api_filter("/flow_runs/filter", {"flow_runs": {"name": {"any_": [name[1]]}}})[0]
    logs = asyncio.run(_read_logs(run["id"]))
    warnings = [
        log
        for log in logs
        if log.name == "modelferry.serving.model" and "own predictor" in log.message
    ]
    assert len(warnings) == 1, [(log.name, log.message) for log in logs]
    warning = warnings[0]
    assert warning.level == logging.WARNING
    assert f"Scoring {MODEL} v1 with LightGBM's own predictor" in warning.message
    assert "cannot create the compiled-model folder" in warning.message
    assert warning.task_run_id is not None  # in the task that loaded the model
