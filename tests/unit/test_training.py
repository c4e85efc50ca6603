"""Estimators, splits, fitting and metrics: seeded, reproducible, checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelferry.config import DataConfig, ModelSpec, SplitConfig
from modelferry.data import Dataset, load_dataset
from modelferry.errors import DataError, InvalidConfigError
from modelferry.training import (
    classification_metrics,
    feature_importance,
    predict_positive_proba,
    save_calibration_curve,
    save_confusion_matrix,
    save_feature_importance,
    save_precision_recall_curve,
    save_roc_curve,
    split_dataset,
    train_model,
)
from modelferry.training.estimators import build_estimator


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset(DataConfig(label_column="target"))


def test_split_is_stratified_seeded_and_disjoint(dataset: Dataset) -> None:
    split = split_dataset(dataset, SplitConfig(test_size=0.2, validation_size=0.1), seed=7)
    again = split_dataset(dataset, SplitConfig(test_size=0.2, validation_size=0.1), seed=7)
    assert list(split.x_test.index) == list(again.x_test.index)
    parts = [set(split.x_train.index), set(split.x_validation.index), set(split.x_test.index)]
    assert sum(len(p) for p in parts) == dataset.row_count
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    summary = split.summary()
    assert summary["test_rows"] == 114
    assert summary["validation_rows"] == 57
    overall = float(np.mean(dataset.labels))
    assert summary["test_positive_rate"] == pytest.approx(overall, abs=0.02)


@pytest.mark.parametrize("model_type", ["lightgbm", "random_forest", "logistic_regression"])
def test_training_is_reproducible_and_useful(dataset: Dataset, model_type: str) -> None:
    split = split_dataset(dataset, SplitConfig(), seed=42)
    spec = ModelSpec(type=model_type)  # type: ignore[arg-type]
    first = train_model(spec, split, seed=42)
    second = train_model(spec, split, seed=42)
    proba_first = predict_positive_proba(first.estimator, split.x_test)
    proba_second = predict_positive_proba(second.estimator, split.x_test)
    np.testing.assert_array_equal(proba_first, proba_second)
    metrics = classification_metrics(split.y_test, proba_first)
    assert set(metrics) == {"accuracy", "roc_auc", "f1", "precision", "recall", "log_loss"}
    assert metrics["roc_auc"] > 0.95
    assert first.flavor == ("lightgbm" if model_type == "lightgbm" else "sklearn")
    importance = feature_importance(first.estimator, first.feature_names)
    assert len(importance) == 30
    assert importance.iloc[0] >= importance.iloc[-1]


def test_lightgbm_stops_early_on_validation(dataset: Dataset) -> None:
    split = split_dataset(dataset, SplitConfig(), seed=42)
    trained = train_model(ModelSpec(params={"n_estimators": 2000}), split, seed=42)
    assert 0 < trained.extra["best_iteration"] < 2000


def test_metrics_on_known_values() -> None:
    import pandas as pd

    labels = pd.Series([0, 0, 1, 1])
    metrics = classification_metrics(labels, np.array([0.1, 0.6, 0.4, 0.9]))
    assert metrics["accuracy"] == 0.5
    assert metrics["roc_auc"] == 0.75
    assert metrics["f1"] == 0.5


def test_scoring_data_without_the_models_columns_is_a_data_error(dataset: Dataset) -> None:
    split = split_dataset(dataset, SplitConfig(), seed=42)
    trained = train_model(ModelSpec(type="random_forest"), split, seed=42)
    with pytest.raises(DataError, match="mean radius"):
        predict_positive_proba(trained.estimator, split.x_test.drop(columns=["mean radius"]))


def test_unknown_estimator_parameters_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="unknown random_forest parameter 'trees'"):
        build_estimator("random_forest", {"trees": 3}, seed=1)
    with pytest.raises(InvalidConfigError, match="set by modelferry"):
        build_estimator("lightgbm", {"seed": 3}, seed=1)


def test_plots_are_png_files(dataset: Dataset, tmp_path: Path) -> None:
    split = split_dataset(dataset, SplitConfig(), seed=42)
    trained = train_model(ModelSpec(), split, seed=42)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    roc = save_roc_curve(split.y_test, proba, tmp_path / "roc.png")
    bars = save_feature_importance(
        feature_importance(trained.estimator, trained.feature_names), tmp_path / "fi.png"
    )
    evaluation = [
        save_precision_recall_curve(split.y_test, proba, tmp_path / "pr.png"),
        save_calibration_curve(split.y_test, proba, tmp_path / "calibration.png"),
        save_confusion_matrix(split.y_test, proba, tmp_path / "confusion.png"),
    ]
    for path in (roc, bars, *evaluation):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("labels", "proba"),
    [
        ([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.95]),  # one class only: no negatives
        ([0, 0, 0, 0], [0.1, 0.2, 0.1, 0.3]),  # no positives
        ([0, 1], [0.5, 0.5]),  # every probability the same
    ],
)
def test_evaluation_plots_draw_for_a_test_set_that_says_little(
    labels: list[int], proba: list[float], tmp_path: Path
) -> None:
    y, p = pd.Series(labels), np.asarray(proba)
    with warnings.catch_warnings():
        # scikit-learn warns that a curve over one class is not defined; the plot stands.
        warnings.simplefilter("ignore", UserWarning)
        for draw in (save_precision_recall_curve, save_calibration_curve, save_confusion_matrix):
            path = draw(y, p, tmp_path / f"{draw.__name__}.png")
            assert path.stat().st_size > 1000
