"""The Azure ML scoring script under Microsoft's inference server, in a venv of its own.

The script is copied alone into a code folder as `score.py` (as `AzureMLEndpointBackend`
uploads it), served by `azmlinfsrv` from a venv without modelferry (see
`inference_server_env`), and must answer as modelferry's own serving model does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from openapi_spec_validator import validate

from modelferry.endpoints.azureml.scoring import write_api_documents, write_code_folder
from modelferry.registry import CLASS_NAMES_TAG, ModelRegistry
from modelferry.serving import azureml_score
from modelferry.serving.model import ServingModel, load_serving_model
from modelferry.serving.openapi import openapi3
from tests.integration.inference_server_env import (
    VenvBuildError,
    ensure_venv,
    inference_server,
)
from tests.model_fixtures import MODEL_NAME, register_versions, score_payload

# The first test also builds the venv when it is not cached yet (one to two minutes).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@dataclass(frozen=True)
class Deployed:
    """A model as Azure ML would mount it, and modelferry's own view of the same version."""

    model_dir: Path
    reference: ServingModel


@pytest.fixture(scope="module")
def venv() -> Path:
    try:
        return ensure_venv()
    except VenvBuildError as exc:
        pytest.fail(f"could not build the inference server venv:\n{exc}", pytrace=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    home = tmp_path_factory.mktemp("azureml-score")
    settings = register_versions(home, count=1)
    registry = ModelRegistry(settings)
    version = registry.get(MODEL_NAME, "1")
    # Azure ML mounts the registered model one folder down in AZUREML_MODEL_DIR.
    model_dir = home / "azureml-model"
    folder = model_dir / MODEL_NAME
    folder.mkdir(parents=True)
    settings.activate()
    mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=str(folder))
    (folder / "class_names.json").write_text(version.tags[CLASS_NAMES_TAG])
    return Deployed(model_dir, load_serving_model(registry, version))


@pytest.fixture(scope="module")
def server(
    venv: Path, deployed: Deployed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # The code folder a deployment gets: the script alone (no modelferry module beside
    # it) and the API documents of the model.
    code = write_code_folder(tmp_path_factory.mktemp("code"))
    assert write_api_documents(code, deployed.model_dir, "ep/blue: bc-endpoint v1", "1")
    try:
        with inference_server(venv, code / "score.py", deployed.model_dir, code / "log") as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_the_inference_server_serves_the_models_api_documents(
    server: str, deployed: Deployed
) -> None:
    two = httpx.get(f"{server}/swagger.json", timeout=30)
    three = httpx.get(f"{server}/swagger.json", params={"version": "3"}, timeout=30)

    assert two.status_code == 200, two.text
    assert three.status_code == 200, three.text
    validate(two.json())
    validate(three.json())
    assert two.json()["swagger"] == "2.0"
    # The same document a local endpoint serves for this model.
    reference = deployed.reference
    assert three.json() == openapi3(
        "ep/blue: bc-endpoint v1", "1", reference.features, reference.class_names
    )


def score(url: str, body: dict[str, Any] | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{url}/score", content=content, headers=headers, timeout=30)


def payload_parts() -> tuple[list[str], list[list[float]]]:
    table = score_payload()["input_data"]
    return table["columns"], table["data"]


def expected(deployed: Deployed, rows: list[list[float]]) -> np.ndarray:
    return deployed.reference.predict_proba(np.asarray(rows, dtype=np.float64))


def test_azure_input_data_scores_like_modelferry(server: str, deployed: Deployed) -> None:
    response = score(server, score_payload())

    assert response.status_code == 200, response.text
    body = response.json()
    predictions = np.asarray(body["predictions"])
    assert predictions.shape == (3, 2)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0)
    np.testing.assert_allclose(predictions, expected(deployed, payload_parts()[1]), rtol=1e-12)
    assert body["classes"] == list(deployed.reference.class_names)


def _shapes() -> dict[str, dict[str, Any]]:
    columns, rows = payload_parts()
    order = list(reversed(range(len(columns))))
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": rows}},
        "input_data rows": {"input_data": rows},
        "dataframe_records": {
            "dataframe_records": [dict(zip(columns, r, strict=True)) for r in rows]
        },
        "inputs columns": {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(columns)}},
        "reordered columns": {
            "input_data": {
                "columns": [columns[i] for i in order],
                "data": [[r[i] for i in order] for r in rows],
            }
        },
    }


@pytest.mark.parametrize("shape", list(_shapes()))
def test_other_request_shapes_score_the_same(server: str, deployed: Deployed, shape: str) -> None:
    response = score(server, _shapes()[shape])

    assert response.status_code == 200, response.text
    predictions = np.asarray(response.json()["predictions"])
    np.testing.assert_allclose(predictions, expected(deployed, payload_parts()[1]), rtol=1e-12)


def _bad_requests() -> dict[str, tuple[dict[str, Any] | str, str]]:
    columns, rows = payload_parts()
    with_cell = [[value, *rows[0][1:]] for value in ("12.5", None)]
    return {
        "missing column": (
            {"input_data": {"columns": columns[1:], "data": [r[1:] for r in rows]}},
            "'mean radius'",
        ),
        "extra column": (
            {"input_data": {"columns": [*columns, "colour"], "data": [[*r, 1.0] for r in rows]}},
            "'colour'",
        ),
        "string value": (
            {"input_data": {"columns": columns, "data": [with_cell[0]]}},
            "column 'mean radius' must be numeric",
        ),
        "null value": (
            {"input_data": {"columns": columns, "data": [with_cell[1]]}},
            "column 'mean radius' needs a value",
        ),
        "short row": ({"input_data": [rows[0][:5]]}, "row 0 has 5 values"),
        "unknown shape": ({"instances": rows}, "input_data"),
        "not JSON": ("{rows", "not valid JSON"),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_is_a_400_naming_the_fault(server: str, case: str) -> None:
    body, fault = _bad_requests()[case]

    response = score(server, body)

    assert response.status_code == 400, response.text
    assert fault in response.json()["error"]


def test_without_the_inference_server_bad_input_raises_value_error(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, where azureml is not installed: the module imports, scores, and refuses.
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(deployed.model_dir))
    azureml_score.init()

    good = azureml_score.run(json.dumps(score_payload()))
    np.testing.assert_allclose(good["predictions"], expected(deployed, payload_parts()[1]))
    columns, rows = payload_parts()
    bad = {"input_data": {"columns": columns, "data": [["x", *rows[0][1:]]]}}
    with pytest.raises(ValueError, match="column 'mean radius' must be numeric"):
        azureml_score.run(json.dumps(bad))
