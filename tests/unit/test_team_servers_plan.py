"""The URLs `make server` gives people and the Prefect UI, for each way of binding."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deployments.servers import PUBLIC_HOST_ENV, plan


@pytest.fixture(autouse=True)
def _no_url_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_UI_API_URL", raising=False)
    monkeypatch.delenv(PUBLIC_HOST_ENV, raising=False)


def test_loopback_servers_are_named_by_their_address(tmp_path: Path) -> None:
    prefect, mlflow = plan("127.0.0.1", 4300, 5300, tmp_path)
    assert prefect.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"
    assert prefect.public_url == "http://127.0.0.1:4300"
    assert mlflow.public_url == "http://127.0.0.1:5300"


def test_a_wildcard_bind_gives_the_ui_the_machines_name_not_0_0_0_0(tmp_path: Path) -> None:
    prefect, mlflow = plan("0.0.0.0", 4200, 5000, tmp_path)
    name = socket.getfqdn()
    assert prefect.env["PREFECT_UI_API_URL"] == f"http://{name}:4200/api"
    assert prefect.public_url == f"http://{name}:4200"
    assert mlflow.public_url == f"http://{name}:5000"
    # Health checks stay on this machine.
    assert prefect.health_url == "http://127.0.0.1:4200/api/health"
    assert mlflow.health_url == "http://127.0.0.1:5000/health"


def test_the_public_name_and_an_explicit_ui_api_url_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PUBLIC_HOST_ENV, "mlops.example.com")
    prefect, mlflow = plan("0.0.0.0", 4200, 5000, tmp_path)
    assert prefect.public_url == "http://mlops.example.com:4200"
    assert mlflow.public_url == "http://mlops.example.com:5000"
    assert prefect.env["PREFECT_UI_API_URL"] == "http://mlops.example.com:4200/api"

    monkeypatch.setenv("PREFECT_UI_API_URL", "https://prefect.example.com/api")
    prefect, _ = plan("0.0.0.0", 4200, 5000, tmp_path)
    assert prefect.env["PREFECT_UI_API_URL"] == "https://prefect.example.com/api"
