"""Training and evaluation: estimators, splits, fitting, metrics and plots.

Names are imported on first use, so a submodule can be imported without scikit-learn's
start-up cost for the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.training.evaluation import (
        classification_metrics,
        feature_importance,
        predict_positive_proba,
        save_calibration_curve,
        save_confusion_matrix,
        save_feature_importance,
        save_precision_recall_curve,
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
    "save_calibration_curve",
    "save_confusion_matrix",
    "save_feature_importance",
    "save_precision_recall_curve",
    "save_roc_curve",
    "split_dataset",
    "train_model",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DatasetSplit": "split",
        "TrainedModel": "fitting",
        "classification_metrics": "evaluation",
        "feature_importance": "evaluation",
        "predict_positive_proba": "evaluation",
        "save_calibration_curve": "evaluation",
        "save_confusion_matrix": "evaluation",
        "save_feature_importance": "evaluation",
        "save_precision_recall_curve": "evaluation",
        "save_roc_curve": "evaluation",
        "split_dataset": "split",
        "train_model": "fitting",
    },
)
