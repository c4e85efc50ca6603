"""Scoring any MLflow `python_function` model: the slow path for models with no native one."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The generic flavor every MLflow model that can predict carries.
PYFUNC_FLAVOR = "python_function"


class PyfuncPredictor:
    """A `PyFuncModel`'s `predict`, read as class probabilities.

    Its answer counts as probabilities when it is two columns (class 0, class 1) or one
    value per row (the positive class), all within [0, 1]; anything else is refused with
    a message, at the smoke request when a deployment loads.
    """

    def __init__(self, model: Any, feature_names: tuple[str, ...]) -> None:
        """Wrap a loaded `mlflow.pyfunc.PyFuncModel` taking columns `feature_names`."""
        self._model = model
        self._columns = list(feature_names)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of class 0 and class 1 for each row."""
        import pandas as pd

        answer = self._model.predict(pd.DataFrame(features, columns=self._columns))
        return as_probabilities(answer, features.shape[0])


def as_probabilities(answer: Any, rows: int) -> np.ndarray:
    """`answer` of a pyfunc `predict` as a (rows, 2) float64 array of probabilities.

    Raises:
        ValueError: it is not one or two columns of numbers in [0, 1], one row per input.
    """
    values = answer.to_numpy() if hasattr(answer, "to_numpy") else answer
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is not None and matrix.ndim == 2 and matrix.shape[1] == 1:
        matrix = matrix[:, 0]
    if matrix is not None and matrix.ndim == 1:
        matrix = np.column_stack((1.0 - matrix, matrix))
    if (
        matrix is None
        or matrix.ndim != 2
        or matrix.shape != (rows, 2)
        or not bool(np.all((matrix >= 0.0) & (matrix <= 1.0)))
    ):
        shape = getattr(values, "shape", None)
        dtype = getattr(values, "dtype", type(values).__name__)
        raise ValueError(
            f"the python_function model answered {dtype} of shape {shape} for {rows} rows, "
            "not probabilities: serving needs predict to return, for each row, two class "
            "probabilities or one positive-class probability, all within [0, 1]"
        )
    return matrix
