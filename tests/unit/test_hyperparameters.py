"""The hyperparameter tables match the installed libraries, and build what they accept.

Configs are validated from tables, without importing LightGBM or scikit-learn; these tests
are what keeps the tables honest: an upgrade that adds, renames or drops a parameter fails
here until the table is regenerated.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightgbm
import numpy as np
import pytest
from lightgbm.basic import _ConfigAliases
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelferry.training.estimators import build_estimator
from modelferry.training.hyperparameters import SKLEARN_PARAMETERS, lightgbm_canonical_name
from modelferry.training.lightgbm_params import (
    LGBMCLASSIFIER_ARGUMENTS,
    LIGHTGBM_VERSION,
    PARAMETER_ALIASES,
    SKLEARN_ONLY_PARAMETERS,
)


def test_lightgbm_table_is_the_installed_lightgbms_parameter_list() -> None:
    installed = {
        canonical: sorted(names)
        for canonical, names in _ConfigAliases._get_all_param_aliases().items()
    }
    table = {
        canonical: sorted((canonical, *aliases)) for canonical, aliases in PARAMETER_ALIASES.items()
    }
    assert table == installed, (
        f"lightgbm_params.py was generated from LightGBM {LIGHTGBM_VERSION}, "
        f"{lightgbm.__version__} is installed: regenerate it"
    )


def test_lgbmclassifier_arguments_are_the_installed_ones() -> None:
    arguments = list(inspect.signature(lightgbm.LGBMClassifier.__init__).parameters)
    assert arguments == ["self", *LGBMCLASSIFIER_ARGUMENTS, "kwargs"]
    unknown = [name for name in LGBMCLASSIFIER_ARGUMENTS if lightgbm_canonical_name(name) is None]
    assert unknown == []
    aliases = {name for names in PARAMETER_ALIASES.values() for name in names}
    not_lightgbm = set(LGBMCLASSIFIER_ARGUMENTS) - aliases - set(PARAMETER_ALIASES)
    assert not_lightgbm == set(SKLEARN_ONLY_PARAMETERS)


@pytest.mark.parametrize(
    ("model_type", "estimator"),
    [("random_forest", RandomForestClassifier), ("logistic_regression", LogisticRegression)],
)
def test_sklearn_tables_are_the_installed_estimators_parameters(
    model_type: str, estimator: Any
) -> None:
    assert SKLEARN_PARAMETERS[model_type] == set(estimator().get_params())


def test_lightgbm_aliases_take_effect_over_the_classifiers_defaults() -> None:
    rng = np.random.default_rng(0)
    features = rng.random((120, 3))
    labels = (features[:, 0] > 0.5).astype(int)
    params = {"eta": 0.3, "num_boost_round": 7, "verbose": -1}

    model = build_estimator("lightgbm", params, seed=1).fit(features, labels)

    assert model.booster_.num_trees() == 7
    assert "[learning_rate: 0.3]" in model.booster_.model_to_string()
