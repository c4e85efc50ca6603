"""Seeded, stratified train/validation/test splits whose makeup is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from modelferry.config import SplitConfig
from modelferry.data import Dataset
from modelferry.errors import DataError


@dataclass(frozen=True)
class DatasetSplit:
    """The three parts of a dataset; the test part is never seen in training."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_validation: pd.DataFrame
    y_validation: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series
    seed: int

    def summary(self) -> dict[str, Any]:
        """Sizes and class balance of each part, for logging as run parameters."""
        parts = {
            "train": self.y_train,
            "validation": self.y_validation,
            "test": self.y_test,
        }
        out: dict[str, Any] = {"split_seed": self.seed}
        for name, labels in parts.items():
            out[f"{name}_rows"] = len(labels)
            out[f"{name}_positive_rate"] = round(float(np.mean(labels)), 4)
        return out


def split_dataset(dataset: Dataset, config: SplitConfig, seed: int) -> DatasetSplit:
    """Split into train/validation/test, stratified by label and seeded.

    Raises:
        DataError: a class has too few rows to appear in every part.
    """
    features, labels = dataset.features, dataset.labels
    counts = labels.value_counts()
    if int(counts.min()) < 3:
        raise DataError(
            f"class {counts.idxmin()!r} has only {int(counts.min())} row(s); each class needs "
            "at least 3 to appear in the train, validation and test sets — add data"
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        features, labels, test_size=config.test_size, random_state=seed, stratify=labels
    )
    validation_share = config.validation_size / (1.0 - config.test_size)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=validation_share, random_state=seed, stratify=y_rest
    )
    return DatasetSplit(x_train, y_train, x_val, y_val, x_test, y_test, seed)
