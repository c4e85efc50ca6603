"""What serves a model on Azure ML: modelferry's scoring script, its code folder and image.

Azure ML's no-code MLflow deployment answers predicted labels; modelferry's scoring script
(`modelferry.serving.azureml_score`) answers class probabilities, as the local endpoints do.
So by default a deployment runs that script, from a code folder written from the installed
module, in an environment that pins the model libraries to the versions installed here:
a model then loads and scores on Azure ML as it did where it was trained.

Both are deterministic: the same installed versions give the same folder (the same code
asset) and the same environment (the same image, built once by Azure ML).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.errors import InvalidEndpointSpecError

if TYPE_CHECKING:
    from azure.ai.ml.entities import Environment

#: File name of modelferry's scoring script (`azureml_score.py`) inside the code folder.
SCORING_SCRIPT = "score.py"
#: Microsoft's inference server, which runs `init()` / `run()` of the scoring script.
INFERENCE_SERVER = "azureml-inference-server-http==1.5.1"
#: Pinned to the installed versions: the model must load and score as it did here.
MODEL_PACKAGES = ("lightgbm", "scikit-learn", "skops", "mlflow-skinny", "pandas", "numpy")
#: Azure ML's Ubuntu base image for custom environments; conda installs the rest.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"

_SCRIPT_PACKAGE = "modelferry.serving"
_SCRIPT_MODULE_FILE = "azureml_score.py"


def scoring_requirements() -> list[str]:
    """The pip requirements of the scoring environment: the server and pinned model libraries.

    Raises:
        InvalidEndpointSpecError: a model library is not installed here, so no version to pin.
    """
    pins = []
    for name in MODEL_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise InvalidEndpointSpecError(
                f"{name} is not installed, so the Azure ML scoring environment cannot pin it; "
                "install modelferry with its dependencies, or pass environment=..."
            ) from None
    return [INFERENCE_SERVER, *pins]


def conda_spec() -> dict[str, Any]:
    """The conda file of the scoring environment: this Python's minor version, then pip pins."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "name": "modelferry-scoring",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": scoring_requirements()}],
    }


def scoring_environment() -> Environment:
    """An (anonymous) Azure ML environment: `BASE_IMAGE` plus `conda_spec()`.

    Azure ML names it by a hash of its content, so an unchanged spec reuses the built image.
    """
    with azure_sdk():
        from azure.ai.ml.entities import Environment

    return Environment(
        image=BASE_IMAGE,
        conda_file=conda_spec(),
        description="modelferry scoring: azureml-inference-server-http and pinned model libraries",
    )


def environment_label(environment: str | Environment) -> str:
    """What identifies an environment in a deployment's tags: a reference, or name:version."""
    if isinstance(environment, str):
        return environment
    return f"{environment.name}:{environment.version}"


def write_code_folder(into: Path) -> Path:
    """Write the code folder: modelferry's scoring script, as installed, as `score.py`, alone.

    Class names are not here: they belong to a model, and the script reads them from
    `class_names.json` beside the model's `MLmodel` (see `assets.download_model`).
    """
    into.mkdir(parents=True, exist_ok=True)
    script = files(_SCRIPT_PACKAGE).joinpath(_SCRIPT_MODULE_FILE)
    (into / SCORING_SCRIPT).write_bytes(script.read_bytes())
    return into


def folder_digest(folder: Path) -> str:
    """A SHA-256 over the relative paths and bytes of the files below `folder`, in order.

    Byte-code caches are left out: they come and go without changing the code.
    """
    digest = hashlib.sha256()
    found = (p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(found):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


#: The API documents beside the scoring script, which Azure ML's inference server serves
#: at `/swagger.json` (Swagger 2.0) and `/swagger.json?version=3` (OpenAPI 3.0).
API_DOCUMENTS = ("swagger2.json", "swagger3.json")


def write_api_documents(code_folder: Path, model_dir: Path, title: str, version: str) -> bool:
    """Describe the deployment's scoring API beside its script, from the model's signature.

    The documents are those a local endpoint serves for the same model. Returns False,
    writing nothing, for a model whose signature does not name its input columns.
    """
    from modelferry.serving.azureml_score import find_model_folder
    from modelferry.serving.openapi import openapi3, swagger2
    from modelferry.serving.schema import FeatureSpec

    folder = find_model_folder(model_dir)
    meta = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    signature = meta.get("signature") or {}
    inputs = json.loads(signature["inputs"]) if signature.get("inputs") else []
    if not inputs or not all(isinstance(s, dict) and "name" in s for s in inputs):
        return False
    features = [
        FeatureSpec(str(s["name"]), str(s.get("type", "double")), bool(s.get("required", True)))
        for s in inputs
    ]
    names_file = folder / "class_names.json"
    classes = json.loads(names_file.read_text()) if names_file.is_file() else ["0", "1"]
    for name, build in zip(API_DOCUMENTS, (swagger2, openapi3), strict=True):
        document = build(title, version, features, [str(c) for c in classes])
        (code_folder / name).write_text(json.dumps(document, indent=1), encoding="utf-8")
    return True
