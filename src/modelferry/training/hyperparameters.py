"""The hyperparameter names each model type takes, checked without importing its library.

A config is validated before anything trains, and `modelferry validate` must stay quick:
so the names are tables (LightGBM's in `lightgbm_params`, scikit-learn's here), and tests
compare each table with the installed library. An unknown name is refused with the closest
valid one suggested; names modelferry sets itself (the seed, LightGBM's objective) are
refused too, whichever alias spells them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from modelferry.training.lightgbm_params import (
    LGBMCLASSIFIER_ARGUMENTS,
    PARAMETER_ALIASES,
    SKLEARN_ONLY_PARAMETERS,
)

__all__ = [
    "LIGHTGBM_DOCS",
    "SKLEARN_PARAMETERS",
    "check_params",
    "lightgbm_arguments",
    "lightgbm_canonical_name",
]

LIGHTGBM_DOCS: Final = "https://lightgbm.readthedocs.io/en/stable/Parameters.html"

#: `get_params()` names of the scikit-learn estimators (scikit-learn 1.9).
SKLEARN_PARAMETERS: Final[dict[str, frozenset[str]]] = {
    "random_forest": frozenset(
        {
            "bootstrap",
            "ccp_alpha",
            "class_weight",
            "criterion",
            "max_depth",
            "max_features",
            "max_leaf_nodes",
            "max_samples",
            "min_impurity_decrease",
            "min_samples_leaf",
            "min_samples_split",
            "min_weight_fraction_leaf",
            "monotonic_cst",
            "n_estimators",
            "n_jobs",
            "oob_score",
            "random_state",
            "verbose",
            "warm_start",
        }
    ),
    "logistic_regression": frozenset(
        {
            "C",
            "class_weight",
            "dual",
            "fit_intercept",
            "intercept_scaling",
            "l1_ratio",
            "max_iter",
            "n_jobs",
            "penalty",
            "random_state",
            "solver",
            "tol",
            "verbose",
            "warm_start",
        }
    ),
}

# Each name LightGBM accepts, mapped to the parameter it sets.
_LIGHTGBM_NAMES: Final[dict[str, str]] = {
    name: canonical
    for canonical, aliases in PARAMETER_ALIASES.items()
    for name in (canonical, *aliases)
} | {name: name for name in SKLEARN_ONLY_PARAMETERS}

# LightGBM parameters modelferry sets itself, with why (every alias is refused too).
_LIGHTGBM_RESERVED: Final[dict[str, str]] = {
    "seed": "the seed comes from the top-level 'seed'",
    "objective": "the objective is binary",
    "num_class": "the objective is binary",
}


def lightgbm_canonical_name(name: str) -> str | None:
    """The LightGBM parameter `name` sets (itself, or the one it aliases); None if unknown."""
    return _LIGHTGBM_NAMES.get(name)


def lightgbm_arguments(defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments for `LGBMClassifier`: `params` over `defaults`, alias-proof.

    A parameter the classifier has an argument for is passed under that argument's name:
    given as an alias (`eta`), LightGBM would let the argument's own default
    (`learning_rate=0.1`) win. A default is dropped when `params` sets its parameter under
    any name. `params` must have passed `check_params` (no parameter set twice).
    """
    argument_of = {_LIGHTGBM_NAMES[name]: name for name in LGBMCLASSIFIER_ARGUMENTS}
    chosen = {argument_of.get(_LIGHTGBM_NAMES[name], name): value for name, value in params.items()}
    taken = {_LIGHTGBM_NAMES[name] for name in params}
    kept = {name: value for name, value in defaults.items() if _LIGHTGBM_NAMES[name] not in taken}
    return {**kept, **chosen}


def check_params(model_type: str, params: Mapping[str, Any]) -> None:
    """Fail on hyperparameters the estimator does not take, suggesting the closest name.

    Raises:
        ValueError: an unknown name, a name modelferry sets itself, or (for LightGBM) one
            parameter set twice under different aliases; the message names each.
    """
    if model_type == "lightgbm":
        _check_lightgbm(params)
        return
    allowed = SKLEARN_PARAMETERS.get(model_type)
    if allowed is None:
        return  # the model type itself is validated, and reported, by its own field
    problems = [
        _unknown(model_type, name, allowed)
        + f"; allowed: {', '.join(sorted(allowed - {'random_state'}))}"
        for name in params
        if name not in allowed
    ]
    if "random_state" in params:
        problems.append(_reserved("random_state", "the seed comes from the top-level 'seed'"))
    if problems:
        raise ValueError("; ".join(problems))


def _check_lightgbm(params: Mapping[str, Any]) -> None:
    problems: list[str] = []
    given: dict[str, list[str]] = {}
    for name in params:
        canonical = _LIGHTGBM_NAMES.get(name)
        if canonical is None:
            problems.append(
                _unknown("LightGBM", name, _LIGHTGBM_NAMES)
                + f"; LightGBM's parameters and their aliases are listed at {LIGHTGBM_DOCS}"
            )
        elif canonical in _LIGHTGBM_RESERVED:
            problems.append(_reserved(name, _LIGHTGBM_RESERVED[canonical]))
        else:
            given.setdefault(canonical, []).append(name)
    for canonical, names in given.items():
        if len(names) > 1:
            spelled = " and ".join(repr(name) for name in names)
            problems.append(f"{spelled} are the same LightGBM parameter ({canonical}); set it once")
    if problems:
        raise ValueError("; ".join(problems))


def _unknown(label: str, name: str, allowed: Iterable[str]) -> str:
    # Compared without case, so that 'c' finds LogisticRegression's 'C'.
    by_folded = {candidate.lower(): candidate for candidate in allowed}
    close = difflib.get_close_matches(name.lower(), list(by_folded), n=1)
    hint = f" (did you mean {by_folded[close[0]]!r}?)" if close else ""
    return f"unknown {label} parameter {name!r}{hint}"


def _reserved(name: str, why: str) -> str:
    return f"{name!r} is set by modelferry ({why}); remove it"
