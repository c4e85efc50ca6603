"""The LightGBM fast paths give exactly what `Booster.predict` gives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from modelferry.config import DataConfig, ModelSpec, SplitConfig
from modelferry.data import load_dataset
from modelferry.serving.model import BoosterPredictor
from modelferry.training import split_dataset, train_model


@pytest.fixture(scope="module")
def booster() -> object:
    split = split_dataset(load_dataset(DataConfig(label_column="target")), SplitConfig(), seed=3)
    # Early stopping sets best_iteration: every path must honour it.
    trained = train_model(ModelSpec(params={"n_estimators": 400}), split, seed=3)
    assert 0 < trained.extra["best_iteration"] < 400
    return trained.estimator.booster_  # type: ignore[attr-defined]


def test_single_row_fast_path_matches_booster_predict(
    booster: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = BoosterPredictor(booster)
    rows = load_breast_cancer().data.astype(np.float64)
    expected = booster.predict(rows)  # type: ignore[attr-defined]
    batch = predictor.predict_proba(rows)
    np.testing.assert_allclose(batch[:, 1], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)

    # One-row requests never reach Booster.predict (which rebuilds its predictor per call):
    # with it refusing, every row still scores, and as Booster.predict would have.
    batches: list[int] = []

    def refuse(features: np.ndarray, **kwargs: object) -> np.ndarray:
        batches.append(len(features))
        raise AssertionError("Booster.predict called")

    monkeypatch.setattr(booster, "predict", refuse)
    single = np.array([predictor.predict_proba(rows[i : i + 1])[0, 1] for i in range(len(rows))])
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    assert batches == []
    with pytest.raises(AssertionError, match=r"Booster\.predict called"):
        predictor.predict_proba(rows[:2])  # two rows take Booster.predict
    assert batches == [2]


def test_a_single_row_of_the_wrong_width_is_refused(booster: object) -> None:
    predictor = BoosterPredictor(booster)
    for width in (29, 31):
        with pytest.raises(ValueError, match=f"expected 30 features, got {width}"):
            predictor.predict_proba(np.zeros((1, width)))


@pytest.mark.parametrize(
    ("answer", "positive"),
    [
        (np.array([0.2, 0.9]), [0.2, 0.9]),
        (np.array([[0.8, 0.2], [0.1, 0.9]]), [0.2, 0.9]),
        (np.array([[0.2], [0.9]]), [0.2, 0.9]),
    ],
)
def test_pyfunc_answers_read_as_probabilities(answer: np.ndarray, positive: list[float]) -> None:
    import pandas as pd

    from modelferry.serving.pyfunc import as_probabilities

    for shaped in (answer, pd.DataFrame(answer) if answer.ndim == 2 else pd.Series(answer)):
        matrix = as_probabilities(shaped, 2)
        np.testing.assert_allclose(matrix[:, 1], positive)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "answer",
    [np.array(["yes", "no"]), np.array([3.0, -1.0]), np.zeros((2, 3)), np.array([0.5])],
)
def test_pyfunc_answers_that_are_not_probabilities_are_refused(answer: np.ndarray) -> None:
    from modelferry.serving.pyfunc import as_probabilities

    with pytest.raises(ValueError, match="not probabilities"):
        as_probabilities(answer, 2)


def test_model_without_a_servable_flavor_names_its_flavors(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import mlflow.models

    from modelferry.registry import ModelRegistry, RegisteredVersion, TrackingSettings
    from modelferry.serving.model import load_serving_model

    info = types.SimpleNamespace(flavors={"onnx": {}}, signature=None)
    monkeypatch.setattr(mlflow.models, "get_model_info", lambda uri: info)
    registry = ModelRegistry(TrackingSettings.resolve(mlflow_uri))
    version = RegisteredVersion("m", "1", None, "", {}, ())
    with pytest.raises(ValueError, match="has flavors onnx; serving needs lightgbm, sklearn"):
        load_serving_model(registry, version)


def test_mlmodel_flavor_wins_over_a_disagreeing_tag(
    mlflow_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    import lightgbm as lgb
    import mlflow

    from modelferry.registry import ModelRegistry, TrackingSettings
    from modelferry.serving.model import load_serving_model

    settings = TrackingSettings.resolve(mlflow_uri)
    settings.activate()
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 5)
    with mlflow.start_run():
        mlflow.lightgbm.log_model(booster, name="m", registered_model_name="tagged")
    registry = ModelRegistry(settings)
    registry.set_tags("tagged", "1", {"modelferry.flavor": "sklearn"})
    version = registry.get("tagged", "1")
    assert registry.flavors(version).keys() >= {"lightgbm", "python_function"}
    model = load_serving_model(registry, version)
    assert isinstance(model.predictor, BoosterPredictor)
    # No signature: the inputs are the booster's feature names (LightGBM's spelling).
    assert model.feature_names == tuple(booster.feature_name())
    np.testing.assert_allclose(
        model.predict_proba(x.to_numpy()[:3])[:, 1], booster.predict(x.to_numpy()[:3])
    )


def test_azureml_script_scores_a_native_lightgbm_booster(tmp_path: object) -> None:
    from pathlib import Path

    import lightgbm as lgb
    import mlflow

    from modelferry.serving import azureml_score

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), 5)
    folder = Path(str(tmp_path)) / "model"
    mlflow.lightgbm.save_model(booster, str(folder))
    loaded = azureml_score.load_model(folder)
    rows = x.to_numpy()[:3]
    np.testing.assert_allclose(loaded.predict_proba(rows)[:, 1], booster.predict(rows))
    assert [c.name for c in loaded.columns] == booster.feature_name()
