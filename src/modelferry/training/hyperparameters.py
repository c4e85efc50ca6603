"""The hyperparameter names each model type takes, checked without importing its library.

A config is validated before anything trains, and `modelferry validate` must stay quick:
so the names are tables (LightGBM's in `lightgbm_params`, scikit-learn's here), and tests
compare each table with the installed library. An unknown name is refused with the closest
valid one suggested; names modelferry sets itself (the seed, LightGBM's objective) are
refused too, whichever alias spells them.
"""

from __future__ import annotations

import difflib
import math
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

#: Unknown names reported one by one (each with the closest valid one); the rest are counted.
_UNKNOWN_SHOWN: Final = 5
_NAME_SHOWN_CHARS: Final = 80

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
        ValueError: an unknown name, a name modelferry sets itself, (for LightGBM) one
            parameter set twice under different aliases, or a value that is not a finite
            number where a number is given; the message names each.
    """
    problems = _non_finite(params)
    if model_type == "lightgbm":
        problems += _lightgbm_problems(params)
    elif model_type in SKLEARN_PARAMETERS:
        problems += _sklearn_problems(model_type, params)
    # else the model type itself is validated, and reported, by its own field
    if problems:
        raise ValueError("; ".join(problems))


def _sklearn_problems(model_type: str, params: Mapping[str, Any]) -> list[str]:
    allowed = SKLEARN_PARAMETERS[model_type]
    unknown = [name for name in params if name not in allowed]
    advice = f"allowed: {', '.join(sorted(allowed - {'random_state'}))}"
    problems = _unknown_names(model_type, unknown, allowed, advice)
    if "random_state" in params:
        problems.append(_reserved("random_state", "the seed comes from the top-level 'seed'"))
    return problems


def _lightgbm_problems(params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    unknown: list[str] = []
    given: dict[str, list[str]] = {}
    for name in params:
        canonical = _LIGHTGBM_NAMES.get(name)
        if canonical is None:
            unknown.append(name)
        elif canonical in _LIGHTGBM_RESERVED:
            problems.append(_reserved(name, _LIGHTGBM_RESERVED[canonical]))
        else:
            given.setdefault(canonical, []).append(name)
    advice = f"LightGBM's parameters and their aliases are listed at {LIGHTGBM_DOCS}"
    problems[:0] = _unknown_names("LightGBM", unknown, _LIGHTGBM_NAMES, advice)
    for canonical, names in given.items():
        if len(names) > 1:
            spelled = " and ".join(repr(name) for name in names)
            problems.append(f"{spelled} are the same LightGBM parameter ({canonical}); set it once")
    return problems


def _unknown_names(label: str, names: list[str], allowed: Iterable[str], advice: str) -> list[str]:
    """One problem per unknown name, the first few only; `advice` follows the last, once.

    Only the first few: a hostile config may hold tens of thousands, each costing a fuzzy
    search.
    """
    if not names:
        return []
    candidates = list(allowed)
    problems = [_unknown(label, name, candidates) for name in names[:_UNKNOWN_SHOWN]]
    if len(names) > _UNKNOWN_SHOWN:
        problems.append(f"and {len(names) - _UNKNOWN_SHOWN} more unknown {label} parameter(s)")
    problems[-1] += f"; {advice}"
    return problems


def _unknown(label: str, name: str, allowed: Iterable[str]) -> str:
    # Compared without case, so that 'c' finds LogisticRegression's 'C'.
    by_folded = {candidate.lower(): candidate for candidate in allowed}
    close = difflib.get_close_matches(name.lower(), list(by_folded), n=1)
    hint = f" (did you mean {by_folded[close[0]]!r}?)" if close else ""
    return f"unknown {label} parameter {_shown(name)}{hint}"


def _shown(name: str) -> str:
    r"""`name` quoted, shortened, and with any non-ASCII letter escaped.

    Every valid name is ASCII, so an escape shows a look-alike letter (a Cyrillic e as
    '\u0435').
    """
    short = name if len(name) <= _NAME_SHOWN_CHARS else f"{name[:_NAME_SHOWN_CHARS]}..."
    return ascii(short)


def _non_finite(params: Mapping[str, Any]) -> list[str]:
    """A problem for each parameter whose value is, or holds, NaN or an infinity.

    No estimator takes them as a setting; and they would all read as null in the
    training cache key, so that two different settings would share one cached model.
    """
    return [
        f"{_shown(name)} is {bad}; give a finite number"
        for name, value in params.items()
        if (bad := _first_non_finite(value)) is not None
    ]


def _first_non_finite(value: object) -> float | None:
    # Iterative: the config reader bounds the nesting, but a stack costs nothing here.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return item
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return None


def _reserved(name: str, why: str) -> str:
    return f"{name!r} is set by modelferry ({why}); remove it"
