"""`make server`: the Prefect server (UI + API) and the MLflow tracking server start together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_servers_start_print_urls_and_stop_together(tmp_path: Path) -> None:
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["MODELFERRY_MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.servers",
            "--prefect-port",
            str(prefect_port),
            "--mlflow-port",
            str(mlflow_port),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        assert f"Prefect UI:        http://127.0.0.1:{prefect_port}" in lines[0]
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}" in lines[2]
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=5).json() is True
        ui = httpx.get(f"http://127.0.0.1:{prefect_port}/", timeout=5)
        assert ui.status_code == 200
        assert "<html" in ui.text.lower()
        experiments = httpx.get(
            f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search",
            params={"max_results": 10},
            timeout=5,
        )
        assert experiments.status_code == 200
        assert (tmp_path / "mlflow.db").exists()
        assert (tmp_path / "state" / "prefect").is_dir(), "Prefect's SQLite lives in the state dir"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{prefect_port}/api/health", timeout=1)
        except httpx.HTTPError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the Prefect server kept running after the supervisor stopped")
