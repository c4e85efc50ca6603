"""MLflow steps: log and register the challenger, score the champion, record the decision."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from modelferry.approval import ApprovalDecision, GateResult
from modelferry.config import ModelConfig
from modelferry.data import Dataset
from modelferry.errors import DataError, ModelferryError
from modelferry.registry import (
    CHALLENGER,
    CHAMPION,
    CLASS_NAMES_TAG,
    PREVIOUS_CHAMPION,
    LoggedRun,
    ModelRegistry,
    RegisteredVersion,
    TrackingSettings,
    log_gate_result,
    log_picture,
    log_training_run,
)
from modelferry.training import DatasetSplit, classification_metrics, predict_positive_proba
from tasks.retry_policy import TRANSIENT_RETRIES, TRANSIENT_RETRY_DELAYS, retry_on_transient
from tasks.training import TrainingResult

P = ParamSpec("P")
R = TypeVar("R")


def _mlflow_step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    # These steps change the registry: they are retried when MLflow is unreachable, and
    # never served from a cache.
    return task(
        name=name,
        cache_policy=NO_CACHE,
        retries=TRANSIENT_RETRIES,
        retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
        retry_condition_fn=retry_on_transient,
        timeout_seconds=900,
    )


@dataclass(frozen=True)
class ChampionScore:
    """The current champion scored on the challenger's test set (or why it was not)."""

    version: str | None
    metrics: dict[str, float] | None
    note: str | None


@_mlflow_step("register-challenger")
def register_challenger(
    settings: TrackingSettings,
    config: ModelConfig,
    dataset: Dataset,
    result: TrainingResult,
    lineage: dict[str, str],
) -> tuple[LoggedRun, RegisteredVersion]:
    """Log the run, register the model as a new version and alias it `challenger`.

    The version is tagged with its metrics, data digest and lineage at creation, and with
    `decision.status=pending` until the approval step records the outcome.
    """
    logged = log_training_run(
        settings,
        config.experiment_name,
        result.trained,
        dataset,
        result.split,
        result.test_metrics,
        result.test_proba,
        tags=lineage,
    )
    tags = {
        **{f"metric.{name}": f"{value:.6f}" for name, value in result.test_metrics.items()},
        "dataset.digest": dataset.digest,
        "dataset.source": dataset.source_uri,
        "dataset.rows": str(dataset.row_count),
        "modelferry.flavor": result.trained.flavor,
        CLASS_NAMES_TAG: json.dumps(list(dataset.class_names)),
        "modelferry.model_type": result.trained.model_type,
        "mlflow.run_url": logged.url,
        "decision.status": "pending",
        **lineage,
    }
    registry = ModelRegistry(settings)
    version = registry.register(
        config.registered_model_name, logged.model_uri, logged.run_id, tags, logged.model_id
    )
    registry.set_alias(config.registered_model_name, CHALLENGER, version.version)
    return logged, version


@_mlflow_step("score-champion")
def score_champion(
    settings: TrackingSettings, model_name: str, split: DatasetSplit
) -> ChampionScore:
    """Score the current champion on the same test set the challenger was scored on."""
    registry = ModelRegistry(settings)
    champion = registry.get_by_alias(model_name, CHAMPION)
    if champion is None:
        return ChampionScore(None, None, "No champion yet: the gate checks absolute thresholds.")
    estimator = registry.load_classifier(champion)
    try:
        proba = predict_positive_proba(estimator, split.x_test)
    except DataError as exc:
        note = (
            f"Champion v{champion.version} cannot score this data ({exc}); "
            "the gate checks absolute thresholds only."
        )
        return ChampionScore(champion.version, None, note)
    return ChampionScore(champion.version, classification_metrics(split.y_test, proba), None)


@_mlflow_step("log-gate-result")
def log_gate(settings: TrackingSettings, run_id: str, gate: GateResult, title: str) -> None:
    """Keep the gate's table, verdict and chart in the challenger's MLflow run."""
    log_gate_result(settings, run_id, gate, title)


@_mlflow_step("record-decision")
def record_decision(
    settings: TrackingSettings, version: RegisteredVersion, decision: ApprovalDecision
) -> RegisteredVersion | None:
    """Store the decision on the version; if approved, move `champion` to it.

    Returns:
        The champion before this decision when the version was promoted, else None.
    """
    registry = ModelRegistry(settings)
    registry.set_tags(version.name, version.version, decision.to_tags())
    if not decision.approved:
        return None
    return registry.promote(version.name, version.version)


@_mlflow_step("read-champions")
def read_champions(settings: TrackingSettings, model_name: str) -> tuple[str | None, str | None]:
    """The versions the `champion` and `previous-champion` aliases point at (None if unset)."""
    registry = ModelRegistry(settings)
    champion = registry.get_by_alias(model_name, CHAMPION)
    previous = registry.get_by_alias(model_name, PREVIOUS_CHAMPION)
    return (
        champion.version if champion else None,
        previous.version if previous else None,
    )


@task(name="log-picture", cache_policy=NO_CACHE, timeout_seconds=300)
def log_version_picture(
    settings: TrackingSettings,
    model_name: str,
    model_version: str,
    artifact_file: str,
    draw: Callable[[Path], Path],
) -> str | None:
    """Draw a picture into the MLflow run of a model version; returns the artifact path.

    What the picture shows has happened by then (traffic moved, devices installed): a
    version without a run, or MLflow being away, leaves the picture out with a warning
    (None) rather than failing the run or hiding why it failed.
    """
    logger = get_run_logger()
    store = settings.tracking_uri.removeprefix("sqlite:///")
    if store != settings.tracking_uri and not Path(store).is_file():
        # A SQLite store that does not exist holds no version: opening it would create it.
        logger.warning("Left out %s: no MLflow store at %s", artifact_file, store)
        return None
    try:
        run_id = ModelRegistry(settings).get(model_name, model_version).run_id
        if run_id is None:
            logger.warning(
                "Left out %s: %s v%s has no MLflow run", artifact_file, model_name, model_version
            )
            return None
        logged = log_picture(settings, run_id, artifact_file, draw)
    except ModelferryError as exc:
        logger.warning("Left out %s: %s", artifact_file, exc)
        return None
    return artifact_file if logged else None
