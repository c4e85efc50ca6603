"""`retrain-and-deliver`: the nightly job.

Today it retrains, registers and decides (`train-and-register`); the deploy, package and
deliver stages take the approved champion from its outcome. A rejected model stops the
night's run here: nothing downstream ever sees it.

    python -m flows.retrain_and_deliver --config config/model_config.json
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger
from prefect.states import Completed

from flows.train_and_register import DEFAULT_CONFIG, RegistrationOutcome, train_and_register
from modelferry.config import APPROVAL_MODES


@flow(name="retrain-and-deliver", log_prints=True)
def retrain_and_deliver(
    config_path: str = DEFAULT_CONFIG,
    approval: str | None = None,
    tracking_uri: str | None = None,
    approval_poll_seconds: int = 10,
    fail_on_reject: bool = False,
    mlflow_block: str | None = None,
) -> RegistrationOutcome:
    """Retrain the model, and carry an approved champion onwards.

    Args:
        config_path: the model config file (JSON or YAML).
        approval: overrides the config's approval mode: auto, manual or gate+manual.
        tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI`, else the
            embedded SQLite store under `.modelferry/`.
        approval_poll_seconds: how often a paused run checks whether it was resumed.
        fail_on_reject: end the run Failed when the model is rejected.
        mlflow_block: name of a saved `MlflowTracking` block, instead of `tracking_uri`.
    """
    logger = get_run_logger()
    outcome = train_and_register(
        config_path=config_path,
        approval=approval,
        tracking_uri=tracking_uri,
        approval_poll_seconds=approval_poll_seconds,
        fail_on_reject=fail_on_reject,
        mlflow_block=mlflow_block,
    )
    if not outcome.approved:
        logger.info("No new champion tonight; nothing to deliver. %s", outcome.summary())
    return Completed(message=outcome.summary(), data=outcome)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the nightly job once and print where to look."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain_and_deliver")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--approval", choices=APPROVAL_MODES)
    parser.add_argument("--tracking-uri")
    args = parser.parse_args(argv)
    outcome = retrain_and_deliver(args.config, args.approval, args.tracking_uri)
    print()
    print(outcome.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
