"""Fit a configured estimator on a split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sklearn.base import ClassifierMixin

from modelferry.config import ModelSpec
from modelferry.training.estimators import build_estimator
from modelferry.training.split import DatasetSplit

Flavor = Literal["lightgbm", "sklearn"]

# Stop adding trees once validation loss has not improved for this many rounds.
_EARLY_STOPPING_ROUNDS = 25


@dataclass
class TrainedModel:
    """A fitted classifier with what is needed to log, compare and serve it."""

    estimator: ClassifierMixin
    model_type: str
    params: dict[str, Any]
    feature_names: list[str]
    #: The MLflow flavor that saves and loads this estimator natively.
    flavor: Flavor
    extra: dict[str, Any] = field(default_factory=dict)


def train_model(spec: ModelSpec, split: DatasetSplit, seed: int) -> TrainedModel:
    """Fit the estimator `spec` names on the training part of `split`.

    LightGBM watches the validation part and stops early; scikit-learn estimators fit on
    the training part alone. The same inputs and seed give the same model.
    """
    estimator = build_estimator(spec.type, spec.params, seed)
    extra: dict[str, Any] = {}
    if spec.type == "lightgbm":
        import lightgbm

        estimator.fit(
            split.x_train,
            split.y_train,
            eval_X=split.x_validation,
            eval_y=split.y_validation,
            eval_metric="binary_logloss",
            callbacks=[lightgbm.early_stopping(_EARLY_STOPPING_ROUNDS, verbose=False)],
        )
        extra["best_iteration"] = int(estimator.best_iteration_ or estimator.n_estimators)
        flavor: Flavor = "lightgbm"
    else:
        estimator.fit(split.x_train, split.y_train)
        flavor = "sklearn"
    return TrainedModel(
        estimator=estimator,
        model_type=spec.type,
        params=dict(spec.params),
        feature_names=list(split.x_train.columns),
        flavor=flavor,
        extra=extra,
    )
