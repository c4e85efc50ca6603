"""Training and evaluation: estimators, splits, fitting, metrics and plots."""

from modelferry.training.evaluation import (
    classification_metrics,
    feature_importance,
    predict_positive_proba,
    save_feature_importance,
    save_roc_curve,
)
from modelferry.training.fitting import TrainedModel, train_model
from modelferry.training.split import DatasetSplit, split_dataset

__all__ = [
    "DatasetSplit",
    "TrainedModel",
    "classification_metrics",
    "feature_importance",
    "predict_positive_proba",
    "save_feature_importance",
    "save_roc_curve",
    "split_dataset",
    "train_model",
]
