"""Registered MLflow versions as Azure ML models: resolve, download, register once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelferry.endpoints.azureml.entities import TAG_SOURCE, azure_model_name, build_model
from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.endpoints.spec import ModelRef
from modelferry.errors import InvalidEndpointSpecError, RegistryError
from modelferry.registry import (
    CLASS_NAMES_TAG,
    ModelRegistry,
    RegisteredVersion,
    tracking_errors,
)

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

#: Beside `MLmodel`: the class names, in the order of the predicted probabilities.
CLASS_NAMES_FILE = "class_names.json"


def resolve_version(registry: ModelRegistry, ref: ModelRef) -> RegisteredVersion:
    """The registered version `ref` names; an alias is resolved now, once.

    Raises:
        InvalidEndpointSpecError: no such version, or the alias points nowhere.
        TrackingUnavailableError: MLflow did not answer (worth a retry).
    """
    if ref.alias is not None:
        found = registry.get_by_alias(ref.name, ref.alias)
        if found is None:
            raise InvalidEndpointSpecError(
                f"{ref.uri} does not exist; set the alias or deploy a version by number"
            )
        return found
    try:
        return registry.get(ref.name, str(ref.version))
    except RegistryError as exc:
        raise InvalidEndpointSpecError(f"{ref.uri} cannot be deployed: {exc}") from exc


def download_model(registry: ModelRegistry, version: RegisteredVersion, into: Path) -> Path:
    """Download the MLflow model files of `version` (the folder holding `MLmodel`).

    The version's class names (tag `modelferry.class_names`) are written beside `MLmodel`
    as `class_names.json`, where modelferry's scoring script reads them, so that Azure ML
    answers name the classes as the local endpoints do.
    """
    import mlflow

    with tracking_errors(registry.settings, f"downloading {version.uri}"):
        registry.settings.activate()
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=str(into))
        )
    names = version.tags.get(CLASS_NAMES_TAG)
    if names and not (local / CLASS_NAMES_FILE).exists():
        (local / CLASS_NAMES_FILE).write_text(json.dumps([str(n) for n in json.loads(names)]))
    return local


def register_model(ml_client: MLClient, version: RegisteredVersion, model_dir: Path) -> str:
    """Register `version` as an Azure ML `mlflow_model` unless it already is; its asset id.

    Azure ML model versions are immutable, so an existing one is reused; one registered
    from a different MLflow source is refused rather than silently served.

    Raises:
        InvalidEndpointSpecError: the Azure ML name and version hold another model.
    """
    with azure_sdk():
        from azure.core.exceptions import ResourceNotFoundError

    name = azure_model_name(version.name)
    try:
        model = ml_client.models.get(name=name, version=version.version)
    except ResourceNotFoundError:
        model = ml_client.models.create_or_update(build_model(version, model_dir))
    else:
        source = (model.tags or {}).get(TAG_SOURCE)
        if source is not None and source != version.source:
            raise InvalidEndpointSpecError(
                f"Azure ML model {name}:{version.version} was registered from {source}, not "
                f"from {version.source}; archive it or use another model name"
            )
    return model.id or f"azureml:{model.name}:{model.version}"


def smoke_request(model_dir: Path) -> dict[str, Any] | None:
    """A scoring request in Azure ML's `input_data` format from the model's input example.

    None when the model was logged without an example (then no smoke request is sent).
    """
    example = model_dir / "serving_input_example.json"
    if not example.is_file():
        return None
    split = json.loads(example.read_text()).get("dataframe_split")
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        return None
    rows = split["data"]
    return {
        "input_data": {
            "columns": split.get("columns"),
            "index": list(range(len(rows))),
            "data": rows,
        }
    }
