"""Links to a registered model version and to a run, for link artifacts: servers only."""

from __future__ import annotations

import pytest

from modelferry.registry.links import model_version_link, model_version_url, run_link


def test_a_server_gives_the_version_page_without_credentials() -> None:
    link = model_version_link("https://ci:s3cret@mlflow.example.com/mlflow/", "churn model", "3")

    assert link == "https://mlflow.example.com/mlflow/#/models/churn%20model/versions/3"


def test_a_server_gives_the_run_page() -> None:
    assert (
        run_link("http://mlflow:5000", "7", "abc") == "http://mlflow:5000/#/experiments/7/runs/abc"
    )


@pytest.mark.parametrize(
    "tracking_uri", ["sqlite:///runs.db", "file:///tmp/mlruns", "postgresql://u:pw@db/mlflow"]
)
def test_a_store_without_a_web_address_has_no_link(tracking_uri: str) -> None:
    assert model_version_link(tracking_uri, "churn", "3") is None
    assert run_link(tracking_uri, "7", "abc") is None


def test_a_local_store_says_how_to_open_the_version() -> None:
    text = model_version_url("sqlite:///runs.db", "churn", "3")

    assert "ui --backend-store-uri sqlite:///runs.db" in text
    assert text.endswith("(then open #/models/churn/versions/3)")


def test_a_database_store_is_named_with_its_password_masked() -> None:
    text = model_version_url("postgresql://mlflow:hunter2@db:5432/mlflow", "churn", "3")

    assert "hunter2" not in text
    assert text == "churn version 3 in the MLflow registry at postgresql://***@db:5432/mlflow"
