"""Azure ML scoring script: `init()` loads the MLflow model, `run()` scores one request.

It is the `scoring_script` of `AzureMLEndpointBackend(environment=..., code_path=...)`, run
by Microsoft's inference server (`azureml-inference-server-http`) in Azure ML's image, where
modelferry is not installed. So it stands alone (standard library, numpy, MLflow with
LightGBM / scikit-learn / skops) and repeats, briefly, `modelferry.serving.model` (signature
columns, LightGBM's Booster as fast path) and `modelferry.serving.payload` (request shapes,
errors naming the column). Keep them in step: tests/integration/test_azureml_scoring_script.py
checks that both give the same probabilities.

It is also the `score.py` of modelferry's edge packages, where MLflow is not installed:
then the model is loaded from `MLmodel` with skops (or pickle) directly, needing only
numpy, PyYAML, skops and scikit-learn / LightGBM.

`AZUREML_MODEL_DIR` holds the MLflow model folder (with `MLmodel`), directly or nested; an
optional `class_names.json` beside `MLmodel` names the classes (default `["0", "1"]`).
Requests: `input_data` (columns/data, or a list of rows), `dataframe_split`,
`dataframe_records` or `inputs`. Answers `{"predictions": [[p0, p1], ...], "classes": [...]}`,
or HTTP 400 with `{"error": "..."}` for bad input, never a 500.
"""

# No `from __future__ import annotations`: the inference server execs this file without
# registering it in sys.modules, and dataclasses then fail on string annotations.
import importlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_FORMATS = ("input_data", "dataframe_split", "dataframe_records", "inputs")
_NUMERIC_TYPES = {"double", "float", "long", "integer", "boolean"}
_FLAVORS = ("lightgbm", "sklearn")
# Below this many rows, extra LightGBM threads cost more to start than they save.
_SINGLE_THREAD_ROWS = 256

# Rows arrive in signature order already; scikit-learn's "no feature names" warning is noise.
warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)


class BadRequest(ValueError):
    """A request the model cannot take; answered with HTTP 400."""


@dataclass(frozen=True)
class Column:
    """One input column of the model signature."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class LoadedModel:
    """The model with its input columns, class names and (for LightGBM) native Booster."""

    columns: tuple[Column, ...]
    class_names: tuple[str, ...]
    estimator: Any
    booster: Any | None

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes), for a float64 matrix in column order."""
        if self.booster is not None:
            threads = 1 if features.shape[0] < _SINGLE_THREAD_ROWS else 0
            positive = np.asarray(self.booster.predict(features, num_threads=threads))
            return np.column_stack((1.0 - positive, positive))
        return np.asarray(self.estimator.predict_proba(features), dtype=np.float64)


_model: LoadedModel | None = None


def init() -> None:
    """Load the model under `AZUREML_MODEL_DIR` once per worker (called by the server)."""
    global _model
    _model = load_model(Path(os.environ.get("AZUREML_MODEL_DIR", ".")))


def run(raw_data: str | bytes) -> Any:
    """Score one request body; the response dict, or a 400 `AMLResponse` for bad input."""
    if _model is None:
        raise RuntimeError("init() has not loaded the model")
    try:
        features = parse_request(raw_data, _model.columns)
    except BadRequest as exc:
        return _bad_request(str(exc))
    probabilities = _model.predict_proba(features)
    return {"predictions": probabilities.tolist(), "classes": list(_model.class_names)}


def load_model(model_dir: Path) -> LoadedModel:
    """Find the MLflow model below `model_dir` and load it by its native flavor.

    Without MLflow installed (edge devices install only the model's own libraries), the
    model is loaded from `MLmodel` the way MLflow's loader would: see `_load_without_mlflow`.
    """
    folder = find_model_folder(model_dir)
    try:
        from mlflow.models import Model
    except ImportError:
        estimator, specs = _load_without_mlflow(folder)
    else:
        meta = Model.load(str(folder))
        flavor = next((f for f in _FLAVORS if f in meta.flavors), None)
        if flavor is None:
            raise ValueError(f"{folder} holds neither a lightgbm nor a sklearn MLflow model")
        estimator = importlib.import_module(f"mlflow.{flavor}").load_model(str(folder))
        specs = _signature_specs(meta.signature)
    # A LightGBM model logged from the native API loads as a Booster: it scores as one.
    booster = estimator if _is_booster(estimator) else getattr(estimator, "booster_", None)
    if booster is None and not hasattr(estimator, "predict_proba"):
        raise ValueError(f"{type(estimator).__name__} has no predict_proba; cannot score")
    names_file = folder / "class_names.json"
    names = json.loads(names_file.read_text()) if names_file.is_file() else ["0", "1"]
    return LoadedModel(_columns(specs, estimator), tuple(str(n) for n in names), estimator, booster)


def _load_without_mlflow(folder: Path) -> tuple[Any, list[tuple[str, str, bool]] | None]:
    """The estimator and signature columns, read as MLflow's lightgbm/sklearn loaders do.

    `MLmodel` names the model file (`data` for lightgbm, `pickled_model` for sklearn) and
    its `serialization_format`: `skops` (MLflow 3.17's default), `cloudpickle` or `pickle`.
    A skops file is loaded trusting the types `MLmodel` lists, as MLflow does.
    """
    import yaml

    meta = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    flavors = meta.get("flavors") or {}
    flavor = next((f for f in _FLAVORS if f in flavors), None)
    if flavor is None:
        raise ValueError(f"{folder} holds neither a lightgbm nor a sklearn MLflow model")
    conf = flavors[flavor]
    if flavor == "lightgbm":
        path = folder / conf["data"]
        if conf.get("model_class", "lightgbm.basic.Booster") == "lightgbm.basic.Booster":
            import lightgbm

            return lightgbm.Booster(model_file=str(path)), None
        default_format = "cloudpickle"
    else:
        path = folder / conf["pickled_model"]
        default_format = "pickle"
    serialization = conf.get("serialization_format", default_format)
    if serialization == "skops":
        import skops.io

        estimator = skops.io.load(path, trusted=conf.get("skops_trusted_types"))
    elif serialization in ("cloudpickle", "pickle"):
        # The trust MLflow's own loader places in a pickled model: only load verified models.
        loader = importlib.import_module(serialization)
        with open(path, "rb") as file:
            estimator = loader.load(file)
    else:
        raise ValueError(f"{folder}: unknown serialization format {serialization!r}")
    signature = meta.get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
    if not inputs or not all(isinstance(s, dict) and "name" in s for s in inputs):
        return estimator, None  # no signature, or unnamed tensors: feature names decide
    specs = [(str(s["name"]), str(s.get("type")), bool(s.get("required", True))) for s in inputs]
    return estimator, specs


def find_model_folder(model_dir: Path) -> Path:
    """The folder holding `MLmodel`: `model_dir` itself or the shallowest one below it."""
    found = sorted(model_dir.rglob("MLmodel"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise FileNotFoundError(f"no MLflow model (MLmodel file) under {model_dir}")
    return found[0].parent


def _signature_specs(signature: Any) -> list[tuple[str, str, bool]] | None:
    """(name, type, required) of each input column of an MLflow signature, if named."""
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return None
    return [
        (spec.name, str(getattr(spec.type, "name", spec.type)), bool(spec.required))
        for spec in inputs.inputs
    ]


def _columns(specs: list[tuple[str, str, bool]] | None, estimator: Any) -> tuple[Column, ...]:
    if specs is not None:
        columns = []
        for name, type_name, required in specs:
            if type_name not in _NUMERIC_TYPES:
                raise ValueError(f"column {name!r} has type {type_name}; not numeric")
            columns.append(Column(name, type_name, required))
        return tuple(columns)
    names = getattr(estimator, "feature_names_in_", None)
    if names is None and _is_booster(estimator):
        names = estimator.feature_name()
    if names is None:
        raise ValueError("the model has neither a signature nor feature names to check inputs")
    return tuple(Column(str(name), "double") for name in names)


def _is_booster(estimator: Any) -> bool:
    # By class name: lightgbm is not installed beside sklearn-only models.
    return type(estimator).__module__.startswith("lightgbm") and (
        type(estimator).__name__ == "Booster"
    )


def _bad_request(message: str) -> Any:
    # Imported here so that this module also imports where the inference server is absent.
    try:
        # The inference server registers this module; it ships no type information.
        from azureml.contrib.services.aml_response import (  # type: ignore[import-not-found]
            AMLResponse,
        )
    except ImportError:
        raise BadRequest(message) from None
    return AMLResponse({"error": message}, 400, json_str=True)


def parse_request(raw_data: str | bytes, columns: Sequence[Column]) -> np.ndarray:
    """Decode and validate a request body into a float64 matrix in signature order.

    Raises:
        BadRequest: bad JSON, unknown shape, missing/extra columns, non-numeric values,
            nulls in required columns.
    """
    try:
        document = json.loads(raw_data)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    found = [key for key in _FORMATS if key in document] if isinstance(document, dict) else []
    if len(found) != 1:
        raise BadRequest(f"expected a JSON object with exactly one of {', '.join(_FORMATS)}")
    key, value = found[0], document[found[0]]
    names = [c.name for c in columns]
    if key in {"input_data", "dataframe_split"}:
        if isinstance(value, list):  # Azure ML also takes a bare list of rows
            given, rows = names, value
        elif isinstance(value, dict) and "data" in value:
            given, rows = value.get("columns", names), value["data"]
        else:
            raise BadRequest(f"'{key}' must be an object with 'columns' and 'data'")
    elif key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise BadRequest("'dataframe_records' must be a list of objects")
        given = list(value[0]) if value else names
        if any(set(record) != set(given) for record in value):
            raise BadRequest("every record must hold the same columns")
        rows = [[record[c] for c in given] for record in value]
    elif isinstance(value, dict):
        given = list(value)
        lists = all(isinstance(v, list) for v in value.values())
        if not lists or len({len(v) for v in value.values()}) > 1:
            raise BadRequest("'inputs' as an object must map each column to an equal-length list")
        rows = [list(row) for row in zip(*value.values(), strict=True)]
    else:
        given, rows = names, value
    if not isinstance(rows, list) or not isinstance(given, list):
        raise BadRequest(f"'{key}' data must be a list of rows")
    if not rows:
        raise BadRequest("the request holds no rows")
    order = _column_order(given, names)
    matrix = _to_matrix(rows, given)
    if order is not None:
        matrix = np.ascontiguousarray(matrix[:, order])
    _check_values(matrix, columns)
    return matrix


def _column_order(given: list[Any], names: list[str]) -> list[int] | None:
    if given == names:
        return None
    missing = [n for n in names if n not in given]
    extra = [str(c) for c in given if c not in names]
    if missing or extra:
        parts = [f"missing column(s) {missing[:10]}"] if missing else []
        parts += [f"unexpected column(s) {extra[:10]}"] if extra else []
        raise BadRequest("; ".join(parts) + f"; the model takes {len(names)} columns")
    if len(set(given)) != len(given):
        raise BadRequest("duplicate column names in the request")
    return [given.index(n) for n in names]


def _to_matrix(rows: list[Any], given: list[Any]) -> np.ndarray:
    try:
        matrix = np.array(rows)
    except ValueError:  # ragged rows
        matrix = np.empty(0)
    if matrix.ndim == 2 and matrix.shape[1] == len(given):
        if matrix.dtype.kind in "fiub":
            return np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.dtype.kind == "O" and _first_bad_cell(rows, given) is None:
            return np.array([[np.nan if v is None else v for v in r] for r in rows], np.float64)
    raise BadRequest(_first_bad_cell(rows, given) or "the rows are not a numeric table")


def _first_bad_cell(rows: list[Any], given: list[Any]) -> str | None:
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(given):
            size = len(row) if isinstance(row, list) else type(row).__name__
            return f"row {r} has {size} values; expected {len(given)}"
        for c, cell in enumerate(row):
            if cell is not None and not isinstance(cell, int | float):
                kind = type(cell).__name__
                return f"column {given[c]!r} must be numeric; row {r} holds {kind} {cell!r:.40}"
    return None


def _check_values(matrix: np.ndarray, columns: Sequence[Column]) -> None:
    missing = np.isnan(matrix)
    for c, column in enumerate(columns):
        if column.required and missing[:, c].any():
            row = int(np.argmax(missing[:, c]))
            raise BadRequest(f"column {column.name!r} needs a value; row {row} holds null/NaN")
        values = matrix[:, c][~missing[:, c]]
        if np.isinf(values).any():
            raise BadRequest(f"column {column.name!r} holds an infinite value")
        if column.type in {"long", "integer"} and (values != np.floor(values)).any():
            raise BadRequest(f"column {column.name!r} takes whole numbers only")
