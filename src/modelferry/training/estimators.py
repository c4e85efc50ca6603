"""The estimators a config can name, built seeded and checked before anything trains."""

from __future__ import annotations

from typing import Any

from sklearn.base import ClassifierMixin

from modelferry.errors import InvalidConfigError

# LightGBM's own names for these would fight with the seed and the split we control.
_LIGHTGBM_RESERVED = {"random_state", "seed", "objective", "num_class"}

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


def check_params(model_type: str, params: dict[str, Any]) -> None:
    """Fail on hyperparameters the estimator does not take, naming the allowed ones.

    LightGBM takes hundreds of parameters through `**kwargs`; only the ones that would
    fight with modelferry's seed and objective are refused for it.

    Raises:
        InvalidConfigError: an unknown or reserved parameter name.
    """
    if model_type == "lightgbm":
        reserved = sorted(set(params) & _LIGHTGBM_RESERVED)
        if reserved:
            raise ValueError(
                f"params {reserved} are set by modelferry (seed comes from the top-level "
                "'seed', the objective is binary); remove them"
            )
        return
    allowed = set(_sklearn_class(model_type)().get_params())
    unknown = sorted(set(params) - allowed - {"random_state"})
    if unknown:
        raise ValueError(
            f"unknown params {unknown} for {model_type}; allowed: {', '.join(sorted(allowed))}"
        )
    if "random_state" in params:
        raise ValueError("'random_state' is set from the top-level 'seed'; remove it")


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
            **{**_LIGHTGBM_DEFAULTS, **params}, random_state=seed
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
