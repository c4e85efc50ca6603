"""The package-model flow on a Prefect test server and a real MLflow store.

The package it builds must verify with the development key's public half, be recorded on
the model version (tags and a run artifact), rebuild to the same bytes, and its score.py,
run where MLflow cannot be imported, must score the manifest's input example as the
registered model does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from blocks.signing_key import PackageSigningKey
from flows.inputs import Targets
from flows.package_model import package_model
from flows.train_and_register import train_and_register
from modelferry.packaging import SigningKey, VerifyKey, unpack_package, verify_package
from modelferry.packaging.signing import DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.serving.model import load_serving_model
from modelferry.stores.local import LocalPackageStore
from tests.integration.flow_helpers import write_config
from tests.model_fixtures import MODEL_NAME, register_versions

pytestmark = pytest.mark.integration

MODEL = "breast-cancer-classifier"

# A device: `import mlflow` fails, the package's own score.py is loaded from its folder.
DEVICE = """
import importlib.util, json, sys
sys.modules["mlflow"] = None
spec = importlib.util.spec_from_file_location("score", "score.py")
score = importlib.util.module_from_spec(spec)
spec.loader.exec_module(score)
score.init()
print(json.dumps(score.run(sys.stdin.read())))
"""


def score_on_device(package_dir: Path, body: str) -> dict[str, Any]:
    env = {**os.environ, "AZUREML_MODEL_DIR": str(package_dir / "model")}
    result = subprocess.run(
        [sys.executable, "-c", DEVICE],
        input=body,
        capture_output=True,
        text=True,
        cwd=package_dir,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_package_model_builds_records_and_scores(
    prefect_harness: str, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the development key and packages go under .modelferry/
    assert train_and_register(
        str(write_config(tmp_path)), targets=Targets(tracking_uri=mlflow_uri)
    ).approved

    state = package_model(MODEL, targets=Targets(tracking_uri=mlflow_uri), return_state=True)

    assert state.is_completed(), state.message
    packaged = state.result()
    assert packaged.path == Path(".modelferry/builds/breast-cancer-classifier-1.zip")
    zip_path = tmp_path / packaged.path
    # Put in the embedded default store, from where devices download it.
    assert (packaged.store, packaged.store_key) == ("local", f"{MODEL}/1/{zip_path.name}")
    stored = LocalPackageStore(tmp_path / ".modelferry" / "packages").get(MODEL, "1")
    assert stored is not None
    assert stored.sha256 == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert packaged.sha256 == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert packaged.size == zip_path.stat().st_size
    assert (packaged.package_id, packaged.package_version) == (MODEL, "1")
    assert (packaged.model_version, packaged.flavor) == ("1", "lightgbm")
    assert packaged.sha256[:12] in str(state.message)

    # It verifies with the development key devices would be given, and says what it is.
    keys = tmp_path / ".modelferry" / "keys"
    assert (keys / DEV_PRIVATE_KEY_FILE).stat().st_mode & 0o077 == 0
    dev_key = VerifyKey.load((keys / DEV_PUBLIC_KEY_FILE).read_text())
    manifest = verify_package(zip_path, [dev_key])
    settings = TrackingSettings.resolve(mlflow_uri)
    registry = ModelRegistry(settings)
    version = registry.get(MODEL, "1")
    assert manifest.model.name == MODEL
    assert manifest.model.run_id == version.run_id
    assert manifest.dataset_digest == version.tags["dataset.digest"]
    assert manifest.class_names == ("malignant", "benign")
    assert manifest.signing_key_id == dev_key.key_id == packaged.signing_key_id
    mv = MlflowClient(settings.tracking_uri).get_model_version(MODEL, "1")
    created = np.datetime64(int(mv.creation_timestamp) // 1000, "s")
    assert manifest.created_at == f"{created}Z"

    # Recorded on the version: tags, and the zip as an artifact of its run.
    assert {k: v for k, v in version.tags.items() if k.startswith("modelferry.package.")} == {
        "modelferry.package.id": MODEL,
        "modelferry.package.version": "1",
        "modelferry.package.sha256": packaged.sha256,
        "modelferry.package.signing_key_id": dev_key.key_id,
    }
    assert packaged.artifact_path == "packages/breast-cancer-classifier-1.zip"
    client = MlflowClient(settings.tracking_uri)
    listed = [a.path for a in client.list_artifacts(version.run_id, "packages")]
    assert listed == [packaged.artifact_path]
    logged = client.download_artifacts(version.run_id, packaged.artifact_path, str(tmp_path))
    assert Path(logged).read_bytes() == zip_path.read_bytes()

    # The package's score.py, without MLflow, scores the input example like the registry model.
    unpacked = tmp_path / "device" / "current"
    unpack_package(zip_path, unpacked, [dev_key])
    assert manifest.input_example is not None
    example = json.loads((unpacked / manifest.input_example).read_text())
    answer = score_on_device(unpacked, json.dumps({"input_data": example}))
    predictions = np.asarray(answer["predictions"])
    assert predictions.shape == (len(example["data"]), 2)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0)
    assert answer["classes"] == list(manifest.class_names)
    reference = load_serving_model(registry, version)
    expected = reference.predict_proba(np.asarray(example["data"], dtype=np.float64))
    np.testing.assert_allclose(predictions, expected, rtol=1e-12)

    # Packaging the same version again gives the same bytes; another id/version, a new file.
    again = package_model(MODEL, model_version="1", targets=Targets(tracking_uri=mlflow_uri))
    assert again.sha256 == packaged.sha256
    renamed = package_model(
        MODEL,
        model_version="1",
        package_id="bc-edge",
        package_version="2026.1",
        targets=Targets(tracking_uri=mlflow_uri),
        output_dir=str(tmp_path / "out"),
    )
    assert renamed.path == tmp_path / "out" / "bc-edge-2026.1.zip"
    assert verify_package(renamed.path, [dev_key]).package_id == "bc-edge"
    tags = registry.get(MODEL, "1").tags
    assert (tags["modelferry.package.id"], tags["modelferry.package.version"]) == (
        "bc-edge",
        "2026.1",
    )
    assert tags["modelferry.package.sha256"] == renamed.sha256


def test_package_model_signs_with_a_saved_key_block(
    prefect_harness: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = register_versions(tmp_path, count=1)
    key = SigningKey.generate()
    PackageSigningKey(private_key=key.private_pem(), public_key=key.verify_key.public_base64).save(
        "edge-signing-test", overwrite=True
    )

    packaged = package_model(
        MODEL_NAME,
        model_version="1",
        targets=Targets(signing_key="edge-signing-test", tracking_uri=settings.tracking_uri),
    )

    assert packaged.signing_key_id == key.key_id
    assert verify_package(tmp_path / packaged.path, [key.verify_key]).model.name == MODEL_NAME
    assert not (tmp_path / ".modelferry" / "keys").exists()  # no development key made
    tags = ModelRegistry(settings).get(MODEL_NAME, "1").tags
    assert tags["modelferry.package.signing_key_id"] == key.key_id


def test_a_missing_alias_fails_with_what_to_do(
    prefect_harness: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = register_versions(tmp_path, count=1)  # registered, never approved

    state = package_model(
        MODEL_NAME, targets=Targets(tracking_uri=settings.tracking_uri), return_state=True
    )

    assert state.is_failed()
    assert "has no version aliased 'champion'" in str(state.message)
    assert "pass model_version" in str(state.message)
    assert not (tmp_path / ".modelferry" / "packages").exists()
