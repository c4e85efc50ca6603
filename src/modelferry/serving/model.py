"""A registered model made ready to score: its input schema, class names and fast predictor."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelferry.registry import CLASS_NAMES_TAG, ModelRegistry, RegisteredVersion
from modelferry.registry.versions import native_flavor
from modelferry.serving.compiled import (
    CompilationUnavailable,
    both_classes,
    compile_booster,
    last_iteration,
)
from modelferry.serving.pyfunc import PYFUNC_FLAVOR, PyfuncPredictor
from modelferry.serving.schema import FeatureSpec, InputSchema
from modelferry.settings import load_settings

logger = logging.getLogger(__name__)

DEFAULT_COMPILED_MODELS = Path(".modelferry") / "cache" / "compiled-models"

# Below this many rows, extra LightGBM threads cost more to start than they save.
_SINGLE_THREAD_ROWS = 256

_NUMERIC_TYPES = {"double", "float", "long", "integer", "boolean"}

# Served arrays are already in training column order, so scikit-learn's warning that they
# carry no column names is noise. Filtered once for the process: `catch_warnings` inside
# `predict_proba` would not be thread-safe when batches score in parallel.
warnings.filterwarnings(
    "ignore", message="X does not have valid feature names", category=UserWarning
)


class Predictor(Protocol):
    """Anything that maps a float64 feature matrix to class probabilities."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities, shape (rows, classes)."""
        ...


@runtime_checkable
class ColumnPredictor(Protocol):
    """A predictor that also scores feature columns as they are, without a matrix."""

    def predict_proba_columns(
        self, columns: Sequence[np.ndarray], *, threads: int | None = None
    ) -> np.ndarray:
        """Probabilities, shape (rows, classes), of one float64 array per feature."""
        ...


class BoosterPredictor:
    """LightGBM's native Booster on arrays: no DataFrame, no sklearn wrapper.

    One-row requests, the common online case, go through LightGBM's single-row "fast"
    C API, set up once per model: `Booster.predict` would rebuild its predictor on every
    call, which costs ten times the tree walk itself.
    """

    def __init__(self, booster: Any) -> None:
        """Wrap a trained `lightgbm.Booster` of a binary objective."""
        self._booster = booster
        self._iterations = last_iteration(booster)
        self._single_row = _single_row_predictor(booster, self._iterations)

    @property
    def booster(self) -> Any:
        """The wrapped `lightgbm.Booster`."""
        return self._booster

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of class 0 and class 1 for each row."""
        rows = features.shape[0]
        if rows == 1 and self._single_row is not None:
            positive = self._single_row(features)
        else:
            threads = 1 if rows < _SINGLE_THREAD_ROWS else 0
            positive = self._booster.predict(
                features, num_iteration=self._iterations, num_threads=threads
            )
        return both_classes(positive)


class EstimatorPredictor:
    """A scikit-learn estimator's `predict_proba`, fed arrays in signature order."""

    def __init__(self, estimator: Any) -> None:
        """Wrap a fitted estimator that has `predict_proba`."""
        self._estimator = estimator

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for each class, for each row."""
        return np.asarray(self._estimator.predict_proba(features), dtype=np.float64)


@dataclass(frozen=True)
class ServingModel:
    """A model version ready to score requests."""

    name: str
    version: str
    features: tuple[FeatureSpec, ...]
    class_names: tuple[str, ...]
    predictor: Predictor

    @cached_property
    def schema(self) -> InputSchema:
        """The input checks for requests, worked out once per model."""
        return InputSchema(self.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Input column names in the order the predictor expects."""
        return tuple(f.name for f in self.features)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for a float64 matrix whose columns follow `features`."""
        return self.predictor.predict_proba(features)

    def predict_proba_columns(
        self, columns: Sequence[np.ndarray], *, threads: int | None = None
    ) -> np.ndarray:
        """Class probabilities for one float64 array per feature, in `features` order.

        Batches arrive column by column; a predictor that reads columns is given them as
        they are, and at most `threads` threads (default: its own choice); any other gets
        them as one matrix.
        """
        if isinstance(self.predictor, ColumnPredictor):
            return self.predictor.predict_proba_columns(columns, threads=threads)
        return self.predictor.predict_proba(np.column_stack(columns))


def load_serving_model(registry: ModelRegistry, version: RegisteredVersion) -> ServingModel:
    """Load a registered version with its input schema, by the fastest path it allows.

    The flavors come from the version's `MLmodel` file. LightGBM (a Booster, or the
    sklearn API's `booster_`) and scikit-learn estimators with `predict_proba` score
    natively; any other model with a `python_function` flavor scores through
    `mlflow.pyfunc`, slower, with a warning saying so.

    Raises:
        ValueError: the inputs cannot be worked out, the model has no flavor that can
            be served, or a native estimator has no `predict_proba`.
    """
    from mlflow.models import get_model_info

    registry.settings.activate()
    info = get_model_info(version.uri)
    flavors = dict(info.flavors or {})
    predictor: Predictor
    if native_flavor(flavors) is not None:
        estimator = registry.load_classifier(version)
        features = _features_from_signature(info.signature, estimator)
        predictor = _native_predictor(version, estimator)
    elif PYFUNC_FLAVOR in flavors:
        logger.warning(
            "%s has flavors %s: no native fast path (lightgbm or sklearn), so it scores "
            "through mlflow.pyfunc, slower",
            version.uri,
            ", ".join(sorted(flavors)),
        )
        pyfunc = registry.load_pyfunc(version)
        features = _features_from_signature(info.signature, None)
        predictor = PyfuncPredictor(pyfunc, tuple(f.name for f in features))
    else:
        raise ValueError(
            f"{version.uri} has flavors {', '.join(sorted(flavors)) or 'none'}; serving "
            "needs lightgbm, sklearn or python_function. Log the model with "
            "mlflow.lightgbm, mlflow.sklearn or mlflow.pyfunc."
        )
    names = version.tags.get(CLASS_NAMES_TAG)
    class_names = tuple(json.loads(names)) if names else ("0", "1")
    return ServingModel(version.name, version.version, features, class_names, predictor)


def _native_predictor(version: RegisteredVersion, estimator: Any) -> Predictor:
    booster = getattr(estimator, "booster_", None)
    if booster is None and _is_booster(estimator):
        booster = estimator
    if booster is not None:
        return BoosterPredictor(booster)
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(
            f"{version.uri} is a {type(estimator).__name__} without predict_proba; serving "
            "needs a classifier that gives class probabilities"
        )
    return EstimatorPredictor(estimator)


def _is_booster(estimator: Any) -> bool:
    try:
        import lightgbm
    except ImportError:  # then it cannot be a Booster
        return False
    return isinstance(estimator, lightgbm.Booster)


def with_compiled_trees(model: ServingModel, cache_dir: Path | None = None) -> ServingModel:
    """`model` scoring through its trees compiled to native code, for large batches.

    Only LightGBM boosters are compiled. Where compilation is unavailable or the compiled
    code disagrees with LightGBM on probe rows, `model` is returned unchanged and a
    warning says why: slower, never wrong.

    Args:
        model: a loaded model.
        cache_dir: where compiled models are kept; default ``MODELFERRY_COMPILED_MODELS``,
            else ``.modelferry/cache/compiled-models``. Its files are loaded as machine
            code: only the account that runs the flows may write to it, as to its
            virtual environment.
    """
    if not isinstance(model.predictor, BoosterPredictor):
        return model
    folder = cache_dir or load_settings().compiled_models or DEFAULT_COMPILED_MODELS
    try:
        predictor = compile_booster(model.predictor.booster, folder)
    except CompilationUnavailable as exc:
        logger.warning(
            "Scoring %s v%s with LightGBM's own predictor: %s", model.name, model.version, exc
        )
        return model
    logger.info("Scoring %s v%s with its trees compiled to native code", model.name, model.version)
    return replace(model, predictor=predictor)


def _features_from_signature(signature: Any, estimator: Any) -> tuple[FeatureSpec, ...]:
    inputs = getattr(signature, "inputs", None)
    if inputs is not None and inputs.has_input_names():
        specs = []
        for column in inputs.inputs:
            type_name = getattr(column.type, "name", str(column.type))
            if type_name not in _NUMERIC_TYPES:
                raise ValueError(
                    f"column {column.name!r} has type {type_name}; only numeric inputs "
                    "can be served"
                )
            specs.append(FeatureSpec(column.name, type_name, bool(column.required)))
        return tuple(specs)
    names = getattr(estimator, "feature_names_in_", None)
    if names is None and _is_booster(estimator):
        names = estimator.feature_name()
    if names is None:
        raise ValueError("the model has neither a signature nor feature names to check inputs")
    return tuple(FeatureSpec(str(name), "double") for name in names)


def example_request(version: RegisteredVersion, settings: Any) -> dict[str, Any]:
    """An Azure ML style request built from the input example logged with the model.

    Args:
        version: the registered version.
        settings: its `TrackingSettings`, so the artifacts come from the right store.
    """
    import mlflow.artifacts
    from mlflow.models import Model

    settings.activate()
    path = mlflow.artifacts.download_artifacts(version.uri)
    example: Any = Model.load(path).load_input_example(path)
    if example is None or not hasattr(example, "columns"):
        raise ValueError(f"{version.uri} was logged without a tabular input example")
    return {
        "input_data": {
            "columns": [str(c) for c in example.columns],
            "index": list(range(len(example))),
            "data": example.to_numpy().tolist(),
        }
    }


def _single_row_predictor(booster: Any, iterations: int) -> Any:
    """LightGBM's FastConfig single-row predictor, or None where it is unavailable.

    It uses `lightgbm.basic` internals (the loaded C library), so anything unexpected
    falls back to `Booster.predict`: slower, never wrong. The handle is not thread-safe,
    hence the lock.
    """
    import ctypes
    import threading
    import weakref

    try:
        from lightgbm.basic import _LIB, _c_str, _safe_call  # type: ignore[attr-defined]

        handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: probabilities
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(iterations),
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(booster.num_feature()),
                _c_str("num_threads=1"),
                ctypes.byref(handle),
            )
        )
    except Exception:  # an unknown LightGBM build: use the public API instead
        return None
    out = np.empty(1, dtype=np.float64)
    out_ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    out_len = ctypes.c_int64()
    lock = threading.Lock()
    width = booster.num_feature()

    def predict(row: np.ndarray) -> np.ndarray:
        row = np.ascontiguousarray(row, dtype=np.float64)
        if row.size != width:
            raise ValueError(f"expected {width} features, got {row.size}")
        with lock:
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                    handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(out_len), out_ptr
                )
            )
            return out.copy()

    # Free the C handle with the predictor; keep the booster alive as long as it is used.
    weakref.finalize(predict, _LIB.LGBM_FastConfigFree, handle)
    predict.booster = booster  # type: ignore[attr-defined]
    return predict
