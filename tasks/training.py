"""Split, fit and evaluate, cached by the data's digest, the model settings and the code."""

from __future__ import annotations

from dataclasses import dataclass
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
from tasks.caching import cache_key, task_results_path

# The code whose every line may change the model trained from the same inputs.
TRAINING_CODE = ("modelferry.training", "modelferry.data", "modelferry.config", "tasks.training")


@dataclass
class TrainingResult:
    """A fitted model, the split it was fitted on and its held-out test metrics."""

    trained: TrainedModel
    split: DatasetSplit
    test_metrics: dict[str, float]
    test_proba: np.ndarray


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Key of a training, from its code, library versions, data and settings.

    The key holds the training code's fingerprint, the library versions, the data digest
    and label column, and the model, split and seed settings.

    The frame itself is not hashed: its digest stands for it.
    """
    dataset: Dataset = parameters["dataset"]
    config: ModelConfig = parameters["config"]
    settings = config.model_dump_json(include={"model", "split", "seed"})
    inputs = [dataset.digest, dataset.label_column, settings]
    return cache_key("modelferry-train", TRAINING_CODE, inputs)


@task(
    name="train-model",
    cache_key_fn=training_cache_key,
    persist_result=True,
    result_storage=task_results_path(),
    timeout_seconds=3600,
)
def train(dataset: Dataset, config: ModelConfig) -> TrainingResult:
    """Split the data, fit the configured estimator and score it on the test part."""
    split = split_dataset(dataset, config.split, config.seed)
    trained = train_model(config.model, split, config.seed)
    proba = predict_positive_proba(trained.estimator, split.x_test)
    return TrainingResult(trained, split, classification_metrics(split.y_test, proba), proba)
