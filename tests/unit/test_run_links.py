"""Where a report sends a reviewer to see the MLflow run: a link, a command, or a name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelferry.registry import TrackingSettings
from modelferry.registry.links import artifact_link, run_url


@pytest.mark.parametrize(
    ("tracking_uri", "expected"),
    [
        ("http://mlflow:5000", "http://mlflow:5000/#/experiments/3/runs/abc"),
        ("https://mlflow.example.com/", "https://mlflow.example.com/#/experiments/3/runs/abc"),
        ("https://ml.example.com/mlflow", "https://ml.example.com/mlflow/#/experiments/3/runs/abc"),
    ],
)
def test_tracking_server_gives_a_link_to_its_ui(tracking_uri: str, expected: str) -> None:
    assert run_url(tracking_uri, "3", "abc") == expected


def test_link_never_carries_credentials() -> None:
    link = run_url("https://ci:s3cret-token@mlflow.example.com", "3", "abc")
    assert link == "https://mlflow.example.com/#/experiments/3/runs/abc"


@pytest.mark.parametrize(
    "tracking_uri", ["sqlite:///var/mlflow/mlflow.db", "file:///var/mlruns", "./mlruns"]
)
def test_local_store_gives_the_command_that_shows_it(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/local/bin/{name}")
    assert run_url(tracking_uri, "3", "abc") == (
        f"mlflow ui --backend-store-uri {tracking_uri} (then open #/experiments/3/runs/abc)"
    )


def test_the_command_runs_mlflow_beside_python_when_it_is_not_on_path(
    unactivated_venv: Path,
) -> None:
    (unactivated_venv / "mlflow").write_text("#!/bin/sh\n", encoding="utf-8")

    assert run_url("sqlite:///runs.db", "3", "abc") == (
        ".venv/bin/mlflow ui --backend-store-uri sqlite:///runs.db "
        "(then open #/experiments/3/runs/abc)"
    )


def test_database_store_is_named_without_its_password() -> None:
    text = run_url("postgresql://mlflow:hunter2@db:5432/mlflow", "3", "abc")
    assert text == "run abc of experiment 3 in the MLflow store at postgresql://***@db:5432/mlflow"
    assert "mlflow ui" not in text


def test_tracking_settings_use_the_same_links() -> None:
    settings = TrackingSettings("http://mlflow:5000")
    assert settings.run_url("3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss", "p@ss"])
def test_a_password_with_url_delimiters_never_reaches_the_link(password: str) -> None:
    link = run_url(f"https://ci:{password}@mlflow.example.com", "3", "abc")

    assert link == "https://mlflow.example.com/#/experiments/3/runs/abc"


def test_database_store_is_named_without_a_password_given_as_a_query_parameter() -> None:
    text = run_url("postgresql://mlflow@db:5432/mlflow?password=hunter2&sslmode=require", "3", "a")

    assert "hunter2" not in text
    assert text == (
        "run a of experiment 3 in the MLflow store at "
        "postgresql://***@db:5432/mlflow?password=***&sslmode=require"
    )


def test_database_store_password_with_a_slash_is_masked() -> None:
    text = run_url("mysql://mlflow:pa/ss@db/mlflow", "3", "abc")

    assert text == "run abc of experiment 3 in the MLflow store at mysql://***@db/mlflow"


def test_an_artifact_on_a_tracking_server_has_an_address_without_credentials() -> None:
    link = artifact_link("https://ci:s3cret@mlflow.example.com/mlflow/", "r1", "gate/gate.png")

    assert link == (
        "https://mlflow.example.com/mlflow/get-artifact?path=gate%2Fgate.png&run_uuid=r1"
    )


@pytest.mark.parametrize(
    "tracking_uri", ["sqlite:///m.db", "./mlruns", "postgresql://u:p@db/mlflow", "databricks"]
)
def test_an_artifact_of_a_store_without_a_server_has_no_address(tracking_uri: str) -> None:
    assert artifact_link(tracking_uri, "r1", "gate/gate.png") is None
