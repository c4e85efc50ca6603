"""The benchmark model: LightGBM, 100 trees, up to 31 leaves, 30 features, registered.

Every benchmark scores this one model, trained on scikit-learn's breast-cancer data and
registered in a throwaway MLflow SQLite store, so their numbers can be set side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "bench-lightgbm"


@dataclass(frozen=True)
class BenchModel:
    """The registered benchmark model and what the servers and clients need of it."""

    tracking_uri: str
    name: str
    version: str
    booster_file: Path
    columns: list[str]
    rows: np.ndarray  # every row of the dataset, float64


def train_and_register(workdir: Path) -> BenchModel:
    """Train the benchmark model, log it with modelferry and register version 1.

    The MLflow store (`mlflow.db`) and a LightGBM text copy of the model
    (`booster.txt`) are written to `workdir`.
    """
    import warnings

    from lightgbm import LGBMClassifier

    from modelferry.config import DataConfig, SplitConfig
    from modelferry.data import load_dataset
    from modelferry.registry import (
        CLASS_NAMES_TAG,
        ModelRegistry,
        TrackingSettings,
        log_training_run,
    )
    from modelferry.training import (
        TrainedModel,
        classification_metrics,
        predict_positive_proba,
        split_dataset,
    )

    settings = TrackingSettings.resolve(f"sqlite:///{workdir / 'mlflow.db'}")
    dataset = load_dataset(DataConfig(label_column="target"))
    split = split_dataset(dataset, SplitConfig(), seed=0)
    params: dict[str, Any] = {
        "n_estimators": 100,
        "num_leaves": 31,
        "min_child_samples": 1,
        "min_data_in_bin": 1,
        "verbosity": -1,
    }
    # All rows train it: the benchmark wants deep trees, not a fair test score.
    estimator = LGBMClassifier(**params, random_state=0)
    estimator.fit(dataset.features, dataset.labels)
    booster = estimator.booster_
    if booster.num_trees() != 100:
        raise RuntimeError(f"the benchmark model has {booster.num_trees()} trees, not 100")
    trained = TrainedModel(
        estimator=estimator,
        model_type="lightgbm",
        params=params,
        feature_names=list(dataset.features.columns),
        flavor="lightgbm",
    )
    proba = predict_positive_proba(estimator, split.x_test)
    metrics = classification_metrics(split.y_test, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = log_training_run(settings, "bench", trained, dataset, split, metrics, proba, {})
    tags = {"modelferry.flavor": "lightgbm", CLASS_NAMES_TAG: json.dumps(dataset.class_names)}
    registered = ModelRegistry(settings).register(
        MODEL_NAME, logged.model_uri, logged.run_id, tags, model_id=logged.model_id
    )
    booster_file = workdir / "booster.txt"
    booster.save_model(str(booster_file))
    return BenchModel(
        tracking_uri=settings.tracking_uri,
        name=MODEL_NAME,
        version=registered.version,
        booster_file=booster_file,
        columns=list(dataset.features.columns),
        rows=dataset.features.to_numpy(dtype=np.float64),
    )


def tree_shape(booster_file: Path) -> str:
    """Trees, and leaves per tree (min/mean/max), for the report."""
    import lightgbm

    frame = lightgbm.Booster(model_file=str(booster_file)).trees_to_dataframe()
    leaves = frame[frame["left_child"].isna()].groupby("tree_index").size()
    return (
        f"{len(leaves)} trees, leaves per tree {leaves.min()}/{leaves.mean():.1f}/"
        f"{leaves.max()} (min/mean/max, num_leaves=31)"
    )
