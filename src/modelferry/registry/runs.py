"""Log a trained model to MLflow: parameters, metrics, plots, lineage and the model itself."""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelferry.approval.gate import GATE_CHART, GateResult
from modelferry.approval.gate_chart import save_gate_chart
from modelferry.data import Dataset
from modelferry.pictures import draw_picture
from modelferry.registry.tracking import TrackingSettings, tracking_errors
from modelferry.training import (
    DatasetSplit,
    TrainedModel,
    feature_importance,
    save_calibration_curve,
    save_confusion_matrix,
    save_feature_importance,
    save_precision_recall_curve,
    save_roc_curve,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Explicit requirements spare MLflow from inferring them by importing the model.
_REQUIREMENTS = {
    "lightgbm": ("lightgbm", "scikit-learn", "skops", "pandas", "numpy"),
    "sklearn": ("scikit-learn", "skops", "pandas", "numpy"),
}


@dataclass(frozen=True)
class LoggedRun:
    """An MLflow run holding one trained model."""

    run_id: str
    experiment_id: str
    model_uri: str
    model_id: str | None
    url: str


#: Where the gate's table is kept in the challenger's run (an MLflow table artifact).
GATE_TABLE_ARTIFACT = "gate/gate_table.json"
#: The gate's verdict beside it: passed, champion version, failures, note.
GATE_VERDICT_ARTIFACT = "gate/gate_verdict.json"
#: The gate as a picture: champion and challenger per metric, the bars drawn.
GATE_CHART_ARTIFACT = GATE_CHART


def log_gate_result(settings: TrackingSettings, run_id: str, gate: GateResult, title: str) -> None:
    """Log the gate's side-by-side table, its verdict and its chart to the challenger's run.

    The table shows in the run's Artifacts tab and in MLflow's "Evaluation" views, and
    `mlflow.load_table(GATE_TABLE_ARTIFACT, run_ids=[run_id])` reads it back. The chart
    (`GATE_CHART_ARTIFACT`, titled `title`) is the same table drawn.

    Raises:
        TrackingUnavailableError: MLflow could not be reached (worth a retry).
        RegistryError: MLflow refused the artifact.
    """
    from mlflow import MlflowClient

    verdict = {
        "passed": gate.passed,
        "champion_version": gate.champion_version,
        "failures": gate.failures,
        "note": gate.note,
    }
    with tracking_errors(settings, f"logging the gate result to run {run_id}"):
        settings.activate()
        client = MlflowClient(settings.tracking_uri, settings.registry_uri)
        client.log_table(run_id, data=gate.to_table(), artifact_file=GATE_TABLE_ARTIFACT)
        client.log_dict(run_id, verdict, GATE_VERDICT_ARTIFACT)
        _log_drawn(
            client, run_id, GATE_CHART_ARTIFACT, functools.partial(save_gate_chart, gate, title)
        )
        client.set_tag(run_id, "gate.passed", str(gate.passed).lower())


def log_picture(
    settings: TrackingSettings, run_id: str, artifact_file: str, draw: Callable[[Path], Path]
) -> bool:
    """Draw a picture with `draw(path)` and log it to the run as `artifact_file`.

    `artifact_file` is `folder/name.png`. Returns False, logging nothing, when it could not
    be drawn (a warning says why): a picture shows what was decided and never undoes it.

    Raises:
        TrackingUnavailableError: MLflow could not be reached (worth a retry).
        RegistryError: MLflow refused the artifact.
    """
    from mlflow import MlflowClient

    with tracking_errors(settings, f"logging {artifact_file} to run {run_id}"):
        settings.activate()
        client = MlflowClient(settings.tracking_uri, settings.registry_uri)
        return _log_drawn(client, run_id, artifact_file, draw)


def _log_drawn(
    client: MlflowClient, run_id: str, artifact_file: str, draw: Callable[[Path], Path]
) -> bool:
    where = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="modelferry-picture-") as folder:
        path = Path(folder) / where.name
        if not draw_picture(draw, path):
            return False
        client.log_artifact(run_id, str(path), str(where.parent))
    return True


def pip_requirements(flavor: str) -> list[str]:
    """Pinned requirements to load a model of this flavor, at the versions installed here."""
    return [f"{name}=={installed_version(name)}" for name in _REQUIREMENTS[flavor]]


def log_training_run(
    settings: TrackingSettings,
    experiment_name: str,
    trained: TrainedModel,
    dataset: Dataset,
    split: DatasetSplit,
    test_metrics: dict[str, float],
    test_proba: Any,
    tags: dict[str, str],
) -> LoggedRun:
    """Create one MLflow run with everything needed to audit and reproduce the model.

    Raises:
        TrackingUnavailableError: MLflow could not be reached (worth a retry).
        RegistryError: MLflow refused the run.
    """
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    with tracking_errors(settings, f"logging a run to experiment {experiment_name!r}"):
        settings.activate()
        experiment_id = _ensure_experiment(settings, experiment_name)
        sample = split.x_test.head(5)
        with (
            warnings.catch_warnings(),
            mlflow.start_run(experiment_id=experiment_id, tags=tags) as run,
        ):
            # Class labels are integers by nature; MLflow's hint about missing values in
            # integer columns does not apply to a model's output.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            signature = infer_signature(sample, trained.estimator.predict(sample))
            mlflow.log_params(
                {
                    "model_type": trained.model_type,
                    **{f"param.{k}": v for k, v in trained.params.items()},
                    **split.summary(),
                    **trained.extra,
                }
            )
            lineage = from_pandas(
                dataset.frame,
                source=_dataset_source(dataset.source_uri),
                targets=dataset.label_column,
                name=dataset.source_uri.rsplit("/", 1)[-1] or "dataset",
                digest=dataset.digest[:32],
            )
            mlflow.log_input(lineage, context="training")
            mlflow.log_metrics(test_metrics)
            with tempfile.TemporaryDirectory() as tmp:
                plots = Path(tmp)
                save_roc_curve(split.y_test, test_proba, plots / "roc_curve.png")
                save_precision_recall_curve(
                    split.y_test, test_proba, plots / "precision_recall_curve.png"
                )
                save_calibration_curve(split.y_test, test_proba, plots / "calibration_curve.png")
                save_confusion_matrix(split.y_test, test_proba, plots / "confusion_matrix.png")
                importance = feature_importance(trained.estimator, trained.feature_names)
                save_feature_importance(importance, plots / "feature_importance.png")
                mlflow.log_artifacts(str(plots), artifact_path="plots")
            flavor_module = mlflow.lightgbm if trained.flavor == "lightgbm" else mlflow.sklearn
            info = flavor_module.log_model(
                trained.estimator,
                name="model",
                signature=signature,
                input_example=sample,
                pip_requirements=pip_requirements(trained.flavor),
                skops_trusted_types=skops_trusted_types(trained.estimator),
            )
        return LoggedRun(
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            model_uri=info.model_uri,
            model_id=info.model_id,
            url=settings.run_url(experiment_id, run.info.run_id),
        )


def skops_trusted_types(estimator: Any) -> list[str]:
    """The scikit-learn / LightGBM internals the saved model holds, which skops must trust.

    MLflow saves with skops and refuses any type not on skops' default list (a random
    forest's `sklearn.tree._tree.Tree`, say). Only types of the libraries that trained the
    model are trusted; anything else still makes MLflow refuse the model.
    """
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))
    return sorted(t for t in untrusted if t.split(".", 1)[0] in {"sklearn", "lightgbm", "numpy"})


def _ensure_experiment(settings: TrackingSettings, name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(mlflow.create_experiment(name, artifact_location=settings.artifact_location))


def _dataset_source(uri: str) -> Any:
    """An MLflow dataset source: a file path as itself, anything else described by tags."""
    if uri.startswith("file://"):
        return uri
    from mlflow.data.code_dataset_source import CodeDatasetSource

    return CodeDatasetSource(tags={"uri": uri})
