"""Registered model versions for endpoint and batch tests, trained in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer

from modelferry.config import DataConfig, ModelSpec, SplitConfig
from modelferry.data import load_dataset
from modelferry.registry import (
    CLASS_NAMES_TAG,
    ModelRegistry,
    TrackingSettings,
    log_training_run,
)
from modelferry.training import (
    classification_metrics,
    predict_positive_proba,
    split_dataset,
    train_model,
)

MODEL_NAME = "bc-endpoint"


def register_versions(home: Path, count: int = 2, name: str = MODEL_NAME) -> TrackingSettings:
    """Train `count` small LightGBM models and register them as versions 1..count."""
    settings = TrackingSettings.resolve(f"sqlite:///{home / 'mlflow.db'}")
    dataset = load_dataset(DataConfig(label_column="target"))
    split = split_dataset(dataset, SplitConfig(), seed=1)
    registry = ModelRegistry(settings)
    for index in range(count):
        spec = ModelSpec(params={"n_estimators": 20 + 10 * index, "num_leaves": 7})
        trained = train_model(spec, split, seed=index)
        proba = predict_positive_proba(trained.estimator, split.x_test)
        metrics = classification_metrics(split.y_test, proba)
        logged = log_training_run(
            settings, "endpoints", trained, dataset, split, metrics, proba, {}
        )
        tags = {
            "modelferry.flavor": trained.flavor,
            CLASS_NAMES_TAG: json.dumps(list(dataset.class_names)),
        }
        registry.register(name, logged.model_uri, logged.run_id, tags, logged.model_id)
    return settings


def score_payload(rows: int = 3) -> dict[str, Any]:
    """A valid Azure ML style request with the first `rows` breast-cancer rows."""
    frame = load_dataset(DataConfig(label_column="target")).features.head(rows)
    return {
        "input_data": {
            "columns": list(frame.columns),
            "index": list(range(rows)),
            "data": frame.to_numpy().tolist(),
        }
    }


def register_schema_breaking_version(settings: TrackingSettings, name: str = MODEL_NAME) -> str:
    """Register a version trained with one extra input column.

    It loads and answers its own input example, so it passes a smoke test, but every
    request from a client that sends the original 30 columns is refused: a regression
    only live traffic reveals.
    """
    import numpy as np

    from modelferry.data import Dataset

    base = load_dataset(DataConfig(label_column="target"))
    frame = base.frame.copy()
    frame.insert(0, "sensor_drift", np.random.default_rng(0).normal(size=len(frame)))
    dataset = Dataset.from_frame(frame, base.label_column, base.class_names, "test://drift")
    split = split_dataset(dataset, SplitConfig(), seed=1)
    trained = train_model(ModelSpec(params={"n_estimators": 20, "num_leaves": 7}), split, seed=1)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    metrics = classification_metrics(split.y_test, proba)
    logged = log_training_run(settings, "endpoints", trained, dataset, split, metrics, proba, {})
    tags = {
        "modelferry.flavor": trained.flavor,
        CLASS_NAMES_TAG: json.dumps(list(dataset.class_names)),
    }
    registry = ModelRegistry(settings)
    return registry.register(name, logged.model_uri, logged.run_id, tags, logged.model_id).version


def save_small_lightgbm_model(folder: Path, example_rows: int = 3) -> Path:
    """A real MLflow LightGBM model folder (5 trees) with a signature and an input example."""
    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(x, y)
    sample = x.head(example_rows)
    mlflow.lightgbm.save_model(
        model,
        str(folder),
        signature=infer_signature(sample, model.predict(sample)),
        input_example=sample,
    )
    return folder


def noisy_rows(count: int, *, seed: int, missing: float) -> np.ndarray:
    """Breast-cancer rows drawn at random, each value scaled by 1 + 0.1·N(0, 1), and a
    `missing` share of the values NaN: the trees take varied paths, and the missing side."""
    features, _ = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = features[rng.integers(0, len(features), count)]
    rows = rows * (1 + 0.1 * rng.standard_normal(rows.shape))
    rows[rng.random(rows.shape) < missing] = np.nan
    return np.ascontiguousarray(rows)
