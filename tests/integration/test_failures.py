"""Failures: bad input leaves nothing behind; a tracking outage is retried and resumable."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

import tasks.training
from flows.inputs import Targets
from flows.train_and_register import train_and_register
from modelferry.errors import DataError, InvalidConfigError
from tasks.registry import register_challenger
from tests.integration.flow_helpers import api_filter, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _server(prefect_harness: str) -> None:
    """Every test here talks to the shared Prefect test server."""


def csv_source(tmp_path: Path, frame: pd.DataFrame | None) -> dict[str, Any]:
    path = tmp_path / "data.csv"
    if frame is not None:
        frame.to_csv(path, index=False)
    return {"source": {"kind": "file", "path": str(path)}, "min_rows": 20}


def frame(rows: int = 60, **columns: Any) -> pd.DataFrame:
    data: dict[str, Any] = {
        "a": [float(i) for i in range(rows)],
        "b": [float(i % 7) for i in range(rows)],
        "target": [i % 2 for i in range(rows)],
    }
    data.update(columns)
    return pd.DataFrame(data)


BAD_DATA: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "missing file": (lambda p: csv_source(p, None), "does not exist"),
    "label column absent": (
        lambda p: csv_source(p, frame().rename(columns={"target": "y"})),
        "target",
    ),
    "one class only": (lambda p: csv_source(p, frame(target=[1] * 60)), "class"),
    "too few rows": (lambda p: csv_source(p, frame(rows=12)), "12"),
    "all-NaN feature": (lambda p: csv_source(p, frame(c=[float("nan")] * 60)), "'c'"),
}


def assert_nothing_registered(uri: str) -> None:
    client = MlflowClient(uri, uri)
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments]) if experiments else []
    assert runs == []


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_fails_before_training_and_registers_nothing(
    case: str, tmp_path: Path, mlflow_uri: str
) -> None:
    make_data, fragment = BAD_DATA[case]
    data = {**make_data(tmp_path), "label_column": "target", "class_names": ["no", "yes"]}
    config = write_config(tmp_path, data=data)

    with pytest.raises(DataError) as info:
        train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))

    assert fragment in str(info.value)
    assert_nothing_registered(mlflow_uri)


def test_invalid_config_fails_at_once_and_registers_nothing(
    tmp_path: Path, mlflow_uri: str
) -> None:
    config = write_config(tmp_path, model={"type": "xgboost"})
    with pytest.raises(InvalidConfigError, match=r"model\.type: got 'xgboost'"):
        train_and_register(str(config), targets=Targets(tracking_uri=mlflow_uri))
    with pytest.raises(InvalidConfigError, match="approval: got 'maybe'"):
        train_and_register(
            str(write_config(tmp_path)), approval="maybe", targets=Targets(tracking_uri=mlflow_uri)
        )
    assert_nothing_registered(mlflow_uri)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(home: Path, port: int) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, served artifacts) on `port`."""
    mlflow = Path(sys.executable).with_name("mlflow")
    log = (home / "mlflow-server.log").open("wb")
    process = subprocess.Popen(
        [
            str(mlflow), "server",
            "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
            "--artifacts-destination", str(home / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (home / "mlflow-server.log").read_text()
            time.sleep(0.5)
        else:
            raise AssertionError("MLflow server did not start within 90 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_rerun_after_tracking_outage_reuses_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits: list[int] = []
    real_train_model = tasks.training.train_model

    def counting_train_model(*args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return real_train_model(*args, **kwargs)

    monkeypatch.setattr(tasks.training, "train_model", counting_train_model)
    monkeypatch.setattr(register_challenger, "retry_delay_seconds", [0.1, 0.1, 0.1])
    # A project of its own (cached results live under it) and a seed no other test uses,
    # so the first run really trains.
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, seed=4242)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"

    state = train_and_register(str(config), targets=Targets(tracking_uri=uri), return_state=True)

    assert state.is_failed()
    assert "did not answer" in str(state.message)
    assert len(fits) == 1
    flow_run_id = str(state.state_details.flow_run_id)
    runs = api_filter("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    register = next(r for r in runs if r["name"].startswith("register-challenger"))
    assert register["run_count"] == 4  # the first try and three retries

    with mlflow_server(tmp_path, port):
        outcome = train_and_register(str(config), targets=Targets(tracking_uri=uri))
        client_versions = MlflowClient(uri, uri).search_model_versions()

    assert len(fits) == 1, "the rerun trained again instead of using the cached model"
    assert outcome.approved
    assert outcome.run_url.startswith(f"{uri}/#/experiments/")
    assert [v.version for v in client_versions] == ["1"]
