"""MLflow registry operations on a real (SQLite) store, and error classification."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.config import DataConfig, ModelSpec, SplitConfig
from modelferry.data import load_dataset
from modelferry.errors import RegistryError, TrackingUnavailableError
from modelferry.registry import (
    ModelRegistry,
    TrackingSettings,
    is_transient,
    lineage_tags,
    log_training_run,
    tracking_errors,
)
from modelferry.training import (
    classification_metrics,
    predict_positive_proba,
    split_dataset,
    train_model,
)


def test_embedded_settings_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = TrackingSettings.resolve(None, home=tmp_path / ".modelferry")
    assert settings.tracking_uri == f"sqlite:///{tmp_path / '.modelferry' / 'mlflow.db'}"
    assert settings.artifact_location == (tmp_path / ".modelferry" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    from_env = TrackingSettings.resolve(None)
    assert from_env.tracking_uri == "http://mlflow.internal:5000"
    assert from_env.run_url("3", "abc") == "http://mlflow.internal:5000/#/experiments/3/runs/abc"


def test_secrets_never_in_repr_or_errors() -> None:
    settings = TrackingSettings("https://ci:pw-9@mlflow.example", password=SecretStr("pw-9"))
    assert "pw-9" not in repr(settings)
    with pytest.raises(TrackingUnavailableError) as info:  # noqa: SIM117
        with tracking_errors(settings, "testing"):
            raise ConnectionError("Connection refused")
    assert "pw-9" not in str(info.value)
    assert "https://***@mlflow.example" in str(info.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionError("refused"), True),
        (TimeoutError(), True),
        (RuntimeError("API request to http://x failed with exception Max retries exceeded"), True),
        (RuntimeError("Response: status code 503"), True),
        (ValueError("RESOURCE_ALREADY_EXISTS"), False),
        (KeyError("label"), False),
    ],
)
def test_transient_classification(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_refusal_is_a_registry_error() -> None:
    settings = TrackingSettings("sqlite:///x.db")
    with pytest.raises(RegistryError, match="refused doing x: bad name"):  # noqa: SIM117
        with tracking_errors(settings, "doing x"):
            raise ValueError("bad name")


def test_lineage_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUILD_BUILDID", "4711")
    monkeypatch.setenv("BUILD_SOURCEVERSION", "a" * 40)
    assert lineage_tags("run-1") == {
        "git.commit": "a" * 40,
        "ci.build_id": "4711",
        "prefect.flow_run_id": "run-1",
    }
    monkeypatch.delenv("BUILD_BUILDID")
    assert "ci.build_id" not in lineage_tags(None)


def test_register_alias_promote_and_load(tmp_path: Path) -> None:
    settings = TrackingSettings.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = load_dataset(DataConfig(label_column="target"))
    split = split_dataset(dataset, SplitConfig(), seed=1)
    trained = train_model(ModelSpec(type="logistic_regression"), split, seed=1)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    metrics = classification_metrics(split.y_test, proba)
    logged = log_training_run(settings, "exp", trained, dataset, split, metrics, proba, {})
    registry = ModelRegistry(settings)
    assert registry.get_by_alias("m", "champion") is None
    assert registry.list_versions("m") == []

    tags = {"modelferry.flavor": "sklearn"}
    v1 = registry.register("m", logged.model_uri, logged.run_id, tags)
    v2 = registry.register("m", logged.model_uri, logged.run_id, tags)
    assert (v1.version, v2.version) == ("1", "2")
    assert registry.promote("m", "1") is None
    previous = registry.promote("m", "2")
    assert previous is not None
    assert previous.version == "1"
    champion = registry.get_by_alias("m", "champion")
    assert champion is not None
    assert champion.version == "2"
    assert "previous-champion" in registry.get("m", "1").aliases

    model = registry.load_classifier(champion)
    reloaded = predict_positive_proba(model, split.x_test)
    assert reloaded == pytest.approx(proba)
    mlmodel = (Path(tmp_path) / "mlartifacts").rglob("requirements.txt")
    requirements = next(mlmodel).read_text()
    assert "scikit-learn==" in requirements
    assert "skops==" in requirements


@pytest.mark.parametrize("model_type", ["random_forest", "lightgbm"])
def test_every_model_type_logs_and_loads_back(tmp_path: Path, model_type: str) -> None:
    """MLflow saves with skops, which refuses a forest's tree type unless it is trusted."""
    settings = TrackingSettings.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = load_dataset(DataConfig(label_column="target"))
    split = split_dataset(dataset, SplitConfig(), seed=1)
    trained = train_model(ModelSpec(type=model_type, params={"n_estimators": 10}), split, seed=1)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    metrics = classification_metrics(split.y_test, proba)
    logged = log_training_run(settings, "exp", trained, dataset, split, metrics, proba, {})
    registry = ModelRegistry(settings)
    version = registry.register(
        "m", logged.model_uri, logged.run_id, {"modelferry.flavor": trained.flavor}
    )
    reloaded = predict_positive_proba(registry.load_classifier(version), split.x_test)
    assert reloaded == pytest.approx(proba)


def test_load_classifier_names_the_flavors_of_a_python_function_only_model(
    tmp_path: Path,
) -> None:
    import mlflow

    settings = TrackingSettings.resolve(f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings.activate()
    code = tmp_path / "constant.py"
    code.write_text(
        "import mlflow\n\n\nclass Constant(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return [0.5] * len(model_input)\n\n\nmlflow.models.set_model(Constant())\n"
    )
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="m", python_model=str(code), registered_model_name="c")
    registry = ModelRegistry(settings)
    version = registry.get("c", "1")
    assert "python_function" in registry.flavors(version)
    with pytest.raises(RegistryError, match="has flavors python_function; loading it natively"):
        registry.load_classifier(version)
    assert registry.load_pyfunc(version).predict([[1.0], [2.0]]) == [0.5, 0.5]
