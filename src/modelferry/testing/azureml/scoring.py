"""Parts of `FakeMLClient`: pollers, refusals, and scoring with the real MLflow model."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from modelferry.endpoints.azureml.sdk import azure_sdk

with azure_sdk("FakeMLClient"):
    from azure.core.exceptions import HttpResponseError

_T = TypeVar("_T")

#: Scores one request with the model files in a folder; returns the JSON-able answer.
Scorer = Callable[[Path, Mapping[str, Any]], Any]

# A stalled poller sleeps at most this long per wait, so tests never hang on it.
_MAX_STALL_S = 0.05


@dataclass
class FakeRequest:
    """One scoring request the fake answered."""

    endpoint: str
    deployment: str
    payload: Any
    mirrored_to: list[str] = field(default_factory=list)


class FakePoller(Generic[_T]):
    """A finished (or failed, or stalled) long-running operation, like `LROPoller`."""

    def __init__(
        self, value: _T, error: BaseException | None = None, *, stalled: bool = False
    ) -> None:
        """Done with `value`, or failed with `error`, or never finishing when `stalled`."""
        self._value = value
        self._error = error
        self._stalled = stalled

    def result(self, timeout: float | None = None) -> _T:
        """The operation's result; raises its error if it failed."""
        self.wait(timeout)
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        """Return when done (at once) or after `timeout` when stalled; raise a failure."""
        if self._stalled:
            time.sleep(min(timeout or 0.0, _MAX_STALL_S))
            return
        if self._error is not None:
            raise self._error

    def done(self) -> bool:
        """False only while stalled."""
        return not self._stalled

    def status(self) -> str:
        """The operation's status: "InProgress", "Failed" or "Succeeded", as Azure's say."""
        if self._stalled:
            return "InProgress"
        return "Failed" if self._error is not None else "Succeeded"


def refused(message: str, status: int = 400) -> HttpResponseError:
    """An `HttpResponseError` as the service answers a request it refuses."""
    error = HttpResponseError(message=f"({status}) {message}")
    error.status_code = status
    return error


def remote_only(local: bool | None) -> None:
    """Refuse `local=True`: local (Docker) endpoints are not emulated."""
    if local:
        raise NotImplementedError("FakeMLClient does not emulate local (Docker) endpoints")


def score_probabilities(model_dir: Path, payload: Mapping[str, Any]) -> Any:
    """Class probabilities for an `input_data` request, the way modelferry's scoring answers.

    The model is loaded by its native flavor (LightGBM or scikit-learn) from the MLflow
    model folder, and its `predict_proba` scores the rows.

    Raises:
        ValueError: the request is not in Azure ML's `input_data` format.
    """
    frame = _frame(payload)
    model = _load(model_dir)
    return {"predictions": model.predict_proba(frame).tolist()}


def score_labels(model_dir: Path, payload: Mapping[str, Any]) -> Any:
    """Predicted labels, `[0, 1, ...]`, as Azure ML's no-code MLflow server answers.

    Raises:
        ValueError: the request is not in Azure ML's `input_data` format.
    """
    return _load(model_dir).predict(_frame(payload)).tolist()


def score_with_script(script: Path, model_dir: Path, payload: Mapping[str, Any]) -> Any:
    """Answer as an Azure ML scoring script does: `init()` once, then `run(body)`.

    The script is loaded from its file (as the inference server loads it) with
    `AZUREML_MODEL_DIR` set to `model_dir` while `init()` runs.

    Raises:
        ValueError: `run()` refused the request (modelferry's script raises `BadRequest`
            when the inference server's response class is not importable, as here).
    """
    return _scoring_module(script, model_dir).run(json.dumps(payload))


@functools.lru_cache(maxsize=8)
def _scoring_module(script: Path, model_dir: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"fake_scoring_{abs(hash(script))}", script)
    if spec is None or spec.loader is None:
        raise ValueError(f"{script} is not a Python file")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = os.environ.get("AZUREML_MODEL_DIR")
    os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
    try:
        module.init()
    finally:
        if before is None:
            del os.environ["AZUREML_MODEL_DIR"]
        else:
            os.environ["AZUREML_MODEL_DIR"] = before
    return module


def _frame(payload: Mapping[str, Any]) -> Any:
    import pandas as pd

    data = payload.get("input_data")
    if isinstance(data, list):
        return pd.DataFrame(data)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError("expected {'input_data': {'columns': [...], 'data': [[...], ...]}}")
    return pd.DataFrame(data["data"], columns=data.get("columns"), index=data.get("index"))


# Registered model files never change, so a few loaded models are kept by folder.
@functools.lru_cache(maxsize=8)
def _load(model_dir: Path) -> Any:
    import mlflow
    from mlflow.models import Model

    flavors = Model.load(str(model_dir / "MLmodel")).flavors
    if "lightgbm" in flavors:
        return mlflow.lightgbm.load_model(str(model_dir))
    if "sklearn" in flavors:
        return mlflow.sklearn.load_model(str(model_dir))
    raise ValueError(f"{model_dir} holds neither a LightGBM nor a scikit-learn model")
