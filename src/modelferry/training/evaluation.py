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


def save_precision_recall_curve(labels: pd.Series, positive_proba: np.ndarray, path: Path) -> Path:
    """Draw precision against recall over every threshold to a PNG file.

    The dashed line is the share of positives: what a model that guesses scores.
    """
    y = np.asarray(labels)
    precision, recall, _ = skm.precision_recall_curve(y, positive_proba)
    average = skm.average_precision_score(y, positive_proba)
    fig = new_figure(5, 5)
    ax = fig.subplots()
    ax.step(recall, precision, where="post", label=f"model (AP = {average:.3f})")
    ax.axhline(float(np.mean(y == 1)), linestyle="--", color="grey", label="share of positives")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall curve (test set)")
    ax.legend(loc="lower left")
    return save_png(fig, path)


def save_calibration_curve(
    labels: pd.Series, positive_proba: np.ndarray, path: Path, bins: int = 10
) -> Path:
    """Draw the observed share of positives against the mean predicted probability.

    Bins hold equal numbers of test rows (quantiles), so a small test set still fills
    each; a model whose probabilities can be taken at their word follows the diagonal.
    """
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(
        np.asarray(labels), positive_proba, n_bins=bins, strategy="quantile"
    )
    brier = skm.brier_score_loss(np.asarray(labels), positive_proba)
    fig = new_figure(5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label=f"model (Brier = {brier:.3f})")
    ax.set_xlabel("Mean predicted probability of class 1")
    ax.set_ylabel("Share of class 1 observed")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Calibration (test set, {len(predicted)} bins of equal rows)")
    ax.legend(loc="upper left")
    return save_png(fig, path)


def save_confusion_matrix(labels: pd.Series, positive_proba: np.ndarray, path: Path) -> Path:
    """Draw the test set's confusion matrix at the 0.5 threshold the metrics use."""
    y = np.asarray(labels)
    matrix = skm.confusion_matrix(y, (positive_proba >= 0.5).astype(int), labels=[0, 1])
    fig = new_figure(4.5, 4)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues", vmin=0)
    highest = matrix.max() or 1
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > highest / 2 else "black"
        ax.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks([0, 1], ["0", "1"])
    ax.set_yticks([0, 1], ["0", "1"])
    ax.set_xlabel("Predicted class (threshold 0.5)")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix (test set)")
    return save_png(fig, path)
