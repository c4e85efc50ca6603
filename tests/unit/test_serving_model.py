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
    split = split_dataset(load_dataset(DataConfig()), SplitConfig(), seed=3)
    # Early stopping sets best_iteration: every path must honour it.
    trained = train_model(ModelSpec(params={"n_estimators": 400}), split, seed=3)
    assert 0 < trained.extra["best_iteration"] < 400
    return trained.estimator.booster_  # type: ignore[attr-defined]


def test_single_row_fast_path_matches_booster_predict(booster: object) -> None:
    predictor = BoosterPredictor(booster)
    assert predictor._single_row is not None  # the fast path is really in use here
    rows = load_breast_cancer().data.astype(np.float64)
    expected = booster.predict(rows)  # type: ignore[attr-defined]
    single = np.array([predictor.predict_proba(rows[i : i + 1])[0, 1] for i in range(len(rows))])
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    batch = predictor.predict_proba(rows)
    np.testing.assert_allclose(batch[:, 1], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)


def test_single_row_checks_width(booster: object) -> None:
    predictor = BoosterPredictor(booster)
    with pytest.raises(ValueError, match="expected 30 features"):
        predictor._single_row(np.zeros((1, 29)))  # type: ignore[misc]
