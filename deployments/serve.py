"""Serve the deployments of prefect.yaml from this process, without a work pool.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve

The schedule and parameters mirror prefect.yaml, so `prefect deployment run
'retrain-and-deliver/nightly'` works the same against either.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.batch_score import batch_score
from flows.retrain_and_deliver import retrain_and_deliver
from flows.train_and_register import DEFAULT_CONFIG, train_and_register

NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "Europe/Amsterdam"
BATCH_CRON = "0 3 * * *"


def build_deployments() -> list[RunnerDeployment]:
    """The nightly, CI and daily batch deployments, as prefect.yaml defines them."""
    nightly = retrain_and_deliver.to_deployment(
        name="nightly",
        cron=NIGHTLY_CRON,
        timezone=NIGHTLY_TIMEZONE,
        parameters={"config_path": DEFAULT_CONFIG},
        tags=["modelferry", "nightly"],
    )
    ci = train_and_register.to_deployment(
        name="ci",
        parameters={"config_path": DEFAULT_CONFIG, "approval": "gate+manual"},
        tags=["modelferry", "ci"],
    )
    daily = batch_score.to_deployment(
        name="daily",
        cron=BATCH_CRON,
        timezone=NIGHTLY_TIMEZONE,
        parameters={
            "input": "data/incoming/*.parquet",
            "model_name": "breast-cancer-classifier",
            "model_alias": "champion",
            "sql_url": "sqlite:///.modelferry/predictions.db",
            "sql_table": "predictions",
        },
        tags=["modelferry", "batch"],
    )
    return [nightly, ci, daily]


def main() -> None:
    """Register both deployments and run their flow runs until interrupted."""
    serve(*build_deployments())


if __name__ == "__main__":
    main()
