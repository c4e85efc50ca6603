"""The estimators a config can name, built seeded and checked before anything trains."""

from __future__ import annotations

from typing import Any

from sklearn.base import ClassifierMixin

from modelferry.errors import InvalidConfigError
from modelferry.training.hyperparameters import check_params, lightgbm_arguments

_LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    # Deterministic and single-threaded results do not depend on the machine's cores.
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbosity": -1,
}


def build_estimator(model_type: str, params: dict[str, Any], seed: int) -> ClassifierMixin:
    """A fresh, seeded, unfitted classifier of the named type.

    Raises:
        InvalidConfigError: unknown model type or parameters.
    """
    try:
        check_params(model_type, params)
    except ValueError as exc:
        raise InvalidConfigError(f"model.params: {exc}") from None
    if model_type == "lightgbm":
        from lightgbm import LGBMClassifier

        estimator: ClassifierMixin = LGBMClassifier(
            **lightgbm_arguments(_LIGHTGBM_DEFAULTS, params), random_state=seed
        )
        return estimator
    if model_type == "logistic_regression":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        merged = {"max_iter": 1000, **params}
        pipeline: ClassifierMixin = make_pipeline(
            StandardScaler(), LogisticRegression(**merged, random_state=seed)
        )
        return pipeline
    cls = _sklearn_class(model_type)
    estimator = cls(**params, random_state=seed)
    return estimator


def _sklearn_class(model_type: str) -> Any:
    if model_type == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier
    if model_type == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression
    raise InvalidConfigError(
        f"model.type: got {model_type!r}; allowed: 'lightgbm', 'random_forest', "
        "'logistic_regression'"
    )
