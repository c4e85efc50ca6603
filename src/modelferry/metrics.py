"""The evaluation metrics modelferry knows, and which way is better for each."""

from __future__ import annotations

from typing import Literal

MetricName = Literal["accuracy", "roc_auc", "f1", "precision", "recall", "log_loss"]

#: True where a larger value is better; the gate reads improvements in this direction.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "roc_auc": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "log_loss": False,
}
