"""A warning the library logs during a flow run is in that run's logs on the server.

The batch falls back from compiled trees to LightGBM's own predictor when the
compiled-model folder cannot be created, and `modelferry.serving.model` warns; each test
starts a real run that way, by an entry point of its own, in a process of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from sklearn.datasets import load_breast_cancer

from flows.inputs import Targets
from flows.train_and_register import train_and_register
from modelferry.serving.compiled import COMPILED_MODELS_ENV
from tests.integration.flow_helpers import REPO, api_filter, api_post, write_config

pytestmark = pytest.mark.integration

MODEL = "breast-cancer-classifier"
# What each entry point would otherwise inherit from the test process or a developer's shell.
PREFECT_LOGGING_VARIABLES = (
    "PREFECT_LOGGING_EXTRA_LOGGERS",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW",
)


@dataclass(frozen=True)
class Champion:
    """A registered champion and rows to score with it."""

    tracking_uri: str
    rows: Path


@pytest.fixture(scope="module")
def champion(prefect_harness: str, tmp_path_factory: pytest.TempPathFactory) -> Champion:
    folder = tmp_path_factory.mktemp("champion")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert train_and_register(
        str(write_config(folder)), targets=Targets(tracking_uri=tracking_uri)
    ).approved
    rows = folder / "rows.parquet"
    load_breast_cancer(as_frame=True).data.iloc[:50].to_parquet(rows, index=False)
    return Champion(tracking_uri, rows)


def _entry_point_env(prefect_harness: str, tmp_path: Path) -> dict[str, str]:
    """The test server, a PREFECT_HOME of its own, a compiled-model folder that cannot be."""
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in PREFECT_LOGGING_VARIABLES}
    return env | {
        "PREFECT_API_URL": prefect_harness,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        COMPILED_MODELS_ENV: str(not_a_folder / "compiled-models"),
    }


async def _read_logs(flow_run_id: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
        )


def _assert_the_fallback_warning_is_in(flow_run_id: str) -> None:
    logs = asyncio.run(_read_logs(flow_run_id))
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


def test_a_library_warning_during_a_command_line_run_is_in_the_runs_logs(
    prefect_harness: str, champion: Champion, tmp_path: Path
) -> None:
    args = ["--input", str(champion.rows), "--model-name", MODEL]
    args += ["--tracking-uri", champion.tracking_uri]
    args += ["--output", str(tmp_path / "predictions.parquet")]

    done = subprocess.run(
        [sys.executable, "-m", "flows.batch_score", *args],
        cwd=REPO,
        env=_entry_point_env(prefect_harness, tmp_path),
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
    _assert_the_fallback_warning_is_in(run["id"])


def _deployment_id(name: str, serve: subprocess.Popen[str], deadline: float) -> str:
    while time.monotonic() < deadline:
        assert serve.poll() is None, "python -m deployments.serve exited"
        found = api_filter("/deployments/filter", {"deployments": {"name": {"any_": [name]}}})
        if found:
            return str(found[0]["id"])
        time.sleep(1)
    raise AssertionError(f"deployment {name!r} not registered by the serve process in time")


def _final_state(flow_run_id: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        run = api_filter("/flow_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})[0]
        if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return str(run["state_type"])
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not end in time")


def _wait_for_the_runs_last_log(flow_run_id: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        logs = asyncio.run(_read_logs(flow_run_id))
        if any(log.task_run_id is None and "Finished in state" in log.message for log in logs):
            return
        time.sleep(1)
    raise AssertionError(f"the last log line of flow run {flow_run_id} never arrived")


def test_a_library_warning_during_a_served_run_is_in_the_runs_logs(
    prefect_harness: str, champion: Champion, tmp_path: Path
) -> None:
    spec = tmp_path / "prefect.yaml"
    deployment = {
        "name": "library-logs",
        "entrypoint": "flows/batch_score.py:batch_score",
        "parameters": {
            "input": str(champion.rows),
            "model_name": MODEL,
            "tracking_uri": champion.tracking_uri,
            "output": str(tmp_path / "predictions.parquet"),
        },
    }
    spec.write_text(yaml.safe_dump({"deployments": [deployment]}), encoding="utf-8")
    console = tmp_path / "serve.log"
    deadline = time.monotonic() + 240
    with console.open("w", encoding="utf-8") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve", "--prefect-yaml", str(spec)],
            cwd=REPO,
            env=_entry_point_env(prefect_harness, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deployment_id = _deployment_id("library-logs", serve, deadline)
            created = api_post(f"/deployments/{deployment_id}/create_flow_run", {})
            flow_run_id = str(created["id"])
            state = _final_state(flow_run_id, deadline)
            # The serve process sends logs in batches: a run's last lines reach the server
            # a moment after its final state. Stopped sooner, it would drop them.
            _wait_for_the_runs_last_log(flow_run_id, deadline)
        finally:
            serve.terminate()
            serve.wait(timeout=30)

    assert state == "COMPLETED", console.read_text(encoding="utf-8")
    _assert_the_fallback_warning_is_in(flow_run_id)
