"""Split, fit and evaluate, cached by the data's digest and the model settings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
from prefect import task
from prefect.context import TaskRunContext

from modelferry.config import ModelConfig
from modelferry.data import Dataset
from modelferry.training import (
    DatasetSplit,
    TrainedModel,
    classification_metrics,
    predict_positive_proba,
    split_dataset,
    train_model,
)

# A new release of any of these may train a different model from the same inputs.
_TRAINING_PACKAGES = ("modelferry", "lightgbm", "scikit-learn", "numpy")


@dataclass
class TrainingResult:
    """A fitted model, the split it was fitted on and its held-out test metrics."""

    trained: TrainedModel
    split: DatasetSplit
    test_metrics: dict[str, float]
    test_proba: np.ndarray


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Key of a training: data digest, model, split, seed and the versions that train.

    The frame itself is not hashed: its digest stands for it.
    """
    dataset: Dataset = parameters["dataset"]
    config: ModelConfig = parameters["config"]
    settings = config.model_dump_json(include={"model", "split", "seed"})
    versions = ",".join(f"{name}={version(name)}" for name in _TRAINING_PACKAGES)
    key = f"{dataset.digest}\x1f{settings}\x1f{versions}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"modelferry-train-{digest}"


@task(
    name="train-model",
    cache_key_fn=training_cache_key,
    persist_result=True,
    timeout_seconds=3600,
)
def train(dataset: Dataset, config: ModelConfig) -> TrainingResult:
    """Split the data, fit the configured estimator and score it on the test part."""
    split = split_dataset(dataset, config.split, config.seed)
    trained = train_model(config.model, split, config.seed)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    return TrainingResult(trained, split, classification_metrics(split.y_test, proba), proba)
