"""Held-out metrics and the plots that go with them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from modelferry.errors import DataError
from modelferry.pictures import new_figure, save_png


def predict_positive_proba(estimator: Any, features: pd.DataFrame) -> np.ndarray:
    """Probability of class 1 for each row.

    Raises:
        DataError: the estimator was trained on other columns than `features` holds.
    """
    expected = getattr(estimator, "feature_names_in_", None)
    if expected is None:
        expected = getattr(estimator, "feature_name_", None)
    if expected is not None:
        # LightGBM stores names with whitespace replaced by underscores.
        by_name = {_normalise(column): column for column in features.columns}
        missing = [str(name) for name in expected if _normalise(name) not in by_name]
        if missing:
            shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
            raise DataError(f"the model expects columns that the data lacks: {shown}")
        features = features[[by_name[_normalise(name)] for name in expected]]
    proba = estimator.predict_proba(features)
    return np.asarray(proba)[:, 1]


def _normalise(name: object) -> str:
    return re.sub(r"\s+", "_", str(name))


def classification_metrics(labels: pd.Series, positive_proba: np.ndarray) -> dict[str, float]:
    """Accuracy, ROC AUC, F1, precision, recall (threshold 0.5) and log loss."""
    y = np.asarray(labels)
    predicted = (positive_proba >= 0.5).astype(int)
    return {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "roc_auc": float(skm.roc_auc_score(y, positive_proba)),
        "f1": float(skm.f1_score(y, predicted, zero_division=0)),
        "precision": float(skm.precision_score(y, predicted, zero_division=0)),
        "recall": float(skm.recall_score(y, predicted, zero_division=0)),
        "log_loss": float(skm.log_loss(y, positive_proba, labels=[0, 1])),
    }


def feature_importance(estimator: Any, feature_names: list[str]) -> pd.Series:
    """Importance of each feature, largest first.

    Tree models give their split gains; linear models the size of their coefficients on
    standardised inputs.
    """
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if hasattr(final, "booster_"):
        values = final.booster_.feature_importance(importance_type="gain")
    elif hasattr(final, "feature_importances_"):
        values = final.feature_importances_
    else:
        values = np.abs(np.ravel(final.coef_))
    return pd.Series(values, index=feature_names, dtype=float).sort_values(ascending=False)


def save_roc_curve(labels: pd.Series, positive_proba: np.ndarray, path: Path) -> Path:
    """Draw the ROC curve of one model to a PNG file."""
    fpr, tpr, _ = skm.roc_curve(np.asarray(labels), positive_proba)
    auc = skm.auc(fpr, tpr)
    fig = new_figure(5, 5)
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"model (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curve (test set)")
    ax.legend(loc="lower right")
    return save_png(fig, path)


def save_feature_importance(importance: pd.Series, path: Path, top: int = 20) -> Path:
    """Draw the `top` most important features as a horizontal bar chart PNG."""
    if importance.empty:
        raise DataError("no features to plot")
    shown = importance.head(top)[::-1]
    fig = new_figure(7, 0.3 * len(shown) + 1.5)
    ax = fig.subplots()
    ax.barh(list(shown.index), list(shown.values))
    ax.set_xlabel("importance")
    ax.set_title(f"Top {len(shown)} features")
    return save_png(fig, path)
